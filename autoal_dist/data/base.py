"""Dataset container, validation and the loader registry.

Every loader returns a `Dataset` of plain numpy arrays: images as uint8 NHWC,
flat features as float32 [N, F]. Pixels stay uint8 until a batch is fed to a
model, so a 100k x 64x64x3 pool is 1.2 GB, not 4.9 GB. The one exception is a
stored pool (`pool:DIR_OR_URI`, data/stored_pool.py): its train_x is a lazy
`StoredArray` that reads only the rows it is indexed with, and the Dataset then
carries the content fingerprint and normaliser statistics recorded when the pool
was written, so neither needs a pass over the pool.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoal_dist.errors import UserError


class DataError(UserError):
    """A dataset that cannot be used; the message is one line for the user."""


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    # Recorded by a stored pool's writer (None for in-memory loaders): the content
    # fingerprint (what `fingerprint()` would compute) and the training split's
    # per-channel (mean, std), float32, exactly what `Normalizer.fit(train_x)` gives.
    known_fingerprint: str | None = None
    normalizer_stats: tuple[np.ndarray, np.ndarray] | None = None

    def fingerprint(self) -> str:
        """A hash of the four arrays (shapes and bytes): the same data gives the same hash,
        whether it is held in memory or read from its stored pool."""
        if self.known_fingerprint is not None:
            return self.known_fingerprint
        return content_fingerprint(self.train_x, self.train_y, self.test_x, self.test_y)

    @property
    def is_stored(self) -> bool:
        """Whether train_x stays on storage (a StoredArray) instead of in memory."""
        return not isinstance(self.train_x, np.ndarray)

    @property
    def is_image(self) -> bool:
        return self.train_x.ndim == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape: (H, W, C) for images, (F,) for features."""
        return tuple(self.train_x.shape[1:])


FINGERPRINT_CHUNK = 32 << 20  # bytes hashed per step: any value gives the same hash


def content_fingerprint(*arrays) -> str:
    """blake2b-128 over each array's shape string and C-order bytes, streamed in row chunks
    (so a lazy array is read a chunk at a time). config.json's `dataset_fingerprint` is this
    over (train_x, train_y, test_x, test_y)."""
    h = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        h.update(str(tuple(int(d) for d in arr.shape)).encode())
        row = int(np.prod(arr.shape[1:])) * np.dtype(arr.dtype).itemsize
        step = max(1, FINGERPRINT_CHUNK // max(1, row))
        for lo in range(0, len(arr), step):
            h.update(np.ascontiguousarray(arr[lo:lo + step]).data)
    return h.hexdigest()


def validate(ds: Dataset) -> Dataset:
    """Check shapes, dtypes, label ranges and finiteness; raise DataError naming the problem.

    A lazy (stored) array is checked from its metadata only: reading it whole to test
    finiteness would defeat keeping it on storage; its writer checked that instead."""
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
            if isinstance(x, np.ndarray) and not np.isfinite(x).all():
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


# Loaders that can return their samples undecoded (an array-like decoding what is indexed),
# for `pool write`, which then converts a folder of images without holding it decoded.
LAZY_DATASETS: dict[str, Loader] = {}


def register_lazy(name: str):
    """Decorator: the lazy loader of dataset `name` (same arguments and data as its loader)."""

    def deco(fn: Loader) -> Loader:
        LAZY_DATASETS[name] = fn
        return fn

    return deco


def load_dataset(spec: str, data_root: str | None = None, seed: int = 0, *,
                 lazy: bool = False) -> Dataset:
    """Load `spec` (e.g. `digits`, `synthetic:n=500`, `npz:/data/pathmnist.npz`); `lazy`:
    leave the samples undecoded where the dataset's loader can (`LAZY_DATASETS`)."""
    name, _, arg = spec.partition(":")
    if name not in DATASETS:
        raise DataError(
            f"unknown dataset {spec!r}; allowed: "
            + ", ".join(usage for _, usage in sorted(DATASETS.values(), key=lambda t: t[1]))
        )
    loader = (LAZY_DATASETS.get(name) if lazy else None) or DATASETS[name][0]
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
