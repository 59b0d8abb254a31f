"""The expected-error-reduction reward (`autoal.reward: eer`): each candidate's real batch,
judged on the real pool by what it would teach a head under f's own beliefs.

Why: the gain simulation (`gain.py`) replays an acquisition on L, which in the first
rounds holds tens of rows and none of the pool's structure (its near-twins, its rare
classes): its estimates barely predicted the candidates' true gains (mean per-round
Spearman -0.03..+0.19 on the regime suite), and most of a campaign's AUC is decided in
those rounds. Expected error reduction (Roy & McCallum, ICML 2001), applied to whole
batches, judges the batches that would really be labeled, on the pool they would be
labeled from, with no second model:

1. Each candidate's top-b on U comes from the round's one scoring pass, and so do f's
   outputs on the union of those batches and on a seeded sample E of U (`eer_eval` rows:
   `Scorer.rows`), and f's embeddings of L (`Scorer.labeled`): f runs over nothing twice.
2. A head (softmax regression on f's frozen embeddings standardized by L's statistics,
   the oracle's protocol) is fitted on L.
3. Per draw (`eer_draws`): every batch row gets a label drawn from f's predicted
   distribution, the same label in every batch that holds the row (common random numbers:
   what two candidates share cannot tell them apart); each candidate's head is refitted on
   L + its batch from the head on L (all draws' heads in one batched fit whose heads are
   each their own L-BFGS: `fit_stacked`).
4. The reward: the refitted head's mean confidence (top probability) on E minus the head
   on L's. The pool's unknown errors are estimated by the head's own doubt.

What this sees that the simulation could not: a batch of near-twins moves the head in one
region of the pool and a batch spread over its typical rows in many; a batch of rows f is
already sure of teaches nothing (their drawn labels are what the head predicts); a batch
whose labels f cannot guess (draws that disagree) pulls the head different ways. Its
blind spot is what f cannot imagine: a class f gives no probability anywhere.

Pure numpy/torch, no Ray: one draw is one call's unit (`draw_gains`), so a Ray Train job
deals draws to workers and gathers (`autoal/ray_job.py`), like the simulation's splits.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autoal_dist.autoal.crossfit import HeadSettings, aligned, fit_stacked, standardize
from autoal_dist.seeds import derive, hashed_uniform

REFIT_ITERS = 45  # L-BFGS iterations of a refit warm-started from the head on L


@dataclass(frozen=True)
class EerProblem:
    """One round's input (what a Ray worker needs: outputs on L, the batches and E)."""

    emb_l: np.ndarray  # [n_L, D] f's embeddings of L
    y_l: np.ndarray  # [n_L] L's labels
    ids: np.ndarray  # [n_U] pool ids of the batches' union (label draws are keyed by id)
    emb_u: np.ndarray  # [n_U, D] f's embeddings of the union
    probs_u: np.ndarray  # [n_U, C] f's probabilities on the union
    batches: np.ndarray  # [M, b] each candidate's batch: positions in the union
    emb_eval: np.ndarray  # [n_E, D] f's embeddings of E, the seeded sample of U
    names: tuple[str, ...]  # the candidates
    heads: HeadSettings
    seed: int

    @property
    def options(self) -> tuple[str, ...]:
        return self.names

    @property
    def num_classes(self) -> int:
        return int(self.probs_u.shape[1])

    def gains(self, units: Sequence[int]) -> np.ndarray:
        return draw_gains(self, units)


def drawn_labels(probs: np.ndarray, ids: np.ndarray, seed: int) -> np.ndarray:
    """A label per row from its probabilities, by inverse CDF of a uniform keyed by
    (seed, id): the same row draws the same label whichever batch or worker holds it."""
    u = hashed_uniform(ids, seed)
    cdf = np.cumsum(probs.astype(np.float64), 1)
    return np.minimum((cdf < (u * cdf[:, -1])[:, None]).sum(1), probs.shape[1] - 1)


def mean_confidence(weight: torch.Tensor, bias: torch.Tensor, e: torch.Tensor) -> np.ndarray:
    """[K]: each stacked head's mean top probability over rows e."""
    with torch.no_grad():  # classes in the middle: a fast softmax axis (`fit_stacked`)
        logits = torch.matmul(aligned(weight), e.T) + bias[:, :, None]  # [K, C, n]
        return torch.softmax(logits, 1).amax(1).mean(1).double().numpy()


def draw_gains(p: EerProblem, draws: Sequence[int]) -> np.ndarray:
    """[len(draws), M]: each candidate's gain in the head's mean confidence on E, per draw.

    Every draw's M heads are refitted in one batched fit (`fit_stacked`); each head's fit
    is its own (its own L-BFGS history and steps), so dealing draws to workers in any
    grouping gives the same gains.
    """
    if not len(draws):
        return np.zeros((0, len(p.names)))
    e_l, e_u, e_eval = standardize(p.emb_l, p.emb_u, p.emb_eval)
    y_l = torch.from_numpy(p.y_l.astype(np.int64))
    start = fit_stacked(e_l[None], y_l[None], p.num_classes, p.heads)  # the head on L
    before = float(mean_confidence(start.weight, start.bias, e_eval)[0])
    n_l, m = len(e_l), len(p.batches)
    rows = torch.from_numpy(np.stack([np.r_[np.arange(n_l), n_l + r] for r in p.batches]))
    x = torch.cat([e_l, e_u])[rows]  # [M, n_L + b, D]: the same rows in every draw
    y = torch.stack([torch.cat([y_l, torch.from_numpy(
        drawn_labels(p.probs_u, p.ids, derive(p.seed, int(d), "eer-draw")))])[rows]
        for d in draws])  # [draws, M, n_L + b]
    settings = dataclasses.replace(p.heads, iters=min(p.heads.iters, REFIT_ITERS))
    heads = fit_stacked(x.repeat(len(draws), 1, 1), y.reshape(len(draws) * m, -1),
                        p.num_classes, settings, start)
    conf = mean_confidence(heads.weight, heads.bias, e_eval)
    return conf.reshape(len(draws), m) - before
