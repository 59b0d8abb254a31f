"""Candidate memberships A[j, m]: did candidate m pick sample j, and how early.

f is frozen during a round, so A is computed once per set (L, then U) from one
PoolOutputs; nothing in the search recomputes a candidate strategy.

Two forms:
- 0/1 (`graded=False`, the paper's): every pick counts the same, so with weights
  that sum to 1 the rows many candidates picked rank first whatever the weights
  say, and rows with the same pattern tie exactly.
- graded (`graded=True`, the default search's): a pick at position k of a
  candidate's q picks counts (q - k) / q, so the aggregate is a weighted Borda
  count over the candidates' top-q lists: all weight on one candidate reproduces
  that candidate's own order, uniform weights give a rank-weighted vote, and ties
  are rare.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import select, top_b


def pick_count(r: float, n: int, min_picks: int) -> int:
    """Each candidate's pick count on a set of n samples: ceil(r * n), at least
    `min_picks` (enough picks that a candidate's mean reward is evidence), at most n."""
    return min(n, max(min_picks, math.ceil(r * n)))


def membership_matrix(ids: np.ndarray, picks: Sequence[np.ndarray],
                      graded: bool = False) -> np.ndarray:
    """[len(ids), len(picks)] float32: column m is ids[j]'s membership in picks[m]
    (1, or (q - position) / q when graded)."""
    out = np.zeros((len(ids), len(picks)), np.float32)
    for m, p in enumerate(picks):
        p = np.asarray(p, np.int64)
        value = (len(p) - np.arange(len(p))) / max(len(p), 1) if graded else np.ones(len(p))
        where = dict(zip(p.tolist(), value.tolist()))
        out[:, m] = [where.get(i, 0.0) for i in np.asarray(ids).tolist()]
    return out


def candidate_picks(outputs: PoolOutputs, names: Sequence[str], q: int,
                    seed: int) -> list[np.ndarray]:
    """Each candidate's own top-q of `outputs`, in its selection order."""
    return [select(n, outputs, q, seed) for n in names]


def candidate_memberships(outputs: PoolOutputs, names: Sequence[str], q: int, seed: int,
                          graded: bool = False) -> np.ndarray:
    """Each candidate's own top-q of `outputs`, as memberships aligned with outputs.ids."""
    return membership_matrix(outputs.ids, candidate_picks(outputs, names, q, seed), graded)


def union_memberships(picks: Sequence[np.ndarray],
                      graded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(sorted union of all picks, memberships over it): the only samples a query may take."""
    ids = np.unique(np.concatenate(picks)) if len(picks) else np.empty(0, np.int64)
    return ids.astype(np.int64), membership_matrix(ids, picks, graded)


def loss_head_membership(ids: np.ndarray, predicted_loss: np.ndarray, q: int,
                         graded: bool = False) -> np.ndarray:
    """[n, 1]: the loss head as one more candidate (LPL's rule: top-q predicted loss, ties by id).

    A column like the others, so its SearchNet weight is on the candidates'
    scale and its share of a batch is defined.
    """
    return membership_matrix(ids, [top_b(ids, predicted_loss, q)], graded)
