"""Candidate memberships A[j, m] in {0, 1}: did candidate m pick sample j.

f is frozen during a round, so A is computed once per set (L, then U) from one
PoolOutputs; nothing in the search recomputes a candidate strategy.

Every pick counts the same (the paper's form): with uniform weights the aggregate
is the candidates' plain vote, whose ties (rows with the same pattern of picks)
break by smallest id. A rank-graded form, (q - position) / q per pick, was tried
and measured worse on digits for the vote itself (AUC 0.900 vs 0.911, 3 seeds): it
concentrates the batch on the top of the uncertainty lists, where ties spread it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import select, top_b


def pick_count(r: float, n: int, min_picks: int) -> int:
    """Each candidate's pick count on a set of n samples: ceil(r * n), at least
    `min_picks` (enough picks that a candidate's mean reward is evidence), at most n."""
    return min(n, max(min_picks, math.ceil(r * n)))


def membership_matrix(ids: np.ndarray, picks: Sequence[np.ndarray]) -> np.ndarray:
    """[len(ids), len(picks)] float32: column m is 1 where ids[j] is in picks[m]."""
    cols = [np.isin(ids, p) for p in picks]
    if not cols:
        return np.zeros((len(ids), 0), np.float32)
    return np.stack(cols, axis=1).astype(np.float32)


def candidate_picks(outputs: PoolOutputs, names: Sequence[str], q: int,
                    seed: int) -> list[np.ndarray]:
    """Each candidate's own top-q of `outputs`, in its selection order."""
    return [select(n, outputs, q, seed) for n in names]


def candidate_memberships(outputs: PoolOutputs, names: Sequence[str], q: int,
                          seed: int) -> np.ndarray:
    """Each candidate's own top-q of `outputs`, as memberships aligned with outputs.ids."""
    return membership_matrix(outputs.ids, candidate_picks(outputs, names, q, seed))


def union_memberships(picks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted union of all picks, memberships over it): the only samples a query may take."""
    ids = np.unique(np.concatenate(picks)) if len(picks) else np.empty(0, np.int64)
    return ids.astype(np.int64), membership_matrix(ids, picks)


def loss_head_membership(ids: np.ndarray, predicted_loss: np.ndarray, q: int) -> np.ndarray:
    """[n, 1]: the loss head as one more candidate (LPL's rule: top-q predicted loss, ties by id).

    A column like the others, so its SearchNet weight is on the candidates'
    scale and its share of a batch is defined.
    """
    return membership_matrix(ids, [top_b(ids, predicted_loss, q)])
