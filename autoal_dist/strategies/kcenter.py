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
from autoal_dist.strategies.arrays import Array
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.sharded import (
    BLOCK,
    LABELED_BLOCK,
    EmbeddingShard,
    greedy_ids,
    sq_dists,
    sq_norms,
)


class KCenterShard(EmbeddingShard):
    """One shard's k-center state, seeded from the labeled embeddings.

    Distances to the labeled set are computed chunk x LABELED_BLOCK, so memory
    stays bounded whatever the pool and labeled sizes. Without labeled embeddings
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
        xp = self.arrays.xp

        def fold(ch: slice, centers: tuple[Array, Array]) -> None:
            d = xp.amin(sq_dists(self.arrays, self.x[ch], self.x_sqn[ch], *centers), 1)
            xp.minimum(self.d2[ch], d, out=self.d2[ch])

        for i in range(0, len(labeled), LABELED_BLOCK):
            part = labeled[i : i + LABELED_BLOCK]
            centers = self.arrays.put(np.ascontiguousarray(part.T)), self.arrays.put(sq_norms(part))
            self.arrays.map(functools.partial(fold, centers=centers), self.rows)
        self.seeded = True

    def _keys(self, ch: slice, seed: int, step: int):
        if not self.seeded:
            return self.uniform_keys(ch, seed)  # first center: smallest hash key
        return -self.d2[ch]  # farthest first


register_set("kcenter", {"embeddings", "labeled_embeddings"}, KCenterShard, greedy_ids,
             "Greedy k-center coreset on embeddings, seeded by the labeled set (Sener & Savarese).")
