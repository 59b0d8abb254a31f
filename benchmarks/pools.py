"""Benchmark pools the project can generate (no downloads): the regime suite.

Each pool is built from scikit-learn's 1797 real 8x8 digits and chosen so that a
*different* kind of strategy wins on it (`python benchmarks/accuracy.py --suite`):

- `digits` (the embedded dataset itself, not generated here): low budget, 20 labels a
  round from 20.
- `shifted-digits`: uncertainty's regime. Every digit in 9 copies (shifted by one pixel in
  each of the 8 directions and unshifted) with Gaussian pixel noise (sd 1 of 16 grey
  levels); the split is by *source digit* (25% of the digits, with all their copies, are
  the test split), so no shifted twin of a test image is in the pool. 12,132 pool rows,
  4,041 test rows; init 1200, budget 100.
- `longtail-digits`: class imbalance. The shifted pool with class k (in a seeded order)
  kept at a share 50^(-k/9) of its rows (imbalance ratio 50; ~3,400 rows, the rarest
  class ~24) and its test split not thinned (every class ~10% of it): the rare classes
  are worth as much on the test set as the common ones, and a random batch rarely holds
  them.
- `dup-digits`: redundancy and cold start. 150 source digits, each in 40 near-duplicate
  copies (pixel noise sd 1 grey level; 6,000 rows), the test split is every other digit:
  a batch of near-twins teaches as much as one of them, so the strategies that spread
  their picks (diversity, typicality, coverage) should win over those that rank rows
  one by one.

Every pool is a `parquet:` dataset file (id, label, split, features [64] float32).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
Pool = tuple[np.ndarray, np.ndarray, np.ndarray]  # (features [N, 64], labels [N], is_test [N])


def _digits():
    from sklearn.datasets import load_digits

    return load_digits()


def _noisy(images: np.ndarray, rng: np.random.Generator, sd: float = 1.0) -> np.ndarray:
    """8x8 images (0..16) plus Gaussian noise, flattened to [0, 1] float32 features."""
    x = images + rng.normal(0, sd, size=images.shape)
    return np.clip(x / 16.0, 0, 1).reshape(len(x), 64).astype(np.float32)


def shifted_digits(seed: int = 0) -> Pool:
    """(features [N, 64] float32 in [0, 1], labels, is_test) in a fixed order."""
    d = _digits()
    rng = np.random.default_rng(seed)
    test_source = rng.permutation(len(d.target)) < len(d.target) // 4
    padded = np.pad(d.images, ((0, 0), (1, 1), (1, 1)))
    copies = [padded[:, 1 + dy:9 + dy, 1 + dx:9 + dx] for dy, dx in SHIFTS]
    x = _noisy(np.concatenate(copies), rng)
    return x, np.tile(d.target, len(SHIFTS)), np.tile(test_source, len(SHIFTS))


def longtail_digits(seed: int = 0, ratio: float = 50.0) -> Pool:
    """The shifted pool with a long-tailed train split (class k keeps ratio^(-k/9) of its
    rows, classes in a seeded order) and its test split as it is."""
    x, y, test = shifted_digits(seed)
    rng = np.random.default_rng(seed + 1)
    share = np.empty(10)
    share[rng.permutation(10)] = ratio ** (-np.arange(10) / 9)
    keep = test | (rng.random(len(y)) < share[y])
    return x[keep], y[keep], test[keep]


def dup_digits(seed: int = 0, sources: int = 150, copies: int = 40) -> Pool:
    """`sources` digits (15 per class) in `copies` noisy near-twins each as the pool; every
    other digit, once, as the test split."""
    d = _digits()
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(d.target == c))[:sources // 10]
                             for c in range(10)])
    rest = np.setdiff1d(np.arange(len(d.target)), chosen)
    pool = _noisy(np.repeat(d.images[chosen], copies, axis=0), rng)
    test = _noisy(d.images[rest], rng, sd=0.0)
    x = np.concatenate([pool, test])
    y = np.concatenate([np.repeat(d.target[chosen], copies), d.target[rest]])
    return x, y, np.r_[np.zeros(len(pool), bool), np.ones(len(rest), bool)]


def write_pool(make: Callable[[int], Pool], path: Path, seed: int = 0) -> Path:
    """A generated pool as a `parquet:` dataset file (id, label, split, features)."""
    x, y, test = make(seed)
    pq.write_table(pa.table({
        "id": np.arange(len(y), dtype=np.int64), "label": y.astype(np.int64),
        "split": np.where(test, "test", "train"),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 64).cast(
            pa.list_(pa.float32())),
    }), path)
    return path


def write_shifted_digits(path: Path, seed: int = 0) -> Path:
    return write_pool(shifted_digits, path, seed)


GENERATORS: dict[str, Callable[[int], Pool]] = {
    "shifted-digits": shifted_digits, "longtail-digits": longtail_digits,
    "dup-digits": dup_digits,
}
POOLS = {name: (lambda path, seed=0, make=make: write_pool(make, path, seed))
         for name, make in GENERATORS.items()}
# each pool's campaign (init, budget, rounds), chosen for its regime
CAMPAIGNS: dict[str, dict[str, int]] = {
    "digits": {"init": 20, "budget": 20, "rounds": 8},
    "shifted-digits": {"init": 1200, "budget": 100, "rounds": 6},
    "longtail-digits": {"init": 40, "budget": 40, "rounds": 8},
    "dup-digits": {"init": 10, "budget": 20, "rounds": 8},
}
SUITE = list(CAMPAIGNS)  # `accuracy.py --suite` runs these pools
