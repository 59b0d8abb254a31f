"""Benchmark pools the project can generate (no downloads).

`shifted-digits`: AutoAL's regime on data that ships with scikit-learn. Every one of
the 1797 real 8x8 digits in 9 copies: shifted by one pixel in each of the 8
directions and unshifted, with Gaussian pixel noise (sd 1 of 16 grey levels),
flattened to 64 features in [0, 1]. The split is by *source digit* (25% of the
digits, with all their copies, are the test split), so no shifted twin of a test
image is in the pool. 12,132 pool rows, 4,041 test rows, 10 classes. With init
1200 and budget 100, r = 100/12,132 and every candidate picks ceil(r |L|) >= 10
rows of L each round: the regime the search needs, unlike digits' r |L| < 2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def shifted_digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features [N, 64] float32 in [0, 1], labels, is_test) in a fixed order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    test_source = rng.permutation(len(d.target)) < len(d.target) // 4
    padded = np.pad(d.images, ((0, 0), (1, 1), (1, 1)))
    copies = [padded[:, 1 + dy:9 + dy, 1 + dx:9 + dx] for dy, dx in SHIFTS]
    x = np.concatenate(copies) + rng.normal(0, 1.0, size=(len(SHIFTS) * len(d.target), 8, 8))
    x = np.clip(x / 16.0, 0, 1).reshape(len(x), 64).astype(np.float32)
    return x, np.tile(d.target, len(SHIFTS)), np.tile(test_source, len(SHIFTS))


def write_shifted_digits(path: Path, seed: int = 0) -> Path:
    """The pool as a `parquet:` dataset file (id, label, split, features)."""
    x, y, test = shifted_digits(seed)
    pq.write_table(pa.table({
        "id": np.arange(len(y), dtype=np.int64), "label": y.astype(np.int64),
        "split": np.where(test, "test", "train"),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 64).cast(
            pa.list_(pa.float32())),
    }), path)
    return path


POOLS = {"shifted-digits": write_shifted_digits}
