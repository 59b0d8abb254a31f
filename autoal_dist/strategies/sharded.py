"""Shard-exact building blocks shared by the set-selecting strategies.

kcenter, badge and kmeans are written as per-shard state objects plus a small
driver loop; the single-process path is the same driver over one shard, so a
run with one Ray actor per shard (DESIGN.md) selects the same ids bit for bit,
whatever the number of shards. Three rules make that hold:

1. Per-row arithmetic runs on blocks of `BLOCK` rows aligned to global row
   positions, so every matmul sees the same operands and shapes under any
   sharding. Hence **every shard must start at a multiple of the block size**
   (`shard_slices` splits that way; the shards check it).
2. Randomness is a pure function of (seed, step, id) (a counter-based hash), and
   D^2 sampling is an exponential race: argmin_i E_i / D^2_i with E_i ~ Exp(1)
   picks i with probability D^2_i / sum D^2. The key is per-sample, so a
   per-shard argmin and a global min are exact; a cumulative sum would not be
   (its rounding depends on where the shards split).
3. Every choice follows a total order: smallest (key, id) wins.

Shard objects here are plain numpy (no Ray). The drivers only call the methods
named in `GreedyShardLike`, passing vectors, so Ray actor handles wrapped to
look the same can stand in for them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

import numpy as np

from autoal_dist.strategies.base import BLOCK
from autoal_dist.strategies.uncertainty import _splitmix64, hashed_uniform



def shard_slices(n: int, n_shards: int, block: int = BLOCK) -> list[slice]:
    """Split rows [0, n) into `n_shards` contiguous ranges starting on block boundaries.

    Trailing shards are empty when there are fewer blocks than shards.
    """
    n_blocks = -(-n // block)
    cuts = [min(n, (n_blocks * i // n_shards) * block) for i in range(n_shards + 1)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def row_blocks(n: int, block: int) -> list[slice]:
    """The block-sized row ranges of a shard (globally aligned when the shard is)."""
    return [slice(i, min(i + block, n)) for i in range(0, n, block)]


def check_start(start: int, block: int) -> None:
    """Refuse a shard whose blocks would not line up with the global ones (rule 1)."""
    if start % block:
        raise ValueError(f"shard starts at row {start}, not a multiple of the block size {block}")


def sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared norms along the last axis, float64; each row's value depends only on that row."""
    return np.einsum("...j,...j->...", x, x, dtype=np.float64)


def sq_dists(x: np.ndarray, x_sqn: np.ndarray, c: np.ndarray) -> np.ndarray:
    """||x_i - c_j||^2 via |x|^2 + |c|^2 - 2 x.c (one BLAS product), clipped at 0.

    c [k, D] gives [len(x), k]; a single center c [D] gives [len(x)] through a
    matrix-vector product (~3x faster than a one-column matmul). Call it on one
    block of rows at a time: memory is block x k, never N x k.
    """
    d = x @ c.T
    d *= -2.0
    d += x_sqn.reshape((-1,) + (1,) * (c.ndim - 1))
    d += sq_norms(c)
    return np.maximum(d, 0.0, out=d)


def stream_seed(seed: int, step: int) -> int:
    """A 64-bit seed per (seed, step), so each step draws an independent hash stream."""
    h = _splitmix64(np.array([seed], dtype=np.uint64))
    return int(_splitmix64(h ^ np.uint64(step))[0])


def exp_keys(ids: np.ndarray, seed: int, step: int) -> np.ndarray:
    """E_i = -log(1 - U_i) ~ Exp(1), a pure function of (seed, step, id)."""
    return -np.log1p(-hashed_uniform(ids, stream_seed(seed, step)))


def d2_race_keys(ids: np.ndarray, min_d2: np.ndarray, seed: int, step: int) -> np.ndarray:
    """Keys whose argmin samples a row with probability proportional to min_d2.

    E_i / D^2_i ~ Exp(rate D^2_i), and the smallest of independent exponentials is
    i with probability D^2_i / sum_j D^2_j. Rows at D^2 = 0 get +inf (never chosen
    while any row has D^2 > 0).
    """
    e = exp_keys(ids, seed, step)
    with np.errstate(divide="ignore"):
        return np.where(min_d2 > 0, e / min_d2, np.inf)


def argmin_smallest_id(keys: np.ndarray, ids: np.ndarray) -> int:
    """Position of the smallest key; among equal keys, of the smallest id."""
    tied = np.flatnonzero(keys == keys.min())
    return int(tied[np.argmin(ids[tied])])


@dataclass(frozen=True)
class Candidate:
    """A shard's proposal for the next center: smaller (key, id) wins.

    `payload` is the center's vector(s) that every shard needs in add_center.
    """

    key: float
    id: int
    payload: tuple[np.ndarray, ...]


def merge(candidates: Iterable[Candidate | None]) -> Candidate:
    """The global winner among per-shard proposals (None = shard has no free rows)."""
    return min((c for c in candidates if c is not None), key=lambda c: (c.key, c.id))


class GreedyShardLike(Protocol):
    """What `greedy_select` calls on a shard (or on a wrapped Ray actor handle)."""

    def best(self, seed: int, step: int) -> Candidate | None: ...

    def add_center(self, center_id: int, payload: tuple[np.ndarray, ...]) -> None: ...


class GreedyShard(ABC):
    """One shard's state through a greedy center selection.

    Keeps each row's squared distance to its nearest chosen center (`min_d2`) and
    which rows were chosen (`taken`; rounding makes a center's self-distance only
    nearly 0, so taken rows are masked explicitly). Subclasses define the distance
    (`_block_d2`), the center's vectors (`_payload`) and the selection key (`_keys`).
    """

    def __init__(self, ids: np.ndarray, block: int, start: int) -> None:
        check_start(start, block)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.block = block
        self.min_d2 = np.full(len(self.ids), np.inf)
        self.taken = np.zeros(len(self.ids), dtype=bool)
        self.seeded = False  # True once min_d2 holds a distance to some center

    def best(self, seed: int, step: int) -> Candidate | None:
        """This shard's proposal for center number `step`; None when all rows are taken."""
        free = np.flatnonzero(~self.taken)
        if free.size == 0:
            return None
        keys = self._keys(seed, step)[free]
        i = argmin_smallest_id(keys, self.ids[free])
        row = int(free[i])
        return Candidate(float(keys[i]), int(self.ids[row]), self._payload(row))

    def add_center(self, center_id: int, payload: tuple[np.ndarray, ...]) -> None:
        """Fold a chosen center into min_d2 block by block; mark it taken if it is ours."""
        for sl in row_blocks(len(self.ids), self.block):
            np.minimum(self.min_d2[sl], self._block_d2(sl, *payload), out=self.min_d2[sl])
        self.taken[self.ids == center_id] = True
        self.seeded = True

    @abstractmethod
    def _keys(self, seed: int, step: int) -> np.ndarray:
        """Per-row selection keys (smaller = better) for this step."""

    @abstractmethod
    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        """The vectors other shards need to measure distances to row `row`."""

    @abstractmethod
    def _block_d2(self, rows: slice, *payload: np.ndarray) -> np.ndarray:
        """Squared distances of the rows in `rows` (one block) to the center in `payload`."""


def greedy_select(shards: Sequence[GreedyShardLike], budget: int, seed: int) -> list[Candidate]:
    """The driver: `budget` steps of (gather proposals, take the global best, broadcast it)."""
    chosen: list[Candidate] = []
    for step in range(budget):
        best = merge(s.best(seed, step) for s in shards)
        for s in shards:
            s.add_center(best.id, best.payload)
        chosen.append(best)
    return chosen


def greedy_ids(shards: Sequence[GreedyShardLike], budget: int, seed: int) -> np.ndarray:
    """The driver of kcenter and BADGE: the greedy run's ids in selection order."""
    return np.array([c.id for c in greedy_select(shards, budget, seed)], dtype=np.int64)


class EmbeddingShard(GreedyShard):
    """A greedy shard in Euclidean embedding space (kcenter, the k-means++ seeding).

    Embeddings are held as float64 so near-equal distances compare the same way
    on every shard, and their squared norms are computed once.
    """

    def __init__(self, ids: np.ndarray, embeddings: np.ndarray, block: int, start: int) -> None:
        super().__init__(ids, block, start)
        self.x = np.ascontiguousarray(embeddings, dtype=np.float64)
        self.x_sqn = sq_norms(self.x)

    def _payload(self, row: int) -> tuple[np.ndarray, ...]:
        return (self.x[row].copy(),)

    def _block_d2(self, rows: slice, *payload: np.ndarray) -> np.ndarray:
        return sq_dists(self.x[rows], self.x_sqn[rows], payload[0])
