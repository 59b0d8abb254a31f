"""Dataset container, validation and the loader registry.

Every loader returns a `Dataset` of plain numpy arrays: images as uint8 NHWC,
flat features as float32 [N, F]. Pixels stay uint8 until a batch is fed to a
model, so a 100k x 64x64x3 pool is 1.2 GB, not 4.9 GB.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


class DataError(ValueError):
    """A dataset that cannot be used; the message is one line for the user."""


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int

    @property
    def is_image(self) -> bool:
        return self.train_x.ndim == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape: (H, W, C) for images, (F,) for features."""
        return tuple(self.train_x.shape[1:])


def validate(ds: Dataset) -> Dataset:
    """Check shapes, dtypes, label ranges and finiteness; raise DataError naming the problem."""
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        where = f"dataset {ds.name!r} {split} split"
        if len(x) == 0:
            raise DataError(f"{where} is empty")
        if len(x) != len(y):
            raise DataError(f"{where}: {len(x)} samples but {len(y)} labels")
        if x.ndim == 4:
            if x.dtype != np.uint8:
                raise DataError(f"{where}: images must be uint8 NHWC, got dtype {x.dtype}")
            if x.shape[3] not in (1, 3):
                raise DataError(f"{where}: images must have 1 or 3 channels, got shape {x.shape}")
        elif x.ndim == 2:
            if not np.issubdtype(x.dtype, np.floating):
                raise DataError(f"{where}: features must be float, got dtype {x.dtype}")
            if not np.isfinite(x).all():
                raise DataError(f"{where}: features contain NaN or inf")
        else:
            raise DataError(f"{where}: expected images [N,H,W,C] or features [N,F], got {x.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
        if y.ndim != 1:
            raise DataError(f"{where}: labels must be 1-D, got shape {y.shape}")
        if y.min() < 0 or y.max() >= ds.num_classes:
            raise DataError(
                f"{where}: labels must lie in [0, {ds.num_classes - 1}], "
                f"got [{y.min()}, {y.max()}]"
            )
    if ds.train_x.shape[1:] != ds.test_x.shape[1:]:
        raise DataError(
            f"dataset {ds.name!r}: train samples {ds.train_x.shape[1:]} and test samples "
            f"{ds.test_x.shape[1:]} differ in shape"
        )
    if len(np.unique(ds.train_y)) < 2:
        raise DataError(f"dataset {ds.name!r} train split has one class only; need >= 2")
    ds.train_y = ds.train_y.astype(np.int64)
    ds.test_y = ds.test_y.astype(np.int64)
    return ds


Loader = Callable[[str, "str | None", int], Dataset]  # (arg, data_root, seed) -> Dataset
DATASETS: dict[str, tuple[Loader, str]] = {}


def register(name: str, usage: str):
    """Decorator: a loader for specs `name` or `name:ARG`; `usage` documents ARG."""

    def deco(fn: Loader) -> Loader:
        DATASETS[name] = (fn, usage)
        return fn

    return deco


def load_dataset(spec: str, data_root: str | None = None, seed: int = 0) -> Dataset:
    """Load `spec` (e.g. `digits`, `synthetic:n=500`, `npz:/data/pathmnist.npz`)."""
    name, _, arg = spec.partition(":")
    if name not in DATASETS:
        raise DataError(
            f"unknown dataset {spec!r}; allowed: "
            + ", ".join(usage for _, usage in sorted(DATASETS.values(), key=lambda t: t[1]))
        )
    loader, _ = DATASETS[name]
    return validate(loader(arg, data_root, seed))


# Held-out test splits use this fixed seed, not the campaign's: runs with
# different seeds are then evaluated on the same test set and can be compared.
HOLDOUT_SEED = 0


def holdout_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int = HOLDOUT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random split for sources that ship no test split."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
