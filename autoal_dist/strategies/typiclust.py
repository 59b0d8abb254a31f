"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active learning on a budget").

At low budgets typical samples teach more than uncertain ones. Cluster the pool into
K = min(labeled + b, MAX_CLUSTERS) clusters; then, b times, take the most typical
unselected sample of the cluster holding the fewest labeled + selected samples (among
clusters of at least MIN_CLUSTER_SIZE pool rows; ties: the larger cluster, then the
smaller index). Typicality is 1 / the mean Euclidean distance to the sample's
min(K_NN, m - 1) nearest neighbours in its own cluster (the paper's definition), the
distances those of the unit rows rounded to multiples of 2^-25 (~3e-8), computed
exactly by a float64 GEMM (`fixed_sq_dists`).

Sharded like `kmeans.py`, whose k-means++ seeding and fixed-point Lloyd it reuses, on
L2-normalized embeddings rounded to float32 (the paper's self-supervised features are
normalized; `unit_rows32`). The neighbours are looked up in a *reference sample* R
(`reference_sample`): the at most REF_MAX pool rows with the smallest hashed keys for
the seed, the same rows however the pool is sharded. A pool of at most REF_MAX rows is
its own R, and typicality is exactly the all-pairs one; above that it is estimated on R
(m = R's rows in the cluster), which bounds the cost at N x REF_MAX distances. A cluster
with fewer than two rows in R ranks its rows by distance to its centroid instead.

The driver merges exactly: each shard sends, per cluster, its few most typical rows
by (-typicality, id), and more when a cluster runs out (`best_typical`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies.arrays import Array, Backend, pad_rows
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.kmeans import KMeansShard, KMeansShardLike, lloyd
from autoal_dist.strategies.screen import batches
from autoal_dist.strategies.sharded import (
    BLOCK,
    Candidate,
    Centers,
    fixed_rows,
    fixed_sq_dists,
    gather,
    merge,
    sq_dists,
    sq_norms,
    stream_seed,
    unit_rows32,
)

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20
REF_MAX = 4096  # rows of the reference sample R that density and coverage are measured on
REF_STREAM = 1 << 40  # hash stream of R's keys: stream_seed(seed, REF_STREAM); no step reaches it
DEPTH = 4  # candidates per cluster a shard first sends; x4 when a cluster runs out
PAIR_PIECE = 1 << 20  # (row, R row) pairs per product of the typicality's distances


def unit_rows(x: np.ndarray | None, dim: int = 0) -> np.ndarray:
    """The labeled embeddings as the pool's unit rows (`unit_rows32`: rounded to float32),
    held in float64 for the host's products. None or empty gives [0, dim]."""
    if x is None or len(x) == 0:
        return np.zeros((0, dim if x is None else x.shape[1]), np.float64)
    return unit_rows32(np.asarray(x)).astype(np.float64)


def smallest_per_group(groups: np.ndarray, keys: np.ndarray, ids: np.ndarray,
                       depths: np.ndarray) -> np.ndarray:
    """Positions of each group g's depths[g] smallest (key, id), ordered by (g, key, id)."""
    order = np.lexsort((ids, keys, groups))
    g = groups[order]
    rank = np.arange(len(g)) - np.searchsorted(g, g)
    return order[rank < depths[g]]


class ReferenceShard:
    """The reference sample's shard side (mixed into the low-budget strategies' shards)."""

    ids: np.ndarray
    n: int
    x: Array
    arrays: Backend

    def reference(self, seed: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This shard's `r` rows of smallest (key, id): (keys, ids, unit embeddings)."""
        ids = self.ids[: self.n]
        keys = hashed_uniform(ids, stream_seed(seed, REF_STREAM))
        rows = np.lexsort((ids, keys))[:r]
        return keys[rows], ids[rows], self.arrays.host(self.x[self.arrays.put(rows)])


def reference_sample(shards: Sequence[Any], seed: int,
                     r: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """R: the `r` (default REF_MAX) pool rows of smallest (key, id) over all shards, as
    (ids, unit embeddings: their float32 values in float64) in that order. Exact: the
    global smallest r are among the shards' smallest r."""
    r = REF_MAX if r is None else r
    parts = gather(shards, "reference", seed, r)
    if len(parts) == 1:  # one shard's rows come in that order already
        return parts[0][1], parts[0][2].astype(np.float64)
    keys, ids, x = (np.concatenate(p) for p in zip(*parts))
    top = np.lexsort((ids, keys))[:r]
    return ids[top], x[top].astype(np.float64)


class TypiClustShard(KMeansShard, ReferenceShard):
    """One shard's TypiClust state: k-means on unit embeddings, then each row's cluster
    and mean distance to its nearest neighbours in R (`spread`: low = typical)."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(out, block, start, device, unit=True)
        self.labeled = unit_rows(out.labeled_embeddings, out.embeddings.shape[1])
        self.cluster = np.full(self.n, -1, np.int64)  # host, final labels
        self.center_d2 = np.zeros(self.n)  # squared distance to the own centroid
        self.spread = np.zeros(self.n)  # mean distance to the k nearest R rows of the cluster
        self.k = 0

    def info(self) -> tuple[int, int]:
        """(pool rows here, labeled embeddings: every shard holds the whole labeled set)."""
        return self.n, len(self.labeled)

    def _nearest_center(self, x: Array, x_sqn: Array, c: tuple[Array, Array]) -> tuple[
            np.ndarray, np.ndarray]:
        """Each row's nearest center in float64 (ties: smaller index) and its squared distance."""
        d = sq_dists(self.arrays, x, x_sqn, *c)
        return self.arrays.host(d.argmin(1)), self.arrays.host(self.arrays.xp.amin(d, 1))

    def _centers(self, centers: np.ndarray) -> tuple[Array, Array]:
        return (self.arrays.put(np.ascontiguousarray(centers.T)),
                self.arrays.put(sq_norms(centers)))

    def _nearest_among(self, ch: slice, c: Centers, mask: Array) -> tuple[
            np.ndarray, np.ndarray]:
        """Per row of `ch`, its nearest center among the pairs in `mask` [rows, k] by exact
        distance (ties: smaller index) and that squared distance (host; a row with no pair:
        0 and inf). Only the masked pairs are measured and held, never rows x k."""
        arrays, k = self.arrays, len(c.c_sqn)
        flat = arrays.nonzero(mask.reshape(-1))
        d = [self.exact_pairs(part // k + ch.start, c, part % k) for part in batches(flat)]
        flat = arrays.host(flat)
        d2 = arrays.host(arrays.xp.concatenate(d)) if d else np.empty(0)
        row, col = flat // k, flat % k
        first = smallest_per_group(row, d2, col, np.ones(mask.shape[0], np.int64))
        labels, dist = np.zeros(mask.shape[0], np.int64), np.full(mask.shape[0], np.inf)
        labels[row[first]], dist[row[first]] = col[first], d2[first]
        return labels, dist

    def assign_final(self, centers: np.ndarray, ref_ids: np.ndarray) -> tuple[
            np.ndarray, np.ndarray, np.ndarray]:
        """Label rows by their nearest final centroid in float64 (ties: smaller index):
        the float32 screen keeps each row's centroids within its error of the nearest,
        and their exact distances decide (pool rows per cluster, the R rows this shard
        holds: their ids and labels)."""
        self.k, c, xp = len(centers), Centers.of(self.arrays, centers), self.arrays.xp

        def chunk(span: slice) -> None:
            ch = slice(span.start, min(span.stop, self.n))
            if ch.start >= ch.stop:
                return
            s, err = self.screen(ch, c)
            if err is None:
                mask = s == s
            else:
                low = self.arrays.cast(xp.amin(s, 1), self.arrays.f64) + 2.0 * err
                mask = s <= self.arrays.ceil32(low)[:, None]
            self.cluster[ch], self.center_d2[ch] = self._nearest_among(ch, c, mask)

        self.arrays.map(chunk, self.rows)
        mine = np.flatnonzero(np.isin(self.ids[: self.n], ref_ids))
        return (np.bincount(self.cluster, minlength=self.k), self.ids[mine],
                self.cluster[mine])

    def labeled_counts(self, centers: np.ndarray) -> np.ndarray:
        """Labeled embeddings per nearest final centroid (same float64 rule as the pool)."""
        n_lab, c = len(self.labeled), self._centers(centers)
        if n_lab == 0:
            return np.zeros(len(centers), np.int64)
        rows = self.arrays.padded_rows(n_lab)
        lab = pad_rows(self.labeled, rows, 0.0)
        x, x_sqn = self.arrays.put(lab), self.arrays.put(sq_norms(lab))
        parts = self.arrays.map(lambda ch: self._nearest_center(x[ch], x_sqn[ch], c)[0], rows)
        return np.bincount(np.concatenate(parts)[:n_lab], minlength=len(centers))

    def typicality(self, ref_x: np.ndarray, ref_ids: np.ndarray, ref_labels: np.ndarray,
                   depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's mean distance to its k = min(K_NN, m - 1) nearest R rows of its own
        cluster (itself excluded), then this shard's `depth` best rows per cluster. One
        cluster at a time: its rows are measured against its R rows only."""
        by = np.lexsort((ref_ids, ref_labels))  # R grouped by cluster
        rx, rid, rlab = ref_x[by], ref_ids[by], ref_labels[by]
        lo = np.searchsorted(rlab, np.arange(self.k))
        hi = np.searchsorted(rlab, np.arange(self.k), "right")
        order = np.argsort(self.cluster, kind="stable")  # this shard's rows by cluster
        starts = np.searchsorted(self.cluster[order], np.arange(self.k + 1))
        for c in range(self.k):
            rows = order[starts[c]:starts[c + 1]]
            k = min(K_NN, int(hi[c] - lo[c]) - 1)
            if k <= 0:  # under two R rows in the cluster: distance to its centroid
                self.spread[rows] = np.sqrt(self.center_d2[rows])
            elif len(rows):
                self.spread[rows] = self._spread(rows, rx[lo[c]:hi[c]], rid[lo[c]:hi[c]], k)
        return self.best_typical(np.full(self.k, depth, np.int64))

    def _spread(self, rows: np.ndarray, rx: np.ndarray, rid: np.ndarray, k: int) -> np.ndarray:
        """Mean distance of each of `rows` to its k nearest of R rows `rx` (ids `rid`, the
        row itself excluded), every pair measured (`fixed_sq_dists`)."""
        arrays = self.arrays
        r = fixed_rows(arrays, arrays.put(rx))
        r_sqn, rt = (r * r).sum(1), r.T
        piece = max(1, PAIR_PIECE // len(rid))
        total = np.zeros(len(rows))
        for i in range(0, len(rows), piece):
            at = rows[i:i + piece]
            d = arrays.host(fixed_sq_dists(fixed_rows(arrays, self.x[arrays.put(at)]), rt, r_sqn))
            d[self.ids[at][:, None] == rid[None, :]] = np.inf  # itself
            near = np.sort(np.partition(d, k - 1, axis=1)[:, :k], axis=1)
            for j in range(k):  # one fixed order of additions per row
                total[i:i + piece] += np.sqrt(near[:, j])
        return total / k

    def best_typical(self, depths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per cluster c, its depths[c] rows of smallest (spread, id): (clusters, spreads, ids)."""
        ids = self.ids[: self.n]
        top = smallest_per_group(self.cluster, self.spread, ids, depths)
        return self.cluster[top], self.spread[top], ids[top]


class TypiClustShardLike(KMeansShardLike, Protocol):
    """What `typiclust_select` calls on a shard (or a wrapped Ray actor handle)."""

    def info(self) -> tuple[int, int]: ...


def seed_centers(shards: Sequence[Any], k: int, seed: int, chosen: list[Candidate]) -> None:
    """Extend the k-means++ seeding `chosen` to k centers (greedy_select, resumable)."""
    for step in range(len(chosen), k):
        chosen.append(merge(gather(shards, "step", chosen[-1] if chosen else None, seed, step)))


class Queues:
    """Per cluster, its rows by (spread, id) as exactly known: the merge of every shard's
    `depth[c]` best holds the global `depth[c]` best, no more (`pop` asks deeper)."""

    def __init__(self, shards: Sequence[Any], first: list[Any], sizes: np.ndarray) -> None:
        self.shards, self.sizes = shards, sizes
        self.depth = np.full(len(sizes), DEPTH, np.int64)
        self.ids: list[np.ndarray] = [np.empty(0, np.int64)] * len(sizes)
        self.taken = np.zeros(len(sizes), np.int64)
        self._merge(first, np.arange(len(sizes)))

    def _merge(self, parts: list[Any], clusters: np.ndarray) -> None:
        lab, spread, ids = (np.concatenate(p) for p in zip(*parts))
        top = smallest_per_group(lab, spread, ids, self.depth)
        lab, ids = lab[top], ids[top]
        for c in clusters:
            self.ids[c] = ids[lab == c]

    def pop(self, c: int) -> int:
        if self.taken[c] >= len(self.ids[c]):
            self.depth[c] *= 4
            want = np.where(np.arange(len(self.sizes)) == c, self.depth, 0)
            self._merge(gather(self.shards, "best_typical", want), np.array([c]))
        self.taken[c] += 1
        return int(self.ids[c][self.taken[c] - 1])


def typiclust_select(shards: Sequence[Any], budget: int, seed: int) -> np.ndarray:
    """The driver: k-means++ seeding and Lloyd on the shards, final labels, R's typicality,
    then b picks from the least-covered cluster."""
    if budget <= 0:
        return np.empty(0, np.int64)
    chosen: list[Candidate] = []
    seed_centers(shards, min(budget, MAX_CLUSTERS), seed, chosen)  # K >= this, known or not
    infos = gather(shards, "info")
    n, n_labeled = sum(i[0] for i in infos), infos[0][1]
    if budget > n:
        raise ValueError(f"budget {budget} exceeds the pool's {n} rows")
    seed_centers(shards, min(n_labeled + budget, MAX_CLUSTERS, n), seed, chosen)
    centers, _ = lloyd(shards, np.stack([c.payload[0] for c in chosen]))
    ref_ids, ref_x = reference_sample(shards, seed)
    parts = gather(shards, "assign_final", centers, ref_ids)
    sizes = np.sum([p[0] for p in parts], axis=0)
    owned = dict(zip(np.concatenate([p[1] for p in parts]).tolist(),
                     np.concatenate([p[2] for p in parts]).tolist()))
    ref_labels = np.array([owned[i] for i in ref_ids.tolist()], np.int64)
    count = gather(shards[:1], "labeled_counts", centers)[0].astype(np.int64)
    queues = Queues(shards, gather(shards, "typicality", ref_x, ref_ids, ref_labels, DEPTH),
                    sizes)
    left = sizes.copy()
    picks = []
    index = np.arange(len(sizes))
    for _ in range(budget):
        open_ = left > 0
        big = open_ & (sizes >= MIN_CLUSTER_SIZE)
        cand = index[big if big.any() else open_]
        c = int(cand[np.lexsort((cand, -sizes[cand], count[cand]))[0]])
        picks.append(queues.pop(c))
        count[c] += 1
        left[c] -= 1
    return np.array(picks, dtype=np.int64)


register_set("typiclust", {"embeddings", "labeled_embeddings"}, TypiClustShard,
             typiclust_select,
             "TypiClust: the most typical sample of the least-labeled k-means cluster "
             "(Hacohen et al., low budgets).")
