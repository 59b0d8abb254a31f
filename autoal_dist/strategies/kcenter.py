"""k-center greedy coreset (Sener & Savarese, ICLR 2018) on penultimate embeddings.

Each step picks the pool sample farthest from its nearest center, the centers
being the labeled set plus the samples chosen so far. Sharded as in
`sharded.py`: every shard keeps its rows' min squared distance; per step the
driver takes the global max (ties: smallest id) and broadcasts that vector.
"""
from __future__ import annotations

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.sharded import (
    BLOCK,
    EmbeddingShard,
    greedy_ids,
    row_blocks,
    sq_dists,
)
from autoal_dist.strategies.uncertainty import hashed_uniform


class KCenterShard(EmbeddingShard):
    """One shard's k-center state, seeded from the labeled embeddings.

    Distances to the labeled set are computed block x block, so memory stays
    bounded whatever the pool and labeled sizes. Without labeled embeddings the
    first center is the row with the smallest hash key for the seed (a uniform pick).
    """

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0) -> None:
        super().__init__(out.ids, out.embeddings, block, start)
        labeled = out.labeled_embeddings
        if labeled is not None and len(labeled):
            self._seed_from(np.asarray(labeled, dtype=np.float64))

    def _seed_from(self, labeled: np.ndarray) -> None:
        """min_d2 <- squared distance to the nearest labeled embedding."""
        for lab in row_blocks(len(labeled), self.block):
            centers = labeled[lab]
            for sl in row_blocks(len(self.ids), self.block):
                d = sq_dists(self.x[sl], self.x_sqn[sl], centers).min(axis=1)
                np.minimum(self.min_d2[sl], d, out=self.min_d2[sl])
        self.seeded = True

    def _keys(self, seed: int, step: int) -> np.ndarray:
        if not self.seeded:
            return hashed_uniform(self.ids, seed)  # first center: smallest hash key
        return -self.min_d2  # farthest first


register_set("kcenter", {"embeddings", "labeled_embeddings"}, KCenterShard, greedy_ids,
             "Greedy k-center coreset on embeddings, seeded by the labeled set (Sener & Savarese).")
