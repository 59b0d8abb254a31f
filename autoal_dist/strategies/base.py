"""The strategy registry and the selection rules every strategy shares.

Two kinds (DESIGN.md):
- *scoring*: a per-sample score, higher = query first. The top-b is exact under
  sharding by merging per-shard top-b, because order is (score desc, id asc).
- *set*: the selection needs a global view (k-center, k-means, BADGE seeding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from autoal_dist.outputs import NEEDS, OPTIONAL_NEEDS, PoolOutputs

ScoreFn = Callable[[PoolOutputs, int], np.ndarray]  # (outputs, seed) -> float64 [n]
SetFn = Callable[[PoolOutputs, int, int], np.ndarray]  # (outputs, budget, seed) -> ids


@dataclass(frozen=True)
class Strategy:
    name: str
    kind: Literal["scoring", "set"]
    needs: frozenset[str]
    fn: Callable
    doc: str = ""

    def score(self, outputs: PoolOutputs, seed: int = 0) -> np.ndarray:
        if self.kind != "scoring":
            raise TypeError(f"strategy {self.name!r} selects sets; it has no per-sample score")
        return np.asarray(self.fn(outputs, seed), dtype=np.float64)

    def select(self, outputs: PoolOutputs, budget: int, seed: int = 0) -> np.ndarray:
        missing = [k for k in sorted(self.needs - OPTIONAL_NEEDS) if getattr(outputs, k) is None]
        if missing:
            raise ValueError(f"strategy {self.name!r} needs {missing} in PoolOutputs")
        budget = min(int(budget), len(outputs))
        if budget <= 0:
            return np.empty(0, dtype=np.int64)
        if self.kind == "scoring":
            return top_b(outputs.ids, self.score(outputs, seed), budget)
        return np.asarray(self.fn(outputs, budget, seed), dtype=np.int64)


STRATEGIES: dict[str, Strategy] = {}


def register(name: str, kind: Literal["scoring", "set"], needs: set[str]):
    """Decorator: add a pure function to the registry under `name`."""
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown needs {unknown}; allowed: {sorted(NEEDS)}")

    def deco(fn: Callable) -> Callable:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} registered twice")
        STRATEGIES[name] = Strategy(name, kind, frozenset(needs), fn, (fn.__doc__ or "").strip())
        return fn

    return deco


def top_b(ids: np.ndarray, scores: np.ndarray, budget: int) -> np.ndarray:
    """The `budget` ids with the highest score; ties by smallest id. Exact and total order."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    order = np.lexsort((ids, -scores))
    return np.asarray(ids, dtype=np.int64)[order[:budget]]


def merge_top_b(parts: list[tuple[np.ndarray, np.ndarray]], budget: int) -> np.ndarray:
    """Merge per-shard (ids, scores) top-b lists into the global top-b (same order rule)."""
    ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
    scores = np.concatenate([p[1] for p in parts]) if parts else np.empty(0)
    return top_b(ids, scores, budget)


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
