"""k-center greedy coreset (Sener & Savarese, ICLR 2018) on penultimate embeddings.

Each step picks the pool sample farthest from its nearest center, the centers
being the labeled set plus the samples chosen so far. Sharded as in
`sharded.py`: every shard keeps its rows' min squared distance; per step the
driver takes the global max (ties: smallest id) and broadcasts that vector.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.arrays import Array, Backend
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.screen import (
    SLACK,
    U32,
    batches,
    exact_sq_dists,
    screenable,
    underflow,
)
from autoal_dist.strategies.sharded import (
    BLOCK,
    LABELED_BLOCK,
    EmbeddingShard,
    greedy_ids,
    sq_norms,
)


@dataclass(frozen=True)
class Centers:
    """Many centers on a shard's device: float64 rows (exact), float32 columns and
    |c|^2 / 2 (the screen), and the bounds' largest norms."""

    c: Array  # [k, D] float64
    c_sqn: Array  # [k] float64
    c32: Array  # [D, k] float32
    half32: Array  # [k] float32
    norm_max: float
    sqn_max: float

    @classmethod
    def of(cls, arrays: Backend, c: np.ndarray) -> Centers:
        c_sqn = sq_norms(c)
        top = float(c_sqn.max()) if len(c_sqn) else 0.0
        return cls(arrays.put(c), arrays.put(c_sqn),
                   arrays.put(np.ascontiguousarray(c.T, dtype=np.float32)),
                   arrays.put((0.5 * c_sqn).astype(np.float32)), float(np.sqrt(top)), top)


class KCenterShard(EmbeddingShard):
    """One shard's k-center state, seeded from the labeled embeddings.

    Distances to the labeled set are screened chunk x LABELED_BLOCK at a time, so
    memory stays bounded whatever the pool and labeled sizes. Without labeled embeddings
    the first center is the row with the smallest hash key for the seed (a uniform pick).
    """

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(out.ids, out.embeddings, block, start, device)
        labeled = out.labeled_embeddings
        if labeled is not None and len(labeled):
            self._seed_from(np.asarray(labeled, dtype=np.float64))

    def _seed_from(self, labeled: np.ndarray) -> None:
        """min_d2 <- squared distance to the nearest labeled embedding."""
        for i in range(0, len(labeled), LABELED_BLOCK):
            centers = Centers.of(self.arrays, labeled[i : i + LABELED_BLOCK])
            self.arrays.map(functools.partial(self._fold_nearest, centers), self.rows)
        self.seeded = True

    def _fold_nearest(self, centers: Centers, chunk: slice) -> None:
        """Fold the chunk's nearest of `centers` into d2. A float32 GEMM screens the pairs:
        with s = |c|^2/2 - x.c (d = |x|^2 + 2 s) known to within `err` per row, only pairs
        within 2 err of the row's smallest s, and below its d2, can set the new minimum;
        those get their float64 distance (`screen.py`)."""
        arrays, xp, k = self.arrays, self.arrays.xp, len(centers.half32)
        ch = slice(chunk.start, min(chunk.stop, self.n))  # padding rows: never selected
        if ch.start >= ch.stop:
            return
        s = self.x32[ch] @ centers.c32
        s = xp.subtract(centers.half32, s, out=s)
        if self.screened and screenable(self.x_norm_max, centers.norm_max):
            x_sqn = self.x_sqn[ch]
            err = self.x_norm_k[ch] * (centers.norm_max / 2.0)  # kappa |x| |c|
            err += x_sqn * SLACK
            err += (2.0 * U32 + SLACK) * centers.sqn_max + underflow(
                self.x.shape[1], self.x_norm_max, centers.norm_max)
            low = arrays.cast(xp.amin(s, 1), arrays.f64) + 2.0 * err
            thr = xp.minimum(low, (self.d2[ch] - x_sqn) / 2.0 + err)
        else:
            thr = arrays.full(ch.stop - ch.start, np.inf, arrays.f64)
        pairs = arrays.nonzero((s <= arrays.ceil32(thr)[:, None]).reshape(-1))
        for part in batches(pairs):
            rows, cols = part // k + ch.start, part % k
            d = exact_sq_dists(xp, self.x[rows], self.x_sqn[rows], centers.c[cols],
                               centers.c_sqn[cols])
            arrays.min_at(self.d2, rows, d)

    def _keys(self, ch: slice, seed: int, step: int):
        if not self.seeded:
            return self.uniform_keys(ch, seed)  # first center: smallest hash key
        return -self.d2[ch]  # farthest first


register_set("kcenter", {"embeddings", "labeled_embeddings"}, KCenterShard, greedy_ids,
             "Greedy k-center coreset on embeddings, seeded by the labeled set (Sener & Savarese).")
