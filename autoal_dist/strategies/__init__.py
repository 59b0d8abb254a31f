"""Query strategies: pure functions over PoolOutputs, one registry, no Ray.

    >>> from autoal_dist.strategies import select, STRATEGIES
    >>> ids = select("entropy", outputs, budget=10, seed=0)
"""
from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import (  # noqa: F401  (importing them registers them)
    badge,
    kcenter,
    kmeans,
    probcover,
    typiclust,
    uncertainty,
)
from autoal_dist.strategies.base import (
    STRATEGIES,
    ScoringStrategy,
    SetStrategy,
    Strategy,
    get,
    merge_top_b,
    needs_of,
    select,
    top_b,
    top_b_scored,
)

__all__ = [
    "PoolOutputs", "STRATEGIES", "ScoringStrategy", "SetStrategy", "Strategy", "get",
    "merge_top_b", "needs_of", "select", "top_b",
    "top_b_scored",
]
