"""uint8 arrays -> normalized float tensors, and training augmentation.

Statistics come from the training split, so every model (classifier, FitNet,
SearchNet) sees the same inputs. Augmentation draws from an explicit generator
so training is reproducible for a seed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

FIT_CHUNK_BYTES = 32 << 20  # float64 bytes of an image chunk in `Normalizer.fit`


@dataclass(frozen=True)
class Normalizer:
    mean: np.ndarray  # per channel (images) or per feature
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalizer:
        """Per-channel statistics, accumulated in chunks (a 1.2 GB pool stays 1.2 GB).

        Image chunks hold ~FIT_CHUNK_BYTES of float64 (8192 64x64x3 rows held 1.6 GB): their
        sums are of integers, exact in float64, so the chunking changes no bit. Features
        keep 8192-row chunks, whose float sums the chunking would change."""
        axes = (0, 1, 2) if x.ndim == 4 else (0,)
        step = 8192
        if x.ndim == 4:
            step = max(1, FIT_CHUNK_BYTES // (8 * int(np.prod(x.shape[1:]))))
        n = 0
        s: Any = 0.0  # float64 arrays after the first chunk
        s2: Any = 0.0
        for lo in range(0, len(x), step):
            c = x[lo:lo + step].astype(np.float64)
            s = s + c.sum(axis=axes)
            s2 = s2 + (c * c).sum(axis=axes)
            n += c.size // np.size(c.sum(axis=axes))
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 1e-12))
        return cls(mean.astype(np.float32), std.astype(np.float32))

    @classmethod
    def for_dataset(cls, data) -> Normalizer:
        """The statistics of `data.train_x`: those a stored pool recorded when it was written
        (bit-identical to `fit`, without reading the pool), else `fit(data.train_x)`."""
        stats = getattr(data, "normalizer_stats", None)
        if stats is not None:
            mean, std = stats
            return cls(np.asarray(mean, np.float32), np.asarray(std, np.float32))
        return cls.fit(data.train_x)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """A batch of uint8 NHWC images (or float features) -> float32 NCHW (or [n, F]).

        Kept exactly as first written: an in-place variant gives equal values but, for
        one-channel images, other strides, and the convolutions then pick other kernels, so
        trained models (and journals) would differ in the last bits."""
        with warnings.catch_warnings():  # a stored pool's read-only rows: .float() copies them,
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            t = torch.from_numpy(np.ascontiguousarray(x)).float()  # nothing writes to them
        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        t = (t - mean) / std
        return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding + horizontal flip (CIFAR-style), per sample."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None, :])  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None, :])  # [n, w]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def wants_augmentation(mode: str, input_shape: tuple[int, ...]) -> bool:
    """`auto`: crop+flip for images >= 32 px (flipping 8x8 digits would change their class)."""
    if mode == "auto":
        return len(input_shape) == 3 and input_shape[0] >= 32
    return mode == "on"
