"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings.

The gradient embedding of sample i is g_i = a_i (x) e_i with a_i = p_i -
onehot(argmax p_i) (the last-layer gradient of the loss at the predicted label)
and e_i the penultimate embedding. It is C*D-dimensional, so it is never built:
<g_i, g_j> = <a_i, a_j><e_i, e_j>, hence

    ||g_i - g_j||^2 = |a_i|^2 |e_i|^2 + |a_j|^2 |e_j|^2 - 2 <a_i, a_j><e_i, e_j>,

O(C + D) per pair. The first center is the largest ||g|| (as in BADGE's
reference code), then D^2 sampling by the exponential race of `sharded.py`.
"""
from __future__ import annotations

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.sharded import (
    BLOCK,
    GreedyShard,
    greedy_ids,
    d2_race_keys,
    sq_norms,
)


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """a = p - onehot(argmax p) in float64: g = a (x) e without forming it."""
    a = np.array(probs, dtype=np.float64)
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a


class BadgeShard(GreedyShard):
    """One shard's BADGE seeding state: the factors a, e and their norms, and min D^2."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0) -> None:
        super().__init__(out.ids, block, start)
        self.a = gradient_factors(out.probs)
        self.e = np.ascontiguousarray(out.embeddings, dtype=np.float64)
        self.g_sqn = sq_norms(self.a) * sq_norms(self.e)  # ||g||^2 = |a|^2 |e|^2

    def _keys(self, seed: int, step: int) -> np.ndarray:
        if not self.seeded:
            return -self.g_sqn  # largest gradient norm first
        return d2_race_keys(self.ids, self.min_d2, seed, step)

    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        return self.a[row].copy(), self.e[row].copy()

    def _block_d2(self, rows: slice, *payload: np.ndarray) -> np.ndarray:
        a_c, e_c = payload
        cross = (self.a[rows] @ a_c) * (self.e[rows] @ e_c)
        d = self.g_sqn[rows] + (a_c @ a_c) * (e_c @ e_c) - 2.0 * cross
        return np.maximum(d, 0.0, out=d)


register_set("badge", {"probs", "embeddings"}, BadgeShard, greedy_ids,
             "BADGE: k-means++ seeding on gradient embeddings (p - onehot) (x) e (Ash et al.).")
