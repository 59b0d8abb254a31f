"""The learning-gain reward (`autoal.reward: gain`): simulated acquisition on L.

Why: the loss-rank reward scores a candidate by how hard its picks on L were for f,
which is maximal by construction for the uncertainty candidates (they pick exactly
the rows f finds hard) and blind to redundancy: a batch of near-twins earns as much as
a varied one. What a batch is worth is what the model learns from it. That can be
measured on L, where every label is known, by replaying an acquisition:

Once per round, f_B, a model of f's architecture and recipe, is trained on a seeded half
B of L: the round in miniature. f itself cannot serve: it was trained on all of L, so its
embeddings separate L's classes almost perfectly (heads on them reach 98-100% on
held-out folds of L) and every simulated batch would look worthless. f_B has seen B as f
has seen L, and the rest of L as f has seen U: not at all.

Then, for each of `splits` seeded splits of the rows f_B never saw:
1. V, the validation slice: half of the labels among them that were drawn *at random*
   (the initial set). A candidate's picks are biased toward what it likes; rows it chose
   would judge it on its own terms, rows drawn at random judge every candidate alike.
2. The others are the pseudo-pool P. f_B's scoring pass over L gives P what a real pass
   gives U (probabilities, MC-dropout probabilities, embeddings; B is the labeled set).
3. Each candidate picks q = ceil(|B| b / |L|) rows of P (the round's budget share), and
   so does the candidates' plain vote; a head (softmax regression on f_B's frozen
   embeddings, the oracle's protocol) is fitted on B + picks.
4. Its gain: the mean probability the head gives V's true classes, minus the same for
   heads on B + q random rows of P (mean of `random_draws` draws on the same split).
   Positive = better than random.

The splits cost heads only: one cold L-BFGS fit on B per call, then per split one
batched warm-started refit of every option's and random draw's head on |B| + q rows;
f_B costs one training on |L|/2 rows, which is what the reward needs to be honest.

Pure numpy/torch, no Ray: one split is one call (`split_gains`), so a Ray Train job
can deal splits to workers and gather (`autoal/ray_job.py`).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from autoal_dist.autoal.crossfit import HeadSettings, fit_head, fit_heads, standardize
from autoal_dist.config import AutoALConfig
from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies import select, top_b

MIX = "mix"  # the candidates' even interleave, simulated like one more candidate
# Gains closer than this (mean true-class probability on V) are ties, however small their
# standard error: on a degenerate split (every option picks the whole pseudo-pool) the gains
# differ by L-BFGS rounding, and dividing by a ~0 error would crown one at random.
GAIN_RESOLUTION = 0.005
REFIT_ITERS = 30  # L-BFGS iterations of a warm-started refit (base + picks)
BASE_SHARE = 0.5  # of L, f_B's training set
MIN_VALIDATION = 2  # rows per class V is topped up to (validation: random)
MAX_PICK_SHARE = 0.5  # of the pseudo-pool, the simulated batch at most


@dataclass(frozen=True)
class GainProblem:
    """One round's simulation input (what a Ray worker needs: outputs on L, not the pool)."""

    probs: np.ndarray  # [n, C] f_B's probabilities on L
    emb: np.ndarray  # [n, D] f_B's embeddings of L
    mc_probs: np.ndarray | None  # [T, n, C] f_B's MC-dropout probabilities on L
    y: np.ndarray  # [n] labels
    base: np.ndarray  # [n] bool: f_B was trained on the row
    random_origin: np.ndarray  # [n] bool: the row's label was drawn at random
    names: tuple[str, ...]  # the candidates
    share: float  # b / |L|: the simulated pick count is this share of the base
    heads: HeadSettings
    random_draws: int
    seed: int
    validation: str = "random"  # random: V from randomly drawn labels only; all: any unseen
    with_mix: bool = False  # simulate the candidates' even interleave as one more option

    @property
    def options(self) -> tuple[str, ...]:
        """What is simulated: every candidate (then their even mix, with `with_mix`)."""
        return (*self.names, MIX) if self.with_mix else self.names

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def gains(self, units: Sequence[int]) -> np.ndarray:
        return simulate(self, units)


def base_rows(n: int, seed: int) -> np.ndarray:
    """[n] bool: the seeded share (BASE_SHARE) of L that f_B trains on (at least one row,
    never all of L when L has two rows or more)."""
    base = np.zeros(n, bool)
    k = min(max(1, int(n * BASE_SHARE)), max(1, n - 1))
    base[np.random.default_rng(seed).permutation(n)[:k]] = True
    return base


def base_min_steps(min_steps: int, base: int, labeled: int) -> int:
    """f_B's step floor: the recipe's, scaled by B's share of L (at least 1 when the
    recipe has one). Above the floor f_B takes the recipe's epochs over B, so |B|/|L| of
    f's steps; scaling the floor keeps that ratio on the small labeled sets where the floor
    decides both (digits: f 100 steps, f_B 50, where an unscaled floor made f_B cost as
    much as f, a whole round's training more)."""
    return min(min_steps, max(1, math.ceil(min_steps * base / max(labeled, 1)))) if min_steps else 0


def split_rows(p: GainProblem, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-pool, validation) row positions of one split of the rows f_B never saw.

    Validation is half of the randomly drawn ones (`validation: random`), or half of all
    of them (`all`); `random` tops V up with other unseen rows to MIN_VALIDATION rows per
    class when too few labels were drawn at random (an initial set of 10 leaves V two or
    three rows, whose verdict is noise). At least one row, and never every unseen row: the
    pseudo-pool is all the others.
    """
    rng = np.random.default_rng(seed)
    unseen = np.flatnonzero(~p.base)
    rand = rng.permutation(unseen[p.random_origin[unseen]])
    rest = rng.permutation(unseen[~p.random_origin[unseen]])
    cap = max(0, len(unseen) - 1)
    if p.validation == "all":
        order = rng.permutation(unseen)
        want = len(order) // 2
    else:
        order = np.r_[rand, rest]
        want = max(len(rand) // 2, min(MIN_VALIDATION * p.num_classes, len(unseen) // 2))
    val = np.sort(order[:min(max(1, want), cap)])
    return np.setdiff1d(unseen, val), val


def pick_count(share: float, base: int, pool: int) -> int:
    """The simulated batch: the round's share of the base, at least 1, at most
    MAX_PICK_SHARE of the pseudo-pool (a batch of the whole pseudo-pool is every option's
    batch, and would tell them apart by nothing)."""
    return max(1, min(math.ceil(pool * MAX_PICK_SHARE), math.ceil(share * base)))


def interleave(picks: Sequence[np.ndarray], weights: np.ndarray, b: int) -> np.ndarray:
    """b ids from the candidates' ranked picks, candidate m contributing about w_m b of its
    first ones (smooth weighted round robin; a row two candidates pick counts once).

    Why not the vote (z = A w, top-b): rows every uncertainty candidate picks outrank the
    rest, so a vote of similar candidates is their consensus, which on redundant pools is
    a batch of near-twins; interleaving keeps every weighted candidate's own best rows.
    Deterministic: credit ties go to the earlier candidate.
    """
    w = np.asarray(weights, np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    credit = np.zeros(len(w))
    pos = [0] * len(picks)
    chosen: list[int] = []
    seen: set[int] = set()
    while len(chosen) < b:
        for m, p in enumerate(picks):  # skip rows already taken
            while pos[m] < len(p) and int(p[pos[m]]) in seen:
                pos[m] += 1
        live = np.array([pos[m] < len(p) for m, p in enumerate(picks)])
        if not live.any():
            break
        credit[live] += w[live] / max(w[live].sum(), 1e-300)
        credit[~live] = -np.inf
        m = int(np.argmax(credit))
        chosen.append(int(picks[m][pos[m]]))
        seen.add(chosen[-1])
        credit[m] -= 1.0
        credit[~live] = 0.0
    return np.asarray(chosen, np.int64)


def base_head(p: GainProblem, e: torch.Tensor, y: torch.Tensor) -> torch.nn.Linear:
    """The head on B alone: every split's refits start from it (B is the same in every
    split, so it is fitted once per call: a worker dealt some of the splits fits the same
    head)."""
    base = np.flatnonzero(p.base)
    return fit_head(e[base], y[base], p.num_classes, p.heads)


def split_gains(p: GainProblem, split: int, e: torch.Tensor, y: torch.Tensor,
                start: torch.nn.Linear) -> np.ndarray:
    """[len(p.options)] gain over random picks of each option on split number `split`.

    Each option's head, and each random draw's, is refitted on B + its q picks from
    `start` and scored by the mean probability it gives V's true classes: bounded and
    smooth (V has tens of rows: accuracy moves in steps, cross-entropy explodes on one
    confident error). Warm-started, REFIT_ITERS L-BFGS iterations reach the optimum a cold
    start needs the full budget for; the split's heads are fitted together (`fit_heads`).
    """
    seed = int(hashed_uniform(np.array([split]), p.seed)[0] * 2**31)
    base = np.flatnonzero(p.base)
    pool, val = split_rows(p, seed)
    if len(pool) == 0 or len(val) == 0:
        return np.zeros(len(p.options))
    out = PoolOutputs(pool.astype(np.int64), p.probs[pool], p.emb[pool],
                      None if p.mc_probs is None else p.mc_probs[:, pool],
                      labeled_embeddings=p.emb[base])
    q = pick_count(p.share, len(base), len(pool))
    picked = {n: select(n, out, q, seed) for n in p.names}
    rows = [interleave(list(picked.values()), np.ones(len(p.names)), q) if name == MIX
            else picked[name] for name in p.options]
    rng = np.random.default_rng(seed + 1)
    rows += [rng.choice(pool, q, False) for _ in range(p.random_draws)]
    settings = dataclasses.replace(p.heads, iters=min(p.heads.iters, REFIT_ITERS))
    heads = fit_heads(e, y, np.stack([np.r_[base, r] for r in rows]), p.num_classes,
                      settings, start)
    score = heads.true_class_prob(e[val], y[val])
    k = len(p.options)
    return score[:k] - score[k:].mean()


def simulate(p: GainProblem, splits: Sequence[int]) -> np.ndarray:
    """[len(splits), len(p.options)]: the gains of the given splits, in order."""
    if not len(splits):
        return np.zeros((0, len(p.options)))
    e, = standardize(p.emb[p.base], p.emb)[1:]
    y = torch.from_numpy(p.y.astype(np.int64))
    start = base_head(p, e, y)
    return np.stack([split_gains(p, s, e, y, start) for s in splits])


class RewardProblem(Protocol):
    """A round's reward problem made of independent units (the simulation's splits, the
    expected error reduction's label draws): `gains(units)` is [len(units), options], one
    unit's row independent of which other units share the call, so units can be dealt to
    Ray Train workers and gathered."""

    @property
    def options(self) -> tuple[str, ...]: ...

    def gains(self, units: Sequence[int]) -> np.ndarray: ...


def evidence(problem: RewardProblem, units: Sequence[int]) -> np.ndarray:
    """[len(units), options]: the problem's gains of the given units, in order (in-process)."""
    return problem.gains(units)


Simulate = Callable[[RewardProblem, Sequence[int]], np.ndarray]


@dataclass
class GainEstimate:
    """A round's (or pooled) mean gain per option and its standard error, and the gain
    difference too small to matter (`GAIN_RESOLUTION`; in a pooled estimate, in its units)."""

    mean: np.ndarray  # [K]
    se: np.ndarray  # [K]
    resolution: float = GAIN_RESOLUTION


def estimate(gains: np.ndarray) -> GainEstimate:
    """Mean over splits (rows) and the standard error of each option's *lead*: its gain
    minus the options' mean on the same split. Every option is judged on the same splits,
    so what is common to a split (how hard its V is, its random baseline) cancels in the
    comparison and is not noise for it."""
    s = len(gains)
    lead = gains - gains.mean(1, keepdims=True)
    se = lead.std(0, ddof=1) / math.sqrt(s) if s > 1 else np.full(gains.shape[1], np.inf)
    return GainEstimate(gains.mean(0), se)


def pooled(rounds: Sequence[GainEstimate], decay: float) -> GainEstimate:
    """Rounds' estimates pooled with weights decay^(age) (the newest last), each round in
    units of its own noise (`noise_scale`): the regime drifts as L grows, so older rounds
    count less, but one round's evidence is noisy.

    Why in noise units: the gains shrink as L grows (a batch teaches a model that knows
    more a little less), so pooled as they are, an early round's gains outvote the later
    rounds' for several rounds whatever the decay. On the regime suite's long-tailed pool
    the cold round's k-means lead, ten times the later rounds' differences, took the batch
    for two rounds after margin led them. In noise units every round's lead counts by its
    decay weight and its own evidence alone; one round pools to itself (the same choice).
    """
    d = np.array([decay ** (len(rounds) - 1 - k) for k in range(len(rounds))])
    d = d / d.sum()  # the newest round's weight is decay^0 = 1: never all zero
    if d[-1] == 1.0:  # one round, or decay 0: this round alone
        return rounds[-1]
    scales = [noise_scale(r) for r in rounds]
    if not all(np.isfinite(scales)):  # a round that judged nothing: no units to pool in
        return rounds[-1]
    mean = sum(w * (r.mean - r.mean.mean()) / s for w, r, s in zip(d, rounds, scales))
    se = np.sqrt(sum(w * w * np.square(r.se / s) for w, r, s in zip(d, rounds, scales)))
    resolution = sum(w * r.resolution / s for w, r, s in zip(d, rounds, scales))
    return GainEstimate(np.asarray(mean), np.asarray(se), float(resolution))


def noise_scale(est: GainEstimate) -> float:
    """The unit gains are compared in: their mean standard error, at least the estimate's
    resolution (inf when no split could be judged)."""
    finite = est.se[np.isfinite(est.se)]
    return max(float(finite.mean()), est.resolution) if len(finite) else float("inf")


def option_weights(est: GainEstimate, temperature: float) -> np.ndarray:
    """Softmax of the gains in units of their standard error: an option that leads by a
    few standard errors takes the batch; gains within noise of each other share it."""
    scale = noise_scale(est)
    if not np.isfinite(scale):
        return np.full(len(est.mean), 1.0 / len(est.mean))
    z = (est.mean - est.mean.max()) / (temperature * scale)
    w = np.exp(z)
    return w / w.sum()


def candidate_weights(option_w: np.ndarray, with_mix: bool) -> np.ndarray:
    """Strategy-level weights on the candidates: the mix's share (when simulated) spread
    evenly over them."""
    if not with_mix:
        return option_w
    m = len(option_w) - 1
    return option_w[:m] + option_w[m] / m


def is_cold(a: AutoALConfig, n_labeled: int, num_classes: int) -> bool:
    """The cold start: L holds fewer than `cold_per_class` labels per class."""
    return n_labeled < a.cold_per_class * num_classes


def trusted(a: AutoALConfig, n_labeled: int, num_classes: int) -> bool:
    """Whether a round's estimates count, in its own batch and pooled into later rounds':
    not in the cold start (unless `cold_evidence`).

    Why: there they judge no better than the cold prior does. In the regime suite's cold
    rounds the eer reward's leader was the oracle's best in 3 of 15 first rounds on the Intel
    VM (chance 3.75) and in 10 of 25 cold rounds on the AMD one (TypiClust's batch: 11),
    yet its leads there are the campaign's largest (a k-means lead of 0.1 at an SE of 0.006
    on the redundant pool: the SE measures the label draws, not whether the estimate is
    right), so they took the cold batch from TypiClust in 4 of 5 seeds there and, pooled,
    kept k-means' batch for six more rounds in one. Not trusting them: digits 0.9218 ->
    0.9306, the long-tailed pool 0.4349 -> 0.4352, the redundant pool 0.8256 -> 0.8301
    (5 seeds, AMD EPYC; docs/autoal.md).
    """
    return a.cold_evidence or not is_cold(a, n_labeled, num_classes)


def prior_candidate(candidates: list[str], a: AutoALConfig, n_labeled: int,
                    num_classes: int) -> int:
    """The candidate trusted without evidence: `cold_prior` while L holds fewer than
    `cold_per_class` labels per class, else `prior`; the first candidate when it is not
    among them.

    Why a cold start of its own: with a few labels per class f is a poor judge of its own
    doubt, and typical rows of clusters no label covers teach more than its uncertain ones
    (Hacohen et al., ICML 2022: the low-budget phase). In the regime suite's first rounds on
    the three pools that start cold, TypiClust's batch was the oracle's best in 8 of 15,
    margin's in none (on the redundant pool it once cost 0.105 test accuracy). The
    estimates move the batch only outside the cold start (`trusted`).
    """
    name = a.cold_prior if is_cold(a, n_labeled, num_classes) and a.cold_prior in candidates \
        else a.prior
    return candidates.index(name) if name in candidates else 0


def chosen_candidate(est: GainEstimate, prior: int, switch_se: float) -> int:
    """The candidate whose batch is taken (`combine: best`): the prior candidate, unless the
    leader's pooled gain exceeds the prior's by more than `switch_se` standard errors.

    Why a prior: in the first rounds the simulation has a handful of rows to judge on, its
    leader is close to a random candidate, and a wrong first batch costs the most (the
    suite's first version, always the leader, took k-means on the long-tailed pool in 3 of
    5 seeds, and it is that pool's worst candidate). The prior is the candidate to trust
    without evidence; the evidence moves the batch once it is clear.
    """
    leader = int(np.argmax(est.mean))
    lead = est.mean[leader] - est.mean[prior]
    return leader if lead > switch_se * noise_scale(est) else prior


def combine(how: str, picks: Sequence[np.ndarray], ids: np.ndarray, member: np.ndarray,
            w: np.ndarray, b: int, best: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the batch's ids; a score per row of the candidates' union `ids`).

    best: the whole top-b of candidate `best` (default: the one weighted first, ties the
    earlier); interleave: the candidates' picks interleaved by weight; vote: the top-b of
    z = A w. For the first two the score is the pick's position in the batch, earlier =
    higher, and the ids come sorted.
    """
    if how == "vote":
        z = member.astype(np.float64) @ w
        return top_b(ids, z, b), z
    if how == "best":
        order = picks[int(np.argmax(w)) if best is None else best]
    else:
        order = interleave(picks, w, b)
    z = np.zeros(len(ids))
    z[np.searchsorted(ids, order)] = np.arange(len(order), 0, -1)
    return np.sort(order), z
