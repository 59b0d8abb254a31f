"""k-means sampling (DeepAL's KMeansSampling): cluster the pool's embeddings into
b clusters and query the sample nearest each centroid.

Lloyd's algorithm with k-means++ seeding (the exponential race of `sharded.py`,
first center uniform), at most `MAX_ITER` iterations, stopping early when no
assignment changes (an integer count, so the stop is exact).

Exact under sharding: cluster sums are accumulated in fixed point (int64, at a
resolution of 2^-24). Integer addition is associative, so every shard sends one
[k, D] partial per Lloyd pass, however it grouped its rows, and the total cannot
depend on where the shards split. (A float sum would have to be reduced in one
global order, which costs one partial per block per pass on the wire.) Empty
clusters keep their previous centroid.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.sharded import (
    BLOCK,
    EmbeddingShard,
    GreedyShardLike,
    d2_race_keys,
    greedy_select,
    row_blocks,
    sq_dists,
)
from autoal_dist.strategies.uncertainty import hashed_uniform

MAX_ITER = 20
FIXED_POINT = 2.0**24  # sum resolution; rows of |x| up to ~5e5 at 1e6 rows fit in int64
Partial = tuple[np.ndarray, np.ndarray]  # (sums [k, D] int64 fixed point, counts [k] int64)


def fixed_point(x: np.ndarray) -> np.ndarray:
    """x as int64 multiples of 2^-24, refusing values whose sums could overflow."""
    if len(x) and np.abs(x).max() * FIXED_POINT * len(x) >= 2.0**53:
        raise ValueError("k-means: embeddings too large for exact fixed-point sums")
    return np.rint(x * FIXED_POINT).astype(np.int64)


def block_partial(x: np.ndarray, labels: np.ndarray, k: int) -> Partial:
    """Per-cluster fixed-point sums and counts of a block of rows (exact, order-free)."""
    counts = np.bincount(labels, minlength=k)
    filled = np.flatnonzero(counts)
    starts = np.concatenate([[0], np.cumsum(counts[filled])[:-1]])
    sums = np.zeros((k, x.shape[1]), dtype=np.int64)
    sums[filled] = np.add.reduceat(fixed_point(x[np.argsort(labels, kind="stable")]), starts,
                                   axis=0)
    return sums, counts


def top_r(d: np.ndarray, ids: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of d [k, m], the min(r, m) smallest entries by (d, id), sorted that way.

    A threshold from np.partition keeps every tie at the r-th value, then an exact
    lexsort decides, so the result is the same however the columns were split.
    """
    k, m = d.shape
    keep = d <= np.partition(d, r - 1, axis=1)[:, r - 1 : r] if m > r else np.ones(d.shape, bool)
    rows, cols = np.nonzero(keep)
    dv, iv = d[rows, cols], ids[rows, cols]
    order = np.lexsort((iv, dv, rows))
    rows, dv, iv = rows[order], dv[order], iv[order]
    first = np.arange(len(rows)) - np.searchsorted(rows, rows) < r
    width = min(r, m)
    return dv[first].reshape(k, width), iv[first].reshape(k, width)


class KMeansShard(EmbeddingShard):
    """One shard's k-means state: its embeddings, k-means++ seeding state, and labels."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0) -> None:
        super().__init__(out.ids, out.embeddings, block, start)
        self.labels = np.full(len(self.ids), -1, dtype=np.int64)

    def _keys(self, seed: int, step: int) -> np.ndarray:
        if not self.seeded:
            return hashed_uniform(self.ids, seed)  # first center: uniform (smallest hash key)
        return d2_race_keys(self.ids, self.min_d2, seed, step)

    def assign(self, centers: np.ndarray) -> tuple[int, Partial]:
        """Assign rows to their nearest center: (#labels changed, this shard's partial)."""
        changed = 0
        sums = np.zeros(centers.shape, dtype=np.int64)
        counts = np.zeros(len(centers), dtype=np.int64)
        for sl in row_blocks(len(self.ids), self.block):
            labels = sq_dists(self.x[sl], self.x_sqn[sl], centers).argmin(axis=1)
            changed += int(np.count_nonzero(labels != self.labels[sl]))
            self.labels[sl] = labels
            s, c = block_partial(self.x[sl], labels, len(centers))
            sums += s
            counts += c
        return changed, (sums, counts)

    def nearest(self, centers: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Per center, this shard's r nearest rows: (d2 [k, r'], ids [k, r']) by (d2, id)."""
        best_d, best_i = np.empty((len(centers), 0)), np.empty((len(centers), 0), np.int64)
        for sl in row_blocks(len(self.ids), self.block):
            d = sq_dists(self.x[sl], self.x_sqn[sl], centers).T
            ids = np.broadcast_to(self.ids[sl], d.shape)
            best_d, best_i = top_r(np.hstack([best_d, d]), np.hstack([best_i, ids]), r)
        return best_d, best_i


class KMeansShardLike(GreedyShardLike, Protocol):
    """What `kmeans_select` calls on a shard (or a wrapped Ray actor handle)."""

    def assign(self, centers: np.ndarray) -> tuple[int, Partial]: ...

    def nearest(self, centers: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]: ...


def update_centers(centers: np.ndarray, partials: Sequence[Partial]) -> np.ndarray:
    """Cluster means from the shards' fixed-point partials (exact integer totals)."""
    sums = np.zeros(centers.shape, dtype=np.int64)
    counts = np.zeros(len(centers), dtype=np.int64)
    for s, c in partials:
        sums += s
        counts += c
    out = centers.copy()
    filled = counts > 0
    out[filled] = sums[filled] / FIXED_POINT / counts[filled, None]
    return out


def lloyd(
    shards: Sequence[KMeansShardLike], centers: np.ndarray, max_iter: int
) -> tuple[np.ndarray, list[int]]:
    """Lloyd iterations until a pass changes no label, or `max_iter` passes.

    Returns the centers and the number of labels each pass changed (last == 0: converged).
    """
    changes: list[int] = []
    while len(changes) < max_iter:
        results = [s.assign(centers) for s in shards]
        changes.append(sum(changed for changed, _ in results))
        if changes[-1] == 0:
            break
        centers = update_centers(centers, [partial for _, partial in results])
    return centers, changes


def first_free(candidates: np.ndarray) -> np.ndarray | None:
    """Centroid by centroid, its first candidate id not already picked; None if one runs out."""
    picked: list[int] = []
    seen: set[int] = set()
    for row in candidates:
        free = next((int(i) for i in row if int(i) not in seen), None)
        if free is None:
            return None
        picked.append(free)
        seen.add(free)
    return np.array(picked, dtype=np.int64)


def nearest_distinct(shards: Sequence[KMeansShardLike], centers: np.ndarray) -> np.ndarray:
    """Each centroid's nearest sample (ties: smallest id), distinct across centroids.

    Collisions are resolved in centroid order from each centroid's next-nearest;
    the candidate depth r grows until every centroid finds a free sample.
    """
    r = 4
    while True:
        parts = [s.nearest(centers, r) for s in shards]
        _, ids = top_r(np.hstack([p[0] for p in parts]), np.hstack([p[1] for p in parts]), r)
        picks = first_free(ids)
        if picks is not None:
            return picks
        r *= 4


def kmeans_select(
    shards: Sequence[KMeansShardLike], budget: int, seed: int, max_iter: int = MAX_ITER
) -> np.ndarray:
    """The driver: k-means++ seeding, Lloyd, then the distinct nearest sample per centroid."""
    seeds = greedy_select(shards, budget, seed)
    centers, _ = lloyd(shards, np.stack([c.payload[0] for c in seeds]), max_iter)
    return nearest_distinct(shards, centers)


register_set("kmeans", {"embeddings"}, KMeansShard, kmeans_select,
             "k-means (b clusters) on embeddings; query the sample nearest each centroid (DeepAL).")
