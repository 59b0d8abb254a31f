"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022, "Active learning through
a covering lens").

At low budgets, cover the data: a sample covers the points within delta of it, and the
greedy max-coverage pick (the row covering the most still-uncovered points; ties:
smallest id) is taken b times. Points within delta of a labeled sample start covered.
Once everything is covered (or nothing left covers anything) the rest of the budget
follows the seed's hashed-uniform order, so the budget is always met.

Coverage is counted on the reference sample R of `typiclust.py` (the at most REF_MAX
pool rows of smallest hashed key; the whole pool when it is that small, which makes
this the paper's all-pairs algorithm), on L2-normalized embeddings.

delta, as in the paper: cluster R by k-means into C (classes) clusters; a row of R is
pure when its delta-ball (within R) holds only rows of its own cluster; take the largest
delta with purity >= ALPHA. Purity only changes where delta crosses a row's distance to
its nearest row of another cluster, so rather than a grid of candidates, `purity_delta`
finds the exact interval of deltas that qualify and takes delta halfway into the gap
below its top end.

Shards keep each row's count of uncovered R rows within delta. A step sends the R rows
its winner newly covered; shards re-measure their rows against only the tiles of R
(TILE columns, cut once) holding them, the same products that made the counts, so a
count is always exactly the uncovered R rows in the row's ball, in any sharding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies.arrays import Array, pad_rows
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.kmeans import KMeansShard, lloyd
from autoal_dist.strategies.sharded import (
    BLOCK,
    LABELED_BLOCK,
    Candidate,
    EmbeddingShard,
    gather,
    greedy_select,
    merge,
    sq_dists,
    sq_norms,
    stream_seed,
)
from autoal_dist.strategies.typiclust import ReferenceShard, reference_sample, unit_rows

ALPHA = 0.95  # purity the radius delta must keep
TILE = 32  # R's rows per tile: coverage is measured tile by tile, the same products each time
TIE_STREAM = (1 << 40) + 1  # hash stream ordering rows that cover nothing new
REF_BLOCK = 256  # block of the driver's in-process k-means over R
DRIVER_ROWS = 1024  # R rows per product when the driver measures R against itself


def pairwise_d2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 in float64 on the host, clipped at 0 (the driver's own products)."""
    d = a @ b.T
    d *= -2.0
    d += sq_norms(a)[:, None]
    d += sq_norms(b)[None, :]
    return np.clip(d, 0.0, None, out=d)


def purity_delta(ids: np.ndarray, x: np.ndarray, classes: int,
                 seed: int) -> tuple[float, np.ndarray]:
    """(delta^2, cluster labels of R): about the largest delta whose balls are pure for at
    least ALPHA of R's rows, R clustered by k-means into `classes` clusters.

    A row is pure while delta < d_o, its distance to the nearest row of another cluster.
    With q = ceil(ALPHA |R|) and d_q the q-th largest d_o, purity >= ALPHA holds exactly
    for delta < d_q, and no d_o lies between d_q and the next smaller one, d_p: every delta
    in [d_p, d_q) is as pure. delta is halfway between the two, so no rounding of a
    distance near d_q can flip a ball (inf when R is one cluster: one ball covers all)."""
    n, k = len(ids), max(1, min(classes, len(ids)))
    out = PoolOutputs(ids, np.zeros((n, 1), np.float32), x)
    shard = KMeansShard(out, block=REF_BLOCK)
    seeds = greedy_select([shard], k, seed)
    centers, _ = lloyd([shard], np.stack([c.payload[0] for c in seeds]))
    labels = pairwise_d2(x, centers).argmin(1)
    other = np.empty(n)
    for i in range(0, n, DRIVER_ROWS):
        d = pairwise_d2(x[i:i + DRIVER_ROWS], x)
        d[labels[i:i + DRIVER_ROWS, None] == labels[None, :]] = np.inf
        other[i:i + DRIVER_ROWS] = d.min(1)
    other = np.sort(other)
    q = math.ceil(ALPHA * n - 1e-9)
    top = float(other[n - q])  # d_q^2
    if not math.isfinite(top):
        return math.inf, labels
    below = other[other < top]
    low = float(below[-1]) if below.size else 0.0  # d_p^2
    delta = (math.sqrt(low) + math.sqrt(top)) / 2
    return min(delta * delta, float(np.nextafter(top, -np.inf))) if top > 0 else 0.0, labels


class ProbCoverShard(EmbeddingShard, ReferenceShard):
    """One shard's ProbCover state: unit embeddings, R's tiles, and per row the number of
    uncovered R rows within delta (`counts`)."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(out.ids, unit_rows(out.embeddings), block, start, device)
        self.labeled = unit_rows(out.labeled_embeddings, out.embeddings.shape[1])
        self.classes = out.num_classes
        self.counts = self.arrays.full(self.rows, 0, self.arrays.i64)
        self.tiles: Any = None
        self.tiles_sqn: Any = None
        self.delta2 = 0.0
        self.tie: Any = None

    def info(self) -> tuple[int, int, int]:
        """(pool rows here, labeled embeddings, classes)."""
        return self.n, len(self.labeled), self.classes

    def labeled_cover(self, ref_x: np.ndarray, delta2: float) -> np.ndarray:
        """Which R rows lie within delta of a labeled embedding."""
        covered = np.zeros(len(ref_x), bool)
        if len(self.labeled) == 0:
            return covered
        rows = self.arrays.padded_rows(len(ref_x))
        r = pad_rows(ref_x, rows, 0.0)
        x, x_sqn = self.arrays.put(r), self.arrays.put(sq_norms(r))
        for i in range(0, len(self.labeled), LABELED_BLOCK):
            part = self.labeled[i:i + LABELED_BLOCK]
            c = self.arrays.put(np.ascontiguousarray(part.T)), self.arrays.put(sq_norms(part))

            def nearest(ch: slice, c: tuple[Array, Array] = c) -> np.ndarray:
                d = sq_dists(self.arrays, x[ch], x_sqn[ch], *c)
                return self.arrays.host(self.arrays.xp.amin(d, 1))

            covered |= np.concatenate(self.arrays.map(nearest, rows))[: len(ref_x)] <= delta2
        return covered

    def _within(self, ch: slice, tile: int) -> Array:
        """[chunk, TILE]: whether each row's ball holds each R row of the tile."""
        d = sq_dists(self.arrays, self.x[ch], self.x_sqn[ch], self.tiles[tile],
                     self.tiles_sqn[tile])
        return d <= self.delta2

    def cover_init(self, tiles: np.ndarray, delta2: float, uncovered: np.ndarray,
                   seed: int) -> None:
        """Hold R as tiles [n_tiles, D, TILE] and count each row's uncovered R rows in reach."""
        self.tiles = self.arrays.put(tiles)
        self.tiles_sqn = self.arrays.put(sq_norms(np.swapaxes(tiles, 1, 2)))
        self.delta2 = delta2
        self.tie = self.arrays.put(hashed_uniform(self.ids, stream_seed(seed, TIE_STREAM)))
        open_ = self.arrays.put(uncovered)

        def chunk(ch: slice) -> None:
            for t in np.flatnonzero(uncovered.any(1)):
                self.counts[ch] += (self._within(ch, int(t)) & open_[int(t)]).sum(1)

        self.arrays.map(chunk, self.rows)

    def add_center(self, center_id: int, payload: tuple[np.ndarray, ...]) -> None:
        """Fold a winner in (`step`): its payload is the flat positions in R it newly
        covered; each row loses those within its reach, measured on the same tiles."""
        tiles, cols = np.divmod(payload[0], TILE)
        hits = []
        for t in np.unique(tiles):
            mask = np.zeros(TILE, bool)
            mask[cols[tiles == t]] = True
            hits.append((int(t), self.arrays.put(mask)))

        def fold(ch: slice) -> None:
            for t, hit in hits:
                self.counts[ch] -= (self._within(ch, t) & hit).sum(1)

        if hits:
            self.arrays.map(fold, self.rows)
        mine = np.flatnonzero(self.ids[: self.n] == center_id)
        if mine.size:
            self.taken[int(mine[0])] = True

    def _keys(self, ch: slice, seed: int, step: int) -> Array:
        """-count (most newly covered first); rows covering nothing: their hash in [0, 1)."""
        c = self.counts[ch]
        return self.arrays.xp.where(c > 0, -self.arrays.cast(c, self.arrays.f64), self.tie[ch])


def tiles_of(x: np.ndarray) -> np.ndarray:
    """R's rows as zero-padded column tiles [n_tiles, D, TILE] (each contiguous)."""
    n_tiles = -(-len(x) // TILE)
    padded = pad_rows(x, n_tiles * TILE, 0.0)
    return np.ascontiguousarray(padded.reshape(n_tiles, TILE, -1).transpose(0, 2, 1))


def probcover_select(shards: Sequence[Any], budget: int, seed: int) -> np.ndarray:
    """The driver: R, delta, the labeled set's cover, then b greedy max-coverage steps."""
    if budget <= 0:
        return np.empty(0, np.int64)
    infos = gather(shards, "info")
    n, classes = sum(i[0] for i in infos), infos[0][2]
    if budget > n:
        raise ValueError(f"budget {budget} exceeds the pool's {n} rows")
    ids, x = reference_sample(shards, seed)
    delta2, labels = purity_delta(ids, x, classes, seed)
    by = np.lexsort((np.arange(len(ids)), labels))  # R by cluster: a ball touches few tiles
    x = x[by]
    covered = np.array(gather(shards[:1], "labeled_cover", x, delta2)[0])  # writable
    uncovered = pad_rows(~covered, -(-len(x) // TILE) * TILE, False).reshape(-1, TILE)
    gather(shards, "cover_init", tiles_of(x), delta2, uncovered, seed)
    r_sqn = sq_norms(x)
    picks: list[int] = []
    update: Candidate | None = None
    for step in range(budget):
        win = merge(gather(shards, "step", update, seed, step))
        picks.append(win.id)
        w = win.payload[0]
        d2 = np.clip(r_sqn + float(sq_norms(w)) - 2.0 * (x @ w), 0.0, None)
        new = np.flatnonzero((d2 <= delta2) & ~covered) if win.key < 0 else np.empty(0, int)
        covered[new] = True
        update = Candidate(win.key, win.id, (new,))  # what the shards fold in
    return np.array(picks, dtype=np.int64)


register_set("probcover", {"embeddings", "labeled_embeddings", "probs"}, ProbCoverShard,
             probcover_select,
             "ProbCover: greedy max coverage of delta-balls, delta from k-means purity "
             "(Yehuda et al., low budgets).")
