"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings.

The gradient embedding of sample i is g_i = a_i (x) e_i with a_i = p_i -
onehot(argmax p_i) (the last-layer gradient of the loss at the predicted label)
and e_i the penultimate embedding. It is C*D-dimensional, so it is never built:
<g_i, g_j> = <a_i, a_j><e_i, e_j>, hence

    ||g_i - g_j||^2 = |a_i|^2 |e_i|^2 + |a_j|^2 |e_j|^2 - 2 <a_i, a_j><e_i, e_j>,

O(C + D) per pair: a step is two matrix-vector products, over [N, C] and [N, D].
The first center is the largest ||g|| (as in BADGE's reference code), then D^2
sampling by the exponential race of `sharded.py`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.arrays import pad_rows
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.sharded import BLOCK, GreedyShard, greedy_ids, sq_norms


def gradient_factors(probs: np.ndarray, rows: int) -> np.ndarray:
    """a = p - onehot(argmax p) in float64 (g = a (x) e without forming it), zero-padded."""
    a = pad_rows(probs, rows, 0.0, np.float64)
    n = len(probs)
    a[np.arange(n), a[:n].argmax(axis=1)] -= 1.0
    return a


class BadgeShard(GreedyShard):
    """One shard's BADGE seeding state: the factors a, e and ||g||^2, and min D^2."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(out.ids, block, start, device)
        a = gradient_factors(out.probs, self.rows)
        e = pad_rows(out.embeddings, self.rows, 0.0, np.float64)
        self.g_sqn = self.arrays.put(sq_norms(a) * sq_norms(e))  # ||g||^2 = |a|^2 |e|^2
        self.a, self.e = self.arrays.put(a), self.arrays.put(e)

    def _keys(self, ch: slice, seed: int, step: int):
        if not self.seeded:
            return -self.g_sqn[ch]  # largest gradient norm first
        return self.race_keys(ch, seed, step)

    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        return self.arrays.host(self.a[row]).copy(), self.arrays.host(self.e[row]).copy()

    def _prepare(self, payload: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        a_c, e_c = payload
        return (self.arrays.put(a_c), self.arrays.put(e_c),
                float(sq_norms(a_c) * sq_norms(e_c)))

    def _chunk_d2(self, ch: slice, *center: Any):
        a_c, e_c, g_c_sqn = center
        d = self.arrays.block_matmul(self.a[ch], a_c)
        d *= self.arrays.block_matmul(self.e[ch], e_c)
        d *= -2.0
        d += self.g_sqn[ch]
        d += g_c_sqn
        return self.arrays.xp.clip(d, 0.0, None, out=d)


register_set("badge", {"probs", "embeddings"}, BadgeShard, greedy_ids,
             "BADGE: k-means++ seeding on gradient embeddings (p - onehot) (x) e (Ash et al.).")
