"""EXP4.P as ALBL uses it (Hsu & Lin 2015; Beygelzimer et al. 2011): pure numpy, no Ray.

The bandit's arms are the query strategies (the experts' advice is the identity,
as in the authors' libact implementation), plus a uniform sampler so that every
unlabeled sample has a non-zero query probability, which the importance-weighted
accuracy reward needs to be unbiased.

Batch adaptation (ALBL queries one sample at a time): a round's batch is filled
by `budget` draws. Each draw picks an expert from the EXP4.P distribution `p`
(fixed for the round, since no label arrives inside it) and takes that expert's
next-ranked sample not yet in the batch (the uniform sampler: a uniformly random
one). The chosen sample's query probability is q(x) = sum_k p_k xi_k(x) under
the advice at that draw. The classifier is retrained once per batch, so the
reward of the next round's classifier updates the weights once per draw of the
batch: the same number of updates (T = rounds * budget) as the sequential algorithm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def default_pmin(n_experts: int, horizon: int) -> float:
    """libact's default exploration floor sqrt(ln N / (N T)), capped at 1/N."""
    return min(1.0 / n_experts, float(np.sqrt(np.log(n_experts) / (n_experts * horizon))))


def probabilities(log_weights: np.ndarray, pmin: float) -> np.ndarray:
    """EXP4.P's arm distribution: (1 - N p_min) w / sum(w) + p_min.

    Weights are kept as logs so that many rounds of multiplicative updates
    cannot overflow; the softmax is the normalized w.
    """
    n = len(log_weights)
    if not 0.0 <= pmin <= 1.0 / n:
        raise ValueError(f"p_min must be in [0, 1/{n}], got {pmin}")
    w = np.exp(log_weights - np.max(log_weights))
    return (1.0 - n * pmin) * w / w.sum() + pmin


def iw_accuracy(correct: np.ndarray, iw: np.ndarray, n_pool: int, horizon: int) -> float:
    """IW-ACC: sum_t W_t [f(x_t) = y_t] / (n T), W_t = 1 / q_t(x_t).

    Each term's expectation over the draw is the number of samples f gets right
    in the pool it was drawn from, so the sum over t draws estimates t/T times
    f's pool accuracy without bias, from the queried samples' labels alone.
    """
    return float(np.sum(np.asarray(iw, np.float64) * np.asarray(correct, bool))
                 / (n_pool * horizon))


def update(log_weights: np.ndarray, p: np.ndarray, ratios: np.ndarray, reward: float,
           pmin: float, delta: float, horizon: int) -> np.ndarray:
    """EXP4.P's update once per draw: w_k *= exp(p_min/2 (r_hat_k + v_hat_k sqrt(ln(N/d)/(N T)))).

    `ratios` [draws, N] holds xi_k(x_t) / q_t(x_t) for the sample each draw took,
    so r_hat_k = reward * ratio; v_hat_k = 1 / p_k (identity advice, as libact).
    """
    n = len(log_weights)
    bonus = np.sqrt(np.log(n / delta) / (n * horizon)) / p
    steps = reward * np.asarray(ratios, np.float64).reshape(-1, n) + bonus
    return log_weights + pmin / 2.0 * steps.sum(axis=0)


@dataclass
class Draws:
    """A batch filled by expert draws: ids in draw order, the expert each draw
    picked, the sample's query probability q, and xi_k(x)/q per expert."""

    ids: np.ndarray  # [b] int64
    experts: np.ndarray  # [b] int64, index into the experts
    q: np.ndarray  # [b] float64
    ratios: np.ndarray  # [b, N] float64


def draw_batch(rankings: list[np.ndarray | None], pool: np.ndarray, p: np.ndarray, budget: int,
               rng: np.random.Generator) -> Draws:
    """Fill a batch of `budget` distinct ids from `pool` (sorted) by EXP4.P draws.

    rankings[k] is expert k's ids, best first; None is the uniform sampler. An
    expert whose ranking has no unpicked id left advises uniformly too, so its
    probability mass still lands somewhere and q stays the true draw probability.
    """
    pool = np.asarray(pool, np.int64)
    budget = min(int(budget), len(pool))
    n = len(rankings)
    picked = np.zeros(len(pool), bool)
    cursor = [0] * n
    out = Draws(np.empty(budget, np.int64), np.empty(budget, np.int64), np.empty(budget),
                np.zeros((budget, n)))
    for t in range(budget):
        advice = [_next_unpicked(r, cursor, k, pool, picked) for k, r in enumerate(rankings)]
        n_left = len(pool) - t
        k = int(rng.choice(n, p=p))
        advised = advice[k]
        if advised is None:
            pos = int(np.flatnonzero(~picked)[rng.integers(n_left)])
        else:
            pos = advised
        xi = np.array([1.0 / n_left if a is None else float(a == pos) for a in advice])
        q = float(p @ xi)
        picked[pos] = True
        out.ids[t], out.experts[t], out.q[t], out.ratios[t] = pool[pos], k, q, xi / q
    return out


def _next_unpicked(ranking: np.ndarray | None, cursor: list[int], k: int, pool: np.ndarray,
                   picked: np.ndarray) -> int | None:
    """Pool position of expert k's best unpicked id (advancing its cursor), or None."""
    if ranking is None:
        return None
    while cursor[k] < len(ranking):
        pos = int(np.searchsorted(pool, ranking[cursor[k]]))
        if not picked[pos]:
            return pos
        cursor[k] += 1
    return None
