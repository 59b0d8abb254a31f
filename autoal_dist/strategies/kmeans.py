"""k-means sampling (DeepAL's KMeansSampling): cluster the pool's embeddings into
b clusters and query the sample nearest each centroid.

Lloyd's algorithm with k-means++ seeding (the exponential race of `sharded.py`,
first center uniform). It runs until a pass changes at most `TOL` of the labels
(an integer count, so the stop is exact under sharding), at most `MAX_ITER` passes.

Exact under sharding: cluster sums are accumulated in fixed point (int64, at a
resolution of 2^-24). Integer addition is associative, so every shard sends one
[k, D] partial per Lloyd pass, however it grouped its rows, and the total cannot
depend on where the shards split (or on the device's order of additions). Empty
clusters keep their previous centroid.

The assignment's product runs in float32 (a GEMM: float64 would cost 2x, and a
rounding of ~10^-4 on distances of ~10^3 only moves labels between near-equidistant
centroids, as in scikit-learn on float32 data); the seeding and the final
nearest-sample pick stay in float64 like kcenter.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.arrays import Array, Backend
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.screen import U32, batches
from autoal_dist.strategies.sharded import (
    BLOCK,
    Centers,
    EmbeddingShard,
    GreedyShardLike,
    gather,
    greedy_select,
    sq_norms,
)

MAX_ITER = 300
TOL = 1e-4  # converged: a pass changes at most this fraction of the labels
FIXED_POINT = 2.0**24  # sum resolution
MAX_ABS = 2.0**63 / FIXED_POINT / 2**20  # sums of 2^20 rows of |x| < 2^19 fit in int64
SUM_ROWS = 256  # rows converted to fixed point at a time for a fresh pass's cluster sums
Partial = tuple[np.ndarray, np.ndarray]  # (sums [k, D] int64 fixed point, counts [k] int64)


def fixed_point(arrays: Backend, x: Array) -> Array:
    """x as int64 multiples of 2^-24, refusing values whose sums could overflow."""
    if len(x) and max(float(x.max()), -float(x.min())) >= MAX_ABS:
        raise ValueError("k-means: embeddings too large for exact fixed-point sums")
    scaled = x * FIXED_POINT
    return arrays.cast(arrays.xp.round(scaled, out=scaled), arrays.i64)


def smallest_r(rows: np.ndarray, d: np.ndarray, ids: np.ndarray, k: int,
               width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row r < k of the (row, d, id) triples, its `width` smallest by (d, id): [k, width].

    An exact total order, so the result is the same however the triples were split,
    as long as each row's `width` smallest are among them.
    """
    order = np.lexsort((ids, d, rows))
    rows, d, ids = rows[order], d[order], ids[order]
    first = np.arange(len(rows)) - np.searchsorted(rows, rows) < width
    return d[first].reshape(k, width), ids[first].reshape(k, width)


class KMeansShard(EmbeddingShard):
    """One shard's k-means state: its embeddings, k-means++ seeding state, labels, and the
    fixed-point cluster sums of those labels (kept from pass to pass: a pass only moves
    the rows whose label changed, and integer sums are the same however they were added)."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu", unit: bool = False) -> None:
        super().__init__(out.ids, out.embeddings, block, start, device, unit)
        self.labels = self.arrays.full(self.rows, -1, self.arrays.i64)
        self.totals: Partial | None = None  # the current labels' (sums, counts), host

    def _keys(self, ch: slice, seed: int, step: int):
        if not self.seeded:
            return self.uniform_keys(ch, seed)  # first center: uniform (smallest hash key)
        return self.race_keys(ch, seed, step)

    def assign(self, centers: np.ndarray) -> tuple[int, Partial]:
        """Assign rows to their nearest center: (#labels changed, this shard's partial)."""
        arrays, k = self.arrays, len(centers)
        c32 = arrays.put(np.ascontiguousarray(centers.T, dtype=np.float32))
        half = arrays.put((0.5 * sq_norms(centers)).astype(np.float32))
        fresh = self.totals is None or len(self.totals[1]) != k  # sums of other labels

        def chunk(ch: slice) -> tuple[int, Array | None, Array | None]:
            d = arrays.block_matmul(self.x32[ch], c32)
            labels = arrays.xp.subtract(half, d, out=d).argmin(1)  # argmin |c|^2/2 - x.c
            v = max(0, min(ch.stop, self.n) - ch.start)  # rows that are not padding
            labels, mine = labels[:v], slice(ch.start, ch.start + v)
            moved = arrays.nonzero(labels != self.labels[mine])
            away = self.labels[mine][moved]  # the moved rows' previous labels
            self.labels[mine] = labels
            if fresh:
                return (len(moved), self.fixed_sums(mine.start, labels, k),
                        arrays.xp.bincount(labels, minlength=k))
            if len(moved) == 0:
                return 0, None, None
            x, to = self.fixed(moved + ch.start), labels[moved]
            return (len(moved), arrays.segment_sum(x, to, k) - arrays.segment_sum(x, away, k),
                    arrays.xp.bincount(to, minlength=k) - arrays.xp.bincount(away, minlength=k))

        parts = arrays.map(chunk, self.rows)
        if fresh or self.totals is None:
            self.totals = (np.zeros((k, centers.shape[1]), dtype=np.int64),
                           np.zeros(k, dtype=np.int64))
        sums, counts = self.totals
        for _, s, c in parts:
            if s is not None:
                sums += arrays.host(s)
                counts += arrays.host(c)
        return sum(p[0] for p in parts), (sums.copy(), counts.copy())

    def fixed_sums(self, start: int, labels: Array, k: int) -> Array:
        """[k, D] fixed-point sums per label of rows start, start + 1, ... (labels[i]: row
        start + i's), SUM_ROWS rows at a time: integer sums are the same in any grouping,
        and the pieces' temporaries stay small (a whole chunk's are chunk x D int64)."""
        sums = None
        for i in range(0, len(labels), SUM_ROWS):
            part = labels[i:i + SUM_ROWS]
            rows = slice(start + i, start + i + len(part))
            sums = self.arrays.segment_sum(self.fixed(rows), part, k, out=sums)
        return sums

    def fixed(self, rows: Any) -> Array:
        """Rows of the embeddings in fixed point (the exact cluster sums' terms)."""
        return fixed_point(self.arrays, self.rows64(rows))

    def nearest(self, centers: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Per center, this shard's r nearest rows: (d2 [k, r'], ids [k, r']) by (d2, id).

        Each chunk screens its rows in float32 and keeps, per center, the rows within the
        screen's bound of its r-th nearest there; of those, the ones that may be among the
        shard's r nearest get their float64 distances, which decide exactly."""
        arrays, k, xp = self.arrays, len(centers), self.arrays.xp
        c = Centers.of(arrays, centers)

        def chunk(ch: slice) -> tuple[np.ndarray, ...]:
            """(center, row, lo, hi) of the chunk's candidates, lo <= d / 2 <= hi."""
            s, err = self.screen(ch, c)
            h = xp.add(s, arrays.cast(self.x_sqn[ch] / 2.0, arrays.f32)[:, None], out=s)
            if err is None:
                e, mask = np.inf, h == h
            else:  # h = |x|^2 / 2 + s = d / 2, to within e
                e = float(xp.amax(err)) + 2.0 * U32 * (float(xp.amax(self.x_sqn[ch]))
                                                       + c.sqn_max)
                mask = h == h
                if ch.stop - ch.start > r:
                    kth = arrays.cast(arrays.kth_smallest(h.T, r)[:, 0], arrays.f64)
                    mask = h <= arrays.ceil32(kth + 2.0 * e)[None, :]
            flat = arrays.nonzero(mask.reshape(-1))
            hv = arrays.host(h.reshape(-1)[flat]).astype(np.float64)
            flat = arrays.host(flat)
            return flat % k, flat // k + ch.start, hv - e, hv + e

        parts = arrays.map(chunk, self.n) or [(np.empty(0, np.int64),) * 2 + (np.empty(0),) * 2]
        cols, rows, lo, hi = (np.concatenate(p) for p in zip(*parts))
        # a center's r-th smallest hi bounds its r-th nearest: keep what may lie below it
        order = np.lexsort((hi, cols))
        rank = np.arange(len(order)) - np.searchsorted(cols[order], cols[order])
        top = np.full(k, np.inf)
        top[cols[order[rank == r - 1]]] = hi[order[rank == r - 1]]
        keep = np.flatnonzero(lo <= top[cols])
        cols, rows = cols[keep], rows[keep]
        d = np.concatenate([arrays.host(self.exact_pairs(arrays.put(rows[b]), c,
                                                         arrays.put(cols[b])))
                            for b in batches(np.arange(len(keep)))] or [np.empty(0)])
        return smallest_r(cols, d, self.ids[rows], k, min(r, self.n))


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


def lloyd(shards: Sequence[KMeansShardLike], centers: np.ndarray, max_iter: int = MAX_ITER,
          tol: float = TOL) -> tuple[np.ndarray, list[int]]:
    """Lloyd passes until one changes at most `tol` of the labels, or `max_iter` passes.

    Returns the centers and the number of labels each pass changed: converged when
    the last count is <= tol * N (`converged`).
    """
    changes: list[int] = []
    while len(changes) < max_iter:
        results: list[tuple[int, Partial]] = gather(shards, "assign", centers)
        changes.append(sum(changed for changed, _ in results))
        centers = update_centers(centers, [partial for _, partial in results])
        if converged(changes, sum(int(p[1].sum()) for _, p in results), tol):
            break
    return centers, changes


def converged(changes: list[int], n: int, tol: float = TOL) -> bool:
    """Whether the last Lloyd pass changed at most `tol` of the `n` labels."""
    return bool(changes) and changes[-1] <= tol * n


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
    k, r = len(centers), 4
    while True:
        parts: list[Any] = gather(shards, "nearest", centers, r)
        rows = np.concatenate([np.repeat(np.arange(k), p[0].shape[1]) for p in parts])
        d = np.concatenate([p[0].ravel() for p in parts])
        ids = np.concatenate([p[1].ravel() for p in parts])
        _, best = smallest_r(rows, d, ids, k, min(r, len(ids) // max(k, 1)))
        picks = first_free(best)
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
