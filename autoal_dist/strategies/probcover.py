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
its winner newly covered; shards measure their rows against only those rows. Whether a
pair is within delta is decided the same way every time: a float32 product screens the
pair (`screen.py`), and only a pair whose bound straddles delta gets its float64
distance, a function of the two rows alone; so a count is always exactly the uncovered
R rows in the row's ball, in any sharding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies.arrays import Array, pad_rows
from autoal_dist.strategies.base import register_set
from autoal_dist.strategies.kmeans import KMeansShard, lloyd
from autoal_dist.strategies.screen import batches, runs
from autoal_dist.strategies.sharded import (
    BLOCK,
    LABELED_BLOCK,
    Candidate,
    Centers,
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
TIE_STREAM = (1 << 40) + 1  # hash stream ordering rows that cover nothing new
REF_BLOCK = 256  # block of the driver's in-process k-means over R
DRIVER_ROWS = 1024  # R rows per product when the driver measures R against itself
PIECE = 1 << 22  # row x R-row pairs screened per product (16 MiB of float32)
PAIRS_MAX = 1 << 24  # within-delta pairs a shard keeps (int32 pairs, 128 MiB); beyond, each
# step measures again


def pairwise_d2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 in float64 on the host, clipped at 0 (the driver's own products)."""
    d = a @ b.T
    d *= -2.0
    d += sq_norms(a)[:, None]
    d += sq_norms(b)[None, :]
    return np.clip(d, 0.0, None, out=d)


def nearest_other(shard: KMeansShard, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each row of x (the shard's rows)'s squared distance to its nearest row of another
    cluster (inf: none), in float64: a float32 screen keeps the pairs within its error of a
    row's smallest, and their float64 distances decide."""
    n, ref = len(x), Centers.of(shard.arrays, x)
    other = np.full(n, np.inf)
    for i in range(0, n, DRIVER_ROWS):
        ch = slice(i, min(i + DRIVER_ROWS, n))
        s, err = shard.screen(ch, ref)
        s[labels[ch, None] == labels[None, :]] = np.inf
        keep = s < np.inf
        if err is not None:
            keep &= s <= shard.arrays.ceil32(s.min(1).astype(np.float64) + 2.0 * err)[:, None]
        for part in batches(np.flatnonzero(keep)):
            rows, cols = part // n + i, part % n
            np.minimum.at(other, rows, shard.exact_pairs(rows, ref, cols))
    return other


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
    other = np.sort(nearest_other(shard, x, labels))
    q = math.ceil(ALPHA * n - 1e-9)
    top = float(other[n - q])  # d_q^2
    if not math.isfinite(top):
        return math.inf, labels
    below = other[other < top]
    low = float(below[-1]) if below.size else 0.0  # d_p^2
    delta = (math.sqrt(low) + math.sqrt(top)) / 2
    return min(delta * delta, float(np.nextafter(top, -np.inf))) if top > 0 else 0.0, labels


@dataclass(frozen=True)
class Balls:
    """A shard's within-delta pairs (its part of ProbCover's graph, as in the paper's code),
    indexed both ways: pool rows by R row (what a newly covered R row takes from the
    counts) and R rows by pool row (what a winner covers)."""

    ref_ptr: np.ndarray  # [|R| + 1]
    rows: np.ndarray  # pool rows, by R row
    row_ptr: np.ndarray  # [shard rows + 1]
    refs: np.ndarray  # R rows, by pool row

    @classmethod
    def of(cls, rows: np.ndarray, refs: np.ndarray, n_rows: int, n_ref: int) -> Balls:
        by_ref, by_row = np.argsort(refs, kind="stable"), np.lexsort((refs, rows))
        return cls(np.searchsorted(refs[by_ref], np.arange(n_ref + 1)), rows[by_ref],
                   np.searchsorted(rows[by_row], np.arange(n_rows + 1)), refs[by_row])

    def rows_of(self, refs: np.ndarray) -> np.ndarray:
        return np.concatenate([self.rows[self.ref_ptr[j]:self.ref_ptr[j + 1]] for j in refs])

    def refs_of(self, row: int) -> np.ndarray:
        return self.refs[self.row_ptr[row]:self.row_ptr[row + 1]]


class ProbCoverShard(EmbeddingShard, ReferenceShard):
    """One shard's ProbCover state: unit embeddings, R, the within-delta pairs (`Balls`,
    while they fit in PAIRS_MAX) and per row the number of uncovered R rows within delta
    (`counts`)."""

    def __init__(self, out: PoolOutputs, block: int = BLOCK, start: int = 0,
                 device: str = "cpu") -> None:
        super().__init__(out.ids, out.embeddings, block, start, device, unit=True)
        self.labeled = unit_rows(out.labeled_embeddings, out.embeddings.shape[1])
        self.classes = out.num_classes
        self.counts = self.arrays.full(self.rows, 0, self.arrays.i64)
        self.ref = np.zeros((0, self.x.shape[1]))  # R, host float64
        self.ref_centers: Centers | None = None
        self.balls: Balls | None = None
        self.delta2 = 0.0
        self.tie: Any = None
        self.keys: Any = None  # `_keys` of every row, inf where taken, kept up to date (best)

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

    def _reach(self, ch: slice, ref: Centers, open_: Array | None = None) -> Array:
        """The pairs (rows of `ch`, rows of `ref`: those `open_`) within delta, as flat
        positions in [len(ch), len(ref)]: sure by the screen, or by the float64 distance
        where the screen's bound straddles delta."""
        arrays = self.arrays
        s, err = self.screen(ch, ref)
        t = (self.delta2 - self.x_sqn[ch]) / 2.0  # within: s <= t
        if err is None:
            sure, maybe = s != s, s == s  # every pair exact (NaN: neither)
        else:  # floor32(t - err) <= ceil32(t + err): sure implies s <= the upper bound
            sure = s <= arrays.floor32(t - err)[:, None]
            maybe = (s <= arrays.ceil32(t + err)[:, None]) ^ sure
        if open_ is not None:
            sure &= open_
            maybe &= open_
        pairs = [arrays.nonzero(sure.reshape(-1))]
        k = len(ref.c_sqn)
        for part in batches(arrays.nonzero(maybe.reshape(-1))):
            within = self.exact_pairs(part // k + ch.start, ref, part % k) <= self.delta2
            pairs.append(part[within])
        return arrays.xp.concatenate(pairs) if len(pairs) > 1 else pairs[0]

    def _fold(self, ref: Centers, open_: Array | None, sign: int,
              keep: bool = False) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """counts += sign * (rows of `ref`, those `open_`, within each row's reach), one
        product per run of rows (PIECE values at most: the screen's products may take any
        shape). With `keep`, also the pairs themselves (host: rows, R rows), or None where
        a span's do not fit in its share of PAIRS_MAX."""
        k = len(ref.c_sqn)
        size, spans = max(1, PIECE // max(1, k)), self.arrays.spans(self.rows)
        share = PAIRS_MAX // max(1, len(spans))

        def span(ch: slice) -> list[tuple[np.ndarray, np.ndarray]] | None:
            kept: list[tuple[np.ndarray, np.ndarray]] | None = [] if keep else None
            total = 0
            for part in runs(slice(ch.start, min(ch.stop, self.n)), size):
                flat = self._reach(part, ref, open_)
                rows = flat // k
                self.counts[part] += sign * self.arrays.xp.bincount(
                    rows, minlength=part.stop - part.start)
                total += len(flat)
                if kept is not None and total <= share:
                    kept.append((self.arrays.host(rows + part.start).astype(np.int32),
                                 self.arrays.host(flat % k).astype(np.int32)))
                else:
                    kept = None
            return kept

        found = self.arrays.map(span, self.rows, spans=True)
        if not keep or any(f is None for f in found):
            return None
        return [p for f in found if f is not None for p in f]

    def cover_init(self, ref_x: np.ndarray, delta2: float, uncovered: np.ndarray,
                   seed: int) -> None:
        """Hold R, count each row's uncovered R rows in reach, and keep those pairs."""
        self.ref, self.delta2 = ref_x, delta2
        self.ref_centers = Centers.of(self.arrays, ref_x)
        self.tie = self.arrays.put(hashed_uniform(self.ids, stream_seed(seed, TIE_STREAM)))
        self.keys = None
        open_ = None if bool(uncovered.all()) else self.arrays.put(uncovered)  # all: no mask
        pairs = self._fold(self.ref_centers, open_, 1, keep=True)
        if pairs is not None:
            empty = np.empty(0, np.int32)
            rows, refs = (np.concatenate([p[i] for p in pairs] or [empty]) for i in (0, 1))
            self.balls = Balls.of(rows, refs, self.rows, len(ref_x))

    def add_center(self, center_id: int, payload: tuple[np.ndarray, ...]) -> None:
        """Fold a winner in (`step`): its payload is the positions in R it newly covered;
        each row loses those within its reach."""
        new = payload[0]
        if len(new) and self.balls is not None:
            lost = np.bincount(self.balls.rows_of(new), minlength=self.rows)
            self.counts -= self.arrays.put(lost)
            if self.keys is not None:  # the rows whose count changed get their key again
                at = self.arrays.put(np.flatnonzero(lost))
                self.keys[at] = self._keys(at, 0, 0)
                self.keys[at[self.taken[at]]] = float("inf")
        elif len(new):
            self._fold(Centers.of(self.arrays, self.ref[new]), None, -1)
            self.keys = None
        row = self.row_of(center_id)
        if row is not None:
            self.taken[row] = True
            if self.keys is not None:
                self.keys[row] = float("inf")

    def best(self, seed: int, step: int) -> Candidate | None:
        """`GreedyShard.best` on keys kept from step to step: a step changes the counts of
        the few rows within reach of the R rows it covered (`add_center`), and a key is a
        function of the row's count and hash alone."""
        if self.n == 0:
            return None
        if self.keys is None:
            self.keys = self._keys(self.all, seed, step)
            self.keys[self.taken] = float("inf")
        return self._best_of(self.keys)

    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        """The R rows within the row's reach (the driver keeps those still uncovered)."""
        if self.balls is not None:
            return (self.balls.refs_of(row),)
        assert self.ref_centers is not None
        return (np.sort(self.arrays.host(self._reach(slice(row, row + 1), self.ref_centers))),)

    def _keys(self, ch: Any, seed: int, step: int) -> Array:
        """-count (most newly covered first); rows covering nothing: their hash in [0, 1)
        (rows `ch`: a slice or indices; the same whatever the seed and step)."""
        c = self.counts[ch]
        return self.arrays.xp.where(c > 0, -self.arrays.cast(c, self.arrays.f64), self.tie[ch])


def probcover_select(shards: Sequence[Any], budget: int, seed: int) -> np.ndarray:
    """The driver: R, delta, the labeled set's cover, then b greedy max-coverage steps."""
    if budget <= 0:
        return np.empty(0, np.int64)
    infos = gather(shards, "info")
    n, classes = sum(i[0] for i in infos), infos[0][2]
    if budget > n:
        raise ValueError(f"budget {budget} exceeds the pool's {n} rows")
    ids, x = reference_sample(shards, seed)
    delta2, _ = purity_delta(ids, x, classes, seed)
    covered = np.array(gather(shards[:1], "labeled_cover", x, delta2)[0])  # writable
    gather(shards, "cover_init", x, delta2, ~covered, seed)
    picks: list[int] = []
    update: Candidate | None = None
    for step in range(budget):
        win = merge(gather(shards, "step", update, seed, step))
        picks.append(win.id)
        reach = win.payload[0]  # the R rows within the winner's reach
        new = reach[~covered[reach]] if win.key < 0 else np.empty(0, int)
        covered[new] = True
        update = Candidate(win.key, win.id, (new,))  # what the shards fold in
    return np.array(picks, dtype=np.int64)


register_set("probcover", {"embeddings", "labeled_embeddings", "probs"}, ProbCoverShard,
             probcover_select,
             "ProbCover: greedy max coverage of delta-balls, delta from k-means purity "
             "(Yehuda et al., low budgets).")
