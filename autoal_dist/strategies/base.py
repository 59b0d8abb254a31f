"""The strategy registry and the selection rules every strategy shares.

Two types (docs/design.md): `ScoringStrategy` (a per-sample score; the sharded top-b is
exact) and `SetStrategy` (per-shard state plus a driver loop over the shards, `sharded.py`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from autoal_dist.outputs import NEEDS, OPTIONAL_NEEDS, PoolOutputs

ScoreFn = Callable[[PoolOutputs, int], np.ndarray]  # (outputs, seed) -> float64 [n]
ShardFactory = Callable[..., Any]  # (outputs, block, start, device=...) -> shard state
Driver = Callable[[Sequence[Any], int, int], np.ndarray]  # (shards, budget, seed) -> ids

# Rows per block for set strategies; shard boundaries must fall on multiples of it.
# Callers that shard (the scorers) pass their own alignment unit instead.
BLOCK = 4096
# A scoring strategy's float64 temporaries per call, about (it scores a shard in row blocks
# of this many bytes of its inputs: entropy over a 300k x 200 shard at once held ~1.5 GB).
SCORE_BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: what it needs from the pass, and its selection."""

    name: str
    needs: frozenset[str]
    doc: str
    kind: ClassVar[Literal["scoring", "set"]]

    def check_inputs(self, outputs: PoolOutputs) -> None:
        """A clear error, not a NoneType one deep in the math, when a declared input is absent."""
        missing = [k for k in sorted(self.needs - OPTIONAL_NEEDS) if getattr(outputs, k) is None]
        if missing:
            raise ValueError(f"strategy {self.name!r} needs {missing} in PoolOutputs")

    def select(self, outputs: PoolOutputs, budget: int, seed: int = 0,
               block: int = BLOCK, device: str = "cpu") -> np.ndarray:
        """The ids to query (a set strategy computes on `device`: see `arrays.py`)."""
        self.check_inputs(outputs)
        budget = min(int(budget), len(outputs))
        if budget <= 0:
            return np.empty(0, dtype=np.int64)
        return self._select(outputs, budget, seed, block, device)

    def _select(self, outputs: PoolOutputs, budget: int, seed: int, block: int,
                device: str) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class ScoringStrategy(Strategy):
    """A per-sample score, higher = query first: the sharded top-b is exact by merging each
    shard's top-b, because the order (score desc, id asc) is total."""

    score_fn: ScoreFn
    kind: ClassVar[Literal["scoring", "set"]] = "scoring"

    def score(self, outputs: PoolOutputs, seed: int = 0) -> np.ndarray:
        """Per-sample scores, computed in row blocks (`score_rows`): a score is a function
        of its own row (what makes the sharded top-b exact), so blocks change no bit."""
        self.check_inputs(outputs)
        n, step = len(outputs), score_rows(outputs)
        if n <= step:
            return np.asarray(self.score_fn(outputs, seed), dtype=np.float64)
        scores = np.empty(n, np.float64)
        for lo in range(0, n, step):
            scores[lo:lo + step] = self.score_fn(outputs.take(slice(lo, lo + step)), seed)
        return scores

    def _select(self, outputs: PoolOutputs, budget: int, seed: int, block: int,
                device: str) -> np.ndarray:
        return top_b(outputs.ids, self.score(outputs, seed), budget)


@dataclass(frozen=True)
class SetStrategy(Strategy):
    """The selection needs a global view (k-center, k-means, BADGE seeding): `make_shard`
    builds one shard's state, `drive` loops over shards (`sharded.py`). The single-process
    selection is `drive` over one shard, the distributed one over many, so the two cannot
    diverge."""

    make_shard: ShardFactory
    drive: Driver
    kind: ClassVar[Literal["scoring", "set"]] = "set"

    def _select(self, outputs: PoolOutputs, budget: int, seed: int, block: int,
                device: str) -> np.ndarray:
        return np.asarray(self.drive([self.make_shard(outputs, block, 0, device=device)], budget,
                                     seed), dtype=np.int64)


STRATEGIES: dict[str, Strategy] = {}


def _add(strategy: Strategy) -> None:
    unknown = strategy.needs - NEEDS
    if unknown:
        raise ValueError(f"unknown needs {unknown}; allowed: {sorted(NEEDS)}")
    if strategy.name in STRATEGIES:
        raise ValueError(f"strategy {strategy.name!r} registered twice")
    STRATEGIES[strategy.name] = strategy


def register(name: str, needs: set[str]):
    """Decorator: a scoring function (outputs, seed) -> per-sample scores, higher first."""

    def deco(fn: ScoreFn) -> ScoreFn:
        _add(ScoringStrategy(name, frozenset(needs), (fn.__doc__ or "").strip(), fn))
        return fn

    return deco


def register_set(name: str, needs: set[str], make_shard: ShardFactory, drive: Driver,
                 doc: str) -> None:
    """A set-selecting strategy: per-shard state + a driver over shards."""
    _add(SetStrategy(name, frozenset(needs), doc, make_shard, drive))


def score_rows(outputs: PoolOutputs) -> int:
    """Rows a scoring strategy scores at once: SCORE_BLOCK_BYTES of its inputs as float64
    (probabilities, embeddings, every MC sample's probabilities: those present), a multiple
    of 256 rows."""
    per_row = sum(int(np.prod(a.shape[1:] if a is not outputs.mc_probs else
                              (a.shape[0], *a.shape[2:])))
                  for a in (outputs.probs, outputs.embeddings, outputs.mc_probs)
                  if a is not None) * 8
    return max(256, SCORE_BLOCK_BYTES // max(1, per_row) // 256 * 256)


def top_b_scored(ids: np.ndarray, scores: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """The `budget` (ids, scores) with the highest score; ties by smallest id (a total order)."""
    scores = np.asarray(scores, dtype=np.float64)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.lexsort((ids, -scores))[:budget]
    return np.asarray(ids, dtype=np.int64)[order], scores[order]


def top_b(ids: np.ndarray, scores: np.ndarray, budget: int) -> np.ndarray:
    return top_b_scored(ids, scores, budget)[0]


def merge_top_b(parts: list[tuple[np.ndarray, np.ndarray]],
                budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-b (ids, scores) into the global top-b: exact, because the
    global top-b of a total order is contained in the union of the shards' top-b."""
    ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
    return top_b_scored(ids, scores, budget)


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(
            f"unknown strategy {name!r}; registered: {', '.join(sorted(STRATEGIES))}"
        ) from None


def select(name: str, outputs: PoolOutputs, budget: int, seed: int = 0) -> np.ndarray:
    """Public entry point: the ids `name` would query from `outputs`."""
    return get(name).select(outputs, budget, seed)


def needs_of(names: list[str]) -> frozenset[str]:
    """Union of what a set of strategies needs, so one pass computes exactly that."""
    out: set[str] = set()
    for n in names:
        out |= get(n).needs
    return frozenset(out)
