"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on gradient embeddings.

The gradient embedding of sample i is g_i = a_i (x) e_i with a_i = p_i -
onehot(argmax p_i) (the last-layer gradient of the loss at the predicted label)
and e_i the penultimate embedding. It is C*D-dimensional, so it is never built:
<g_i, g_j> = <a_i, a_j><e_i, e_j>, hence

    ||g_i - g_j||^2 = |a_i|^2 |e_i|^2 + |a_j|^2 |e_j|^2 - 2 <a_i, a_j><e_i, e_j>,

O(C + D) per pair: a step is two matrix-vector products, over [N, C] and [N, D]
(in float32, screening the rows whose float64 distance is computed: `screen.py`).
The first center is the largest ||g|| (as in BADGE's reference code), then D^2
sampling by the exponential race of `sharded.py`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.arrays import Array, pad_rows
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.screen import (
    SLACK,
    dot_bound,
    row_dots,
    screenable,
    underflow,
)
from autoal_dist.strategies.sharded import (
    BLOCK,
    GreedyShard,
    exact_dtype,
    greedy_ids,
    row_sq_norms,
    sq_norms,
)


def gradient_factors(probs: np.ndarray, rows: int) -> np.ndarray:
    """a = p - onehot(argmax p) in float64 (g = a (x) e without forming it), zero-padded."""
    a = pad_rows(probs, rows, 0.0, np.float64)
    n = len(probs)
    a[np.arange(n), a[:n].argmax(axis=1)] -= 1.0
    return a


class BadgeShard(GreedyShard):
    """One shard's BADGE seeding state: the factors a (float64: p - 1 is not a float32)
    and e (float32 where exact), their float32 copies for the screen, ||g||^2, min D^2."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(out.ids, block, start, device)
        a = gradient_factors(out.probs, self.rows)
        e = pad_rows(out.embeddings, self.rows, 0.0, exact_dtype(out.embeddings))
        a_sqn, e_sqn = sq_norms(a), row_sq_norms(e)
        g_sqn = a_sqn * e_sqn  # ||g||^2 = |a|^2 |e|^2
        self.g_sqn = self.arrays.put(g_sqn)
        self.a, self.e = self.arrays.put(a), self.arrays.put(e)
        f32 = self.arrays.f32
        self.a32 = self.arrays.cast(self.a, f32)
        self.e32 = self.e if self.e.dtype == f32 else self.arrays.cast(self.e, f32)
        # the screen: |pa32 pe32 - pa pe| <= (ka + ke + ka ke) |g| |g_c| + underflow terms
        unit = self.arrays.f32_unit
        ka, ke = dot_bound(a.shape[1], unit), dot_bound(e.shape[1], unit)
        kappa = 2.0 * (ka + ke + ka * ke)  # of -2 pa pe
        self.screened = math.isfinite(kappa)
        self.norm_max = tuple(float(np.sqrt(v.max())) if len(v) else 0.0 for v in (a_sqn, e_sqn))
        self.g_sqn_lo = self.arrays.put(g_sqn * (1.0 - SLACK))
        self.g_norm_k = self.arrays.put(np.sqrt(g_sqn) * (kappa if self.screened else 0.0))

    def _keys(self, ch: slice, seed: int, step: int):
        if not self.seeded:
            return -self.g_sqn[ch]  # largest gradient norm first
        return self.race_keys(ch, seed, step)

    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        return (self.arrays.host(self.a[row]).copy(),
                self.arrays.host(self.e[row]).astype(np.float64))

    def _prepare(self, payload: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        a_c, e_c = (np.asarray(v, dtype=np.float64) for v in payload)
        a_sqn, e_sqn = sq_norms(a_c), sq_norms(e_c)
        put = self.arrays.put
        return (put(a_c), put(e_c), put(a_c.astype(np.float32)), put(e_c.astype(np.float32)),
                float(a_sqn * e_sqn), math.sqrt(a_sqn), math.sqrt(e_sqn))

    def _lower_d2(self, ch: slice, a_c: Array, e_c: Array, a_c32: Array, e_c32: Array,
                  g_c_sqn: float, a_c_norm: float, e_c_norm: float) -> Array | None:
        a_max, e_max = self.norm_max
        if not (self.screened and screenable(a_max, a_c_norm) and screenable(e_max, e_c_norm)):
            return None
        f64 = self.arrays.f64
        low = self.arrays.cast(self.a32[ch] @ a_c32, f64)  # the floor: two GEMVs
        low *= self.arrays.cast(self.e32[ch] @ e_c32, f64)  # exact: float32 x float32
        low *= -2.0
        low += self.g_sqn_lo[ch]
        low -= self.g_norm_k[ch] * (a_c_norm * e_c_norm)
        ua = underflow(self.a.shape[1], a_max, a_c_norm)
        ue = underflow(self.e.shape[1], e_max, e_c_norm)
        tiny = 3.0 * ua * e_max * e_c_norm + a_max * a_c_norm * ue + ua * ue
        low += g_c_sqn * (1.0 - SLACK) - 4.0 * tiny
        return low

    def _exact_d2(self, rows: Any, a_c: Array, e_c: Array, a_c32: Array, e_c32: Array,
                  g_c_sqn: float, *norms: float) -> Array:
        d = row_dots(self.a[rows], a_c)
        d *= row_dots(self.e[rows], e_c)
        d *= -2.0
        d += self.g_sqn[rows]
        d += g_c_sqn
        return self.arrays.xp.clip(d, 0.0, None, out=d)


register_set("badge", {"probs", "embeddings"}, BadgeShard, greedy_ids,
             "BADGE: k-means++ seeding on gradient embeddings (p - onehot) (x) e (Ash et al.).")
