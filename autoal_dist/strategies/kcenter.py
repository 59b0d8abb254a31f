"""k-center greedy coreset (Sener & Savarese, ICLR 2018) on penultimate embeddings.

Each step picks the pool sample farthest from its nearest center, the centers
being the labeled set plus the samples chosen so far. Sharded as in
`sharded.py`: every shard keeps its rows' min squared distance; per step the
driver takes the global max (ties: smallest id) and broadcasts that vector.
"""
from __future__ import annotations

import functools

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.screen import batches
from autoal_dist.strategies.sharded import (
    BLOCK,
    LABELED_BLOCK,
    Centers,
    EmbeddingShard,
    greedy_ids,
)


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
        """Fold the chunk's nearest of `centers` into d2: only pairs within 2 err of the
        row's smallest screened s, and below its d2, can set the new minimum; those get
        their float64 distance (`screen.py`)."""
        arrays, xp = self.arrays, self.arrays.xp
        ch = slice(chunk.start, min(chunk.stop, self.n))  # padding rows: never selected
        if ch.start >= ch.stop:
            return
        s, err = self.screen(ch, centers)
        if err is None:
            thr = arrays.full(ch.stop - ch.start, np.inf, arrays.f64)
        else:
            low = arrays.cast(xp.amin(s, 1), arrays.f64) + 2.0 * err
            thr = xp.minimum(low, (self.d2[ch] - self.x_sqn[ch]) / 2.0 + err)
        k = len(centers.c_sqn)
        pairs = arrays.nonzero((s <= arrays.ceil32(thr)[:, None]).reshape(-1))
        for part in batches(pairs):
            rows, cols = part // k + ch.start, part % k
            arrays.min_at(self.d2, rows, self.exact_pairs(rows, centers, cols))

    def _keys(self, ch: slice, seed: int, step: int):
        if not self.seeded:
            return self.uniform_keys(ch, seed)  # first center: smallest hash key
        return -self.d2[ch]  # farthest first


register_set("kcenter", {"embeddings", "labeled_embeddings"}, KCenterShard, greedy_ids,
             "Greedy k-center coreset on embeddings, seeded by the labeled set (Sener & Savarese).")
