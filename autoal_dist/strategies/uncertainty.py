"""Uncertainty strategies: pure numpy, PoolOutputs in, per-sample scores out.

Higher score = query first. Scores are float64 so ranking does not depend on
float32 rounding of intermediate sums.
"""
from __future__ import annotations

import numpy as np

from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies.base import register

_EPS = 1e-12


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    p = p.astype(np.float64)
    return -(p * np.log(p + _EPS)).sum(axis=axis)


@register("random", needs=set())
def random_score(out: PoolOutputs, seed: int) -> np.ndarray:
    """Uniform random order, a pure function of (seed, id) so sharding cannot change it."""
    return hashed_uniform(out.ids, seed)


@register("least_confidence", needs={"probs"})
def least_confidence(out: PoolOutputs, seed: int) -> np.ndarray:
    """1 - max_c p(c|x)."""
    return 1.0 - out.probs.max(axis=1).astype(np.float64)


@register("var_ratio", needs={"probs"})
def var_ratio(out: PoolOutputs, seed: int) -> np.ndarray:
    """Variation ratio 1 - max p, on the eval-mode probabilities as in the AutoAL code.

    It ranks exactly like least_confidence; kept for fidelity to the paper's pool.
    """
    return 1.0 - out.probs.max(axis=1).astype(np.float64)


@register("margin", needs={"probs"})
def margin(out: PoolOutputs, seed: int) -> np.ndarray:
    """-(p_top1 - p_top2): the smaller the margin, the earlier the query."""
    top2 = np.partition(out.probs.astype(np.float64), -2, axis=1)[:, -2:]
    return -(top2[:, 1] - top2[:, 0])


@register("entropy", needs={"probs"})
def entropy(out: PoolOutputs, seed: int) -> np.ndarray:
    """Predictive entropy -sum_c p log p."""
    return _entropy(out.probs)


@register("bald", needs={"mc_probs"})
def bald(out: PoolOutputs, seed: int) -> np.ndarray:
    """Mutual information H[mean_t p_t] - mean_t H[p_t] over MC-dropout samples."""
    assert out.mc_probs is not None  # a need: check_inputs refused its absence
    mc = out.mc_probs.astype(np.float64)
    return _entropy(mc.mean(axis=0)) - _entropy(mc).mean(axis=0)


@register("mean_std", needs={"mc_probs"})
def mean_std(out: PoolOutputs, seed: int) -> np.ndarray:
    """Mean over classes of the std (over MC samples) of p(c|x) (Kampffmeyer et al.)."""
    assert out.mc_probs is not None  # a need: check_inputs refused its absence
    return out.mc_probs.astype(np.float64).std(axis=0).mean(axis=1)
