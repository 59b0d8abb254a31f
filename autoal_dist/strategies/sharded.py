"""Shard-exact building blocks shared by the set-selecting strategies.

kcenter, badge and kmeans are written as per-shard state objects plus a small
driver loop; the single-process path is the same driver over one shard, so a
run with one Ray actor per shard (docs/set-strategies.md) selects the same ids bit for bit,
whatever the number of shards. Three rules make that hold:

1. Products run on blocks of `block` rows aligned to global row positions,
   each block one product of the same shape under any sharding (`arrays.py`),
   and every other per-row operation is elementwise. Hence **every shard must
   start at a multiple of the block size** (`shard_slices` splits that way; the
   shards check it). The greedy steps' distances need no blocks: a float32
   product screens the rows, and the float64 distance of each row it keeps is a
   per-row sum in one fixed order (`screen.py`).
2. Randomness is a pure function of (seed, step, id) (a counter-based hash), and
   D^2 sampling is an exponential race: argmin_i E_i / D^2_i with E_i ~ Exp(1)
   picks i with probability D^2_i / sum D^2. The key is per-sample, so a
   per-shard argmin and a global min are exact; a cumulative sum would not be
   (its rounding depends on where the shards split).
3. Every choice follows a total order: smallest (key, id) wins.

Shards keep their arrays on their device (`arrays.py`: numpy on CPU, torch on
CUDA) and talk to the driver in host numpy. The drivers only call the methods
named in `GreedyShardLike` (through `gather`), passing vectors, so Ray actor
handles wrapped to look the same can stand in for them. A greedy step is one
call per shard: `step` folds the previous step's center in, then proposes.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Protocol

import numpy as np

from autoal_dist.seeds import hashed_uniform, splitmix64_int
from autoal_dist.strategies.arrays import CHUNK_ROWS, Array, Backend, backend_for, pad_rows
from autoal_dist.strategies.base import BLOCK
from autoal_dist.strategies.screen import (
    DENSE,
    SLACK,
    U32,
    batches,
    dot_bound,
    exact_sq_dists,
    runs,
    screenable,
    underflow,
)

FIXED_BITS = 25  # unit rows' exact distances: between the rows rounded to multiples of 2^-25
PAD_ID = np.iinfo(np.int64).max  # id of the padding rows a backend adds (never selected)
LABELED_BLOCK = 1024  # labeled embeddings per product when seeding k-center


def shard_slices(n: int, n_shards: int, block: int = BLOCK) -> list[slice]:
    """Split rows [0, n) into `n_shards` contiguous ranges starting on block boundaries.

    Trailing shards are empty when there are fewer blocks than shards.
    """
    n_blocks = -(-n // block)
    cuts = [min(n, (n_blocks * i // n_shards) * block) for i in range(n_shards + 1)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def check_start(start: int, block: int) -> None:
    """Refuse a shard whose blocks would not line up with the global ones (rule 1)."""
    if start % block:
        raise ValueError(f"shard starts at row {start}, not a multiple of the block size {block}")


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared norms along the last axis, float64, on the host: each row's value depends
    only on that row, and is the same whatever device the shard computes on."""
    return np.einsum("...j,...j->...", x, x, dtype=np.float64)


def row_sq_norms(x: np.ndarray) -> np.ndarray:
    """`sq_norms` of the rows of a 2-d array of any float dtype, through float64 copies of
    CHUNK_ROWS rows at a time (float64 rows: no copy; the bits of sq_norms on the whole
    float64 array)."""
    out = np.empty(len(x), np.float64)
    for i in range(0, len(x), CHUNK_ROWS):
        out[i : i + CHUNK_ROWS] = sq_norms(x[i : i + CHUNK_ROWS].astype(np.float64, copy=False))
    return out


def to_unit(x: np.ndarray) -> np.ndarray:
    """x (float64) with its rows scaled to unit L2 norm in place, zero rows kept: a per-row
    function, so no sharding changes a bit."""
    norm = np.sqrt(sq_norms(x))
    x /= np.where(norm > 0, norm, 1.0)[:, None]
    return x


def unit_rows32(x: np.ndarray, rows: int | None = None) -> np.ndarray:
    """x's rows scaled to unit L2 norm in float64 and rounded to float32 (zero rows stay
    zero; zero rows appended up to `rows`), CHUNK_ROWS rows at a time. Rounded so that
    the unit rows are exact in float32: the screens and Lloyd read them without a float64
    copy (half the memory of float64 unit rows, and every step's exact rows come from the
    array its GEMV keeps in cache). A per-row function: no sharding changes a bit."""
    out = np.zeros((len(x) if rows is None else rows, x.shape[1]), np.float32)
    for i in range(0, len(x), CHUNK_ROWS):
        part = x[i : i + CHUNK_ROWS]
        out[i : i + len(part)] = to_unit(part.astype(np.float64))
    return out


def fixed_rows(arrays: Backend, x: Array) -> Array:
    """Unit rows (float32 values) as float64 integers: x rounded to multiples of
    2^-FIXED_BITS, scaled by 2^FIXED_BITS (exact: a power of two). The exact distances of
    unit rows are those of these rows (`fixed_sq_dists`)."""
    f = arrays.cast(x, arrays.f64) * 2.0**FIXED_BITS
    return arrays.xp.round(f, out=f)


def fixed_sq_dists(x: Array, rt: Array, r_sqn: Any, x_sqn: Array | None = None) -> Array:
    """[len(x), len(r)] squared distances between fixed-point unit rows x and r (`rt` = r^T,
    or one row r [D]; `r_sqn` their squared norms; `x_sqn` x's, computed when None), exact,
    rescaled from units of 2^-2 FIXED_BITS to the unit rows' scale.

    Every entry of x and r is an integer of magnitude <= 2^25 (+ rounding) and every row's
    norm about 2^25, so every product and every partial sum of a dot product is an integer
    of magnitude <= |x_i| |r_j| < 2^51 (Cauchy-Schwarz): exactly representable, so the
    GEMM's result is exact whatever its summation order, blocking, library or device;
    |x_i|^2 + |r_j|^2 - 2 x_i.r_j < 2^53 is exact too. TypiClust's typicality and its
    seeding's exact distances thus run at BLAS speed with bits no sharding changes (the
    float64 distances of the unrounded rows, summed in one fixed order, cost ~1 us a
    pair)."""
    d = x @ rt
    d *= -2.0
    x_sqn = (x * x).sum(1) if x_sqn is None else x_sqn
    d += x_sqn.reshape((-1,) + (1,) * (rt.ndim - 1))
    d += r_sqn
    d *= 2.0 ** (-2 * FIXED_BITS)
    return d


def exact_dtype(x: np.ndarray) -> Any:
    """float32 where it holds x's values exactly (a model's outputs), else float64."""
    return np.float32 if np.can_cast(x.dtype, np.float32, "safe") else np.float64


def sq_dists(arrays: Backend, x: Array, x_sqn: Array, c: Array, c_sqn: Any) -> Array:
    """||x_i - c_j||^2 via |x|^2 + |c|^2 - 2 x.c (one product per block), clipped at 0.

    c [D, k] with norms c_sqn [k] gives [len(x), k]; a single center c [D] (norm a
    float) gives [len(x)] through a matrix-vector product. Called on one chunk of
    rows at a time: memory is chunk x k, never N x k.
    """
    d = arrays.block_matmul(x, c)
    d *= -2.0
    d += x_sqn.reshape((-1,) + (1,) * (c.ndim - 1))
    d += c_sqn
    return arrays.xp.clip(d, 0.0, None, out=d)


def stream_seed(seed: int, step: int) -> int:
    """A 64-bit seed per (seed, step), so each step draws an independent hash stream."""
    return splitmix64_int(splitmix64_int(seed) ^ int(np.uint64(step)))


def exp_keys(ids: np.ndarray, seed: int, step: int) -> np.ndarray:
    """E_i = -log(1 - U_i) ~ Exp(1), a pure function of (seed, step, id) (in place: every
    greedy step draws one per row)."""
    e = hashed_uniform(ids, stream_seed(seed, step))
    np.negative(e, out=e)
    np.log1p(e, out=e)
    return np.negative(e, out=e)


def race(xp: Any, e: Array, min_d2: Array) -> Array:
    """E_i / D^2_i, +inf where D^2 = 0 (never chosen while any row has D^2 > 0)."""
    with np.errstate(divide="ignore"):
        return xp.where(min_d2 > 0, e / min_d2, float("inf"))


def d2_race_keys(ids: np.ndarray, min_d2: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Keys whose argmin samples a row with probability proportional to min_d2.

    E_i / D^2_i ~ Exp(rate D^2_i), and the smallest of independent exponentials is
    i with probability D^2_i / sum_j D^2_j.
    """
    return race(np, exp_keys(ids, seed, step), min_d2)


@dataclass(frozen=True)
class Candidate:
    """A shard's proposal for the next center: smaller (key, id) wins.

    `payload` is the center's vector(s) (host numpy) that every shard needs in add_center.
    """

    key: float
    id: int
    payload: tuple[np.ndarray, ...]


def merge(candidates: Iterable[Candidate | None]) -> Candidate:
    """The global winner among per-shard proposals (None = shard has no free rows)."""
    return min((c for c in candidates if c is not None), key=lambda c: (c.key, c.id))


def gather(shards: Sequence[Any], method: str, *args: Any) -> list[Any]:
    """`method(*args)` on every shard, in shard order.

    Shards that can start a call without waiting for it (`call_async`: Ray proxies)
    all start before any result is awaited, so remote shards compute concurrently
    and a driver step costs one round trip, not one per shard.
    """
    waits = [s.call_async(method, *args) if hasattr(type(s), "call_async")
             else partial(getattr(s, method), *args) for s in shards]
    return [wait() for wait in waits]


class GreedyShardLike(Protocol):
    """What `greedy_select` calls on a shard (or on a wrapped Ray actor handle)."""

    def step(self, center: Candidate | None, seed: int, step: int) -> Candidate | None: ...


class GreedyShard(ABC):
    """One shard's state through a greedy center selection.

    Keeps each row's squared distance to its nearest chosen center (`min_d2`) and
    which rows were chosen (`taken`; rounding makes a center's self-distance only
    nearly 0, so taken rows are masked explicitly; padding rows start taken).
    A step works on the whole shard at once: its temporaries are per row.
    Subclasses define the distance (`_lower_d2`, `_exact_d2`), the center's vectors
    (`_payload`, `_prepare`) and the selection key (`_keys`).
    """

    def __init__(self, ids: np.ndarray, block: int, start: int, device: str) -> None:
        check_start(start, block)
        self.arrays = backend_for(device, block)
        self.n = len(ids)
        self.rows = self.arrays.padded_rows(self.n)
        self.all = slice(0, self.rows)
        self.ids = pad_rows(np.asarray(ids, dtype=np.int64), self.rows, PAD_ID)  # host
        self.d2 = self.arrays.full(self.rows, np.inf, self.arrays.f64)
        self.taken = self.arrays.put(np.arange(self.rows) >= self.n)
        self.seeded = False  # True once d2 holds a distance to some center
        self._by_id: np.ndarray | None = None  # rows by id, and the sorted ids (`row_of`)
        self._sorted_ids = np.empty(0, np.int64)

    @property
    def min_d2(self) -> np.ndarray:
        """Each row's squared distance to its nearest center, on the host."""
        return self.arrays.host(self.d2[: self.n])

    def step(self, center: Candidate | None, seed: int, step: int) -> Candidate | None:
        """Fold the previous step's winner in (if any), then propose center number `step`."""
        if center is not None:
            self.add_center(center.id, center.payload)
        return self.best(seed, step)

    def best(self, seed: int, step: int) -> Candidate | None:
        """This shard's proposal for center number `step`: its smallest (key, id) among
        free rows, None when all rows are taken."""
        if self.n == 0:
            return None
        keys = self._keys(self.all, seed, step)
        keys[self.taken] = float("inf")
        return self._best_of(keys)

    def _best_of(self, keys: Array) -> Candidate | None:
        """The free row of smallest (key, id), given every row's key (inf where taken)."""
        m = keys.min()
        tied = keys == m
        if not m < float("inf"):
            tied &= ~self.taken
        rows = self.arrays.flatnonzero(tied)
        if rows.size == 0:
            return None
        row = int(rows[np.argmin(self.ids[rows])])
        return Candidate(float(m), int(self.ids[row]), self._payload(row))

    def add_center(self, center_id: int, payload: tuple[np.ndarray, ...]) -> None:
        """Fold a chosen center into min_d2; mark it taken if it is ours. Only the rows
        the screen cannot rule out get their exact distance (`screen.py`)."""
        center = self._prepare(payload)
        xp = self.arrays.xp

        def fold(span: slice) -> None:
            ch = slice(span.start, min(span.stop, self.n))  # padding rows: never selected
            if ch.start >= ch.stop:
                return
            low = self._lower_d2(ch, *center)
            near = None if low is None else self.arrays.nonzero(low < self.d2[ch])
            # recomputing a row the screen ruled out changes nothing: its distance >= d2
            dense = near is None or len(near) * DENSE > ch.stop - ch.start
            for rows in runs(ch) if dense else batches(near + ch.start):
                self.d2[rows] = xp.minimum(self.d2[rows], self._exact_d2(rows, *center))

        self.arrays.map(fold, self.rows, spans=True)
        row = self.row_of(center_id)
        if row is not None:
            self.taken[row] = True
        self.seeded = True

    def row_of(self, center_id: int) -> int | None:
        """The first of this shard's rows holding `center_id` (None: none), by a binary
        search in the ids sorted once (a step would otherwise compare every row)."""
        if self._by_id is None:
            self._by_id = np.argsort(self.ids[: self.n], kind="stable")  # stable: first row first
            self._sorted_ids = self.ids[: self.n][self._by_id]
        at = int(np.searchsorted(self._sorted_ids, center_id))
        if at < self.n and self._sorted_ids[at] == center_id:
            return int(self._by_id[at])
        return None

    def uniform_keys(self, ch: slice, seed: int) -> Array:
        """A uniform pick (smallest hash key for the seed): the first center without a rule."""
        return self.arrays.put(hashed_uniform(self.ids[ch], seed))

    def race_keys(self, ch: slice, seed: int, step: int) -> Array:
        """D^2 sampling's keys for the rows (rule 2)."""
        return race(self.arrays.xp, self.arrays.put(exp_keys(self.ids[ch], seed, step)),
                    self.d2[ch])

    @abstractmethod
    def _keys(self, ch: slice, seed: int, step: int) -> Array:
        """Per-row selection keys of the rows `ch` (smaller = better), a fresh array."""

    @abstractmethod
    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        """The vectors (host float64) other shards need to measure distances to row `row`."""

    @abstractmethod
    def _prepare(self, payload: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        """A payload on this shard's device, with what every row reuses (its norms)."""

    @abstractmethod
    def _lower_d2(self, ch: slice, *center: Any) -> Array | None:
        """Per row of `ch`, a float64 lower bound on its exact distance to the prepared
        center (from float32 products); None where no bound holds (every row is then exact)."""

    @abstractmethod
    def _exact_d2(self, rows: Any, *center: Any) -> Array:
        """The float64 squared distances of rows `rows` (indices or a slice) to the
        prepared center."""


def greedy_select(shards: Sequence[GreedyShardLike], budget: int, seed: int) -> list[Candidate]:
    """The driver: `budget` steps of (each shard folds the last winner in and proposes;
    take the global best). One call per shard per step."""
    chosen: list[Candidate] = []
    for step in range(budget):
        chosen.append(merge(gather(shards, "step", chosen[-1] if chosen else None, seed, step)))
    return chosen


def greedy_ids(shards: Sequence[GreedyShardLike], budget: int, seed: int) -> np.ndarray:
    """The driver of kcenter and BADGE: the greedy run's ids in selection order."""
    return np.array([c.id for c in greedy_select(shards, budget, seed)], dtype=np.int64)


@dataclass(frozen=True)
class Centers:
    """Many centers (or reference rows) on a shard's device: float64 rows (exact), float32
    columns and |c|^2 / 2 (the screen), and the bounds' largest norms."""

    c: Array  # [k, D] float64
    c_sqn: Array  # [k] float64
    c32: Array  # [D, k] float32
    half32: Array  # [k] float32
    norm_max: float
    sqn_max: float

    @classmethod
    def of(cls, arrays: Backend, c: np.ndarray) -> Centers:
        """`c` [k, D] (float64, host) on the backend's device."""
        c_sqn = sq_norms(c)
        top = float(c_sqn.max()) if len(c_sqn) else 0.0
        return cls(arrays.put(c), arrays.put(c_sqn),
                   arrays.put(np.ascontiguousarray(c.T, dtype=np.float32)),
                   arrays.put((0.5 * c_sqn).astype(np.float32)), float(np.sqrt(top)), top)


class EmbeddingShard(GreedyShard):
    """A greedy shard in Euclidean embedding space (kcenter, the k-means++ seeding).

    Distances are float64, so near-equal ones keep their order (a float32 distance
    would round ~10^3 at ~10^-4); the embeddings are held once, as float32 where that
    is exact (a model's outputs) and as float64 otherwise, with a float32 copy then for
    the screening products; `unit` rows (TypiClust's, ProbCover's) are rounded to
    float32 (`unit_rows32`), and their exact distances are those of the rows rounded to
    multiples of 2^-FIXED_BITS: a float64 GEMV on the gathered rows, exact in any order
    (`fixed_sq_dists`), where the fixed-order float64 sums cost ~1 us a row. Squared norms
    are computed once, on the host.
    """

    def __init__(self, ids: np.ndarray, embeddings: np.ndarray, block: int, start: int,
                 device: str, unit: bool = False) -> None:
        super().__init__(ids, block, start, device)
        x = (unit_rows32(embeddings, self.rows) if unit
             else pad_rows(embeddings, self.rows, 0.0, exact_dtype(embeddings)))
        x_sqn = row_sq_norms(x)
        self.x_sqn = self.arrays.put(x_sqn)
        self.x = self.arrays.put(x)
        # the float32 embeddings of the screen's and Lloyd's products
        f32 = self.arrays.f32
        self.x32 = self.x if self.x.dtype == f32 else self.arrays.cast(self.x, f32)
        # the screen's per-row terms: |x|^2 less the rounding slack, |x| times the bound
        # on the error of -2 x.c, and the largest norm
        kappa = 2.0 * dot_bound(x.shape[1], self.arrays.f32_unit)
        self.x_norm_max = float(np.sqrt(x_sqn.max())) if len(x_sqn) else 0.0
        self.screened = math.isfinite(kappa)
        self.x_sqn_lo = self.arrays.put(x_sqn * (1.0 - SLACK))
        self.x_norm_k = self.arrays.put(np.sqrt(x_sqn) * (kappa if self.screened else 0.0))
        self.unit = unit  # exact distances: fixed-point (`fixed_sq_dists`)

    @cached_property
    def fixed_sqn(self) -> Array:
        """The fixed-point unit rows' squared norms (`fixed_rows`; exact integers)."""
        parts = [self.arrays.host((f * f).sum(1)) for f in (
            fixed_rows(self.arrays, self.x[i : i + CHUNK_ROWS])
            for i in range(0, self.rows, CHUNK_ROWS))]
        return self.arrays.put(np.concatenate(parts) if parts else np.zeros(0))

    def fixed_slack(self, c_norm: float) -> float:
        """How far a fixed-point distance can lie below the float32 rows' exact one: rounding
        moves each row by at most eta = sqrt(D) 2^-(FIXED_BITS + 1), so a distance d by at
        most 2 eta, and d^2 by 2 eta (2 d + 2 eta) <= 4 eta (|x| + |c|) + 4 eta^2 (x2 to
        spare)."""
        eta = math.sqrt(self.x.shape[1]) * 2.0 ** -(FIXED_BITS + 1)
        return 2.0 * (4.0 * eta * (self.x_norm_max + c_norm) + 4.0 * eta * eta)

    def rows64(self, rows: Any) -> Array:
        """Rows of the embeddings in float64 (their exact values)."""
        return self.arrays.cast(self.x[rows], self.arrays.f64)

    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        return (self.arrays.host(self.x[row]).astype(np.float64),)

    def _prepare(self, payload: tuple[np.ndarray, ...]) -> tuple[Any, ...]:
        c = np.asarray(payload[0], dtype=np.float64)
        c_sqn = float(sq_norms(c))
        cf, cf_sqn = None, 0.0
        if self.unit:
            cf = fixed_rows(self.arrays, self.arrays.put(c))
            cf_sqn = float((cf * cf).sum())
        return (self.arrays.put(c), self.arrays.put(c.astype(np.float32)), c_sqn,
                math.sqrt(c_sqn), cf, cf_sqn)

    def _lower_d2(self, ch: slice, c: Array, c32: Array, c_sqn: float,
                  c_norm: float, cf: Array | None, cf_sqn: float) -> Array | None:
        if not (self.screened and screenable(self.x_norm_max, c_norm)):
            return None
        low = self.arrays.cast(self.x32[ch] @ c32, self.arrays.f64)  # the floor: one GEMV
        low *= -2.0
        low += self.x_sqn_lo[ch]
        low -= self.x_norm_k[ch] * c_norm
        low += c_sqn * (1.0 - SLACK) - 2.0 * underflow(self.x.shape[1], self.x_norm_max,
                                                         c_norm)
        if self.unit:
            low -= self.fixed_slack(c_norm)
        return low

    def _exact_d2(self, rows: Any, c: Array, c32: Array, c_sqn: float,
                  c_norm: float, cf: Array | None, cf_sqn: float) -> Array:
        if cf is None:
            return exact_sq_dists(self.arrays.xp, self.x[rows], self.x_sqn[rows], c, c_sqn)
        return fixed_sq_dists(fixed_rows(self.arrays, self.x[rows]), cf, cf_sqn,
                              self.fixed_sqn[rows])

    def screen(self, ch: slice, centers: Centers) -> tuple[Array, Array | None]:
        """s = |c|^2 / 2 - x.c [rows, k] in float32 (so d = |x|^2 + 2 s) for the rows `ch`,
        and per row a bound err with |s - exact s| <= err, the float64 roundings of the
        exact distance and of thresholds made from s included; None where none holds."""
        xp = self.arrays.xp
        s = self.x32[ch] @ centers.c32
        s = xp.subtract(centers.half32, s, out=s)
        if not (self.screened and screenable(self.x_norm_max, centers.norm_max)):
            return s, None
        err = self.x_norm_k[ch] * (centers.norm_max / 2.0)  # kappa |x| |c|
        err += self.x_sqn[ch] * SLACK
        err += (2.0 * U32 + SLACK) * centers.sqn_max + underflow(
            self.x.shape[1], self.x_norm_max, centers.norm_max)
        return s, err

    def exact_pairs(self, rows: Array, centers: Centers, cols: Array) -> Array:
        """The float64 squared distances of rows `rows` to centers `cols`, pair by pair."""
        return exact_sq_dists(self.arrays.xp, self.x[rows], self.x_sqn[rows], centers.c[cols],
                              centers.c_sqn[cols])
