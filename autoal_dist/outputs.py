"""PoolOutputs: everything the query strategies read, from one forward pass.

Kept free of torch and Ray so strategies stay pure numpy functions that can be
tested alone and called on any shard.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

# What a strategy may ask the scoring pass for. `labeled_embeddings` is optional
# (k-center falls back to a hashed first center without it), so it is never "missing".
NEEDS = frozenset({"probs", "embeddings", "mc_probs", "labeled_embeddings"})
OPTIONAL_NEEDS = frozenset({"labeled_embeddings"})


@dataclass
class PoolOutputs:
    """Per-sample model outputs for a set of pool samples, addressed by global id.

    ids: [n] int64 global sample ids (ties in every strategy break by smallest id).
    probs: [n, C] float32 softmax probabilities (eval mode).
    embeddings: [n, D] float32 penultimate-layer features.
    mc_probs: [T, n, C] float32 head-only MC-dropout probabilities, or None.
    labeled_embeddings: [m, D] float32 features of the labeled set, for
        strategies seeded from it (k-center); None when unavailable.
    """

    ids: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    mc_probs: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64)
        n = len(self.ids)
        if self.probs.ndim != 2 or len(self.probs) != n:
            raise ValueError(f"probs must be [n={n}, C], got {self.probs.shape}")
        if self.embeddings.ndim != 2 or len(self.embeddings) != n:
            raise ValueError(f"embeddings must be [n={n}, D], got {self.embeddings.shape}")
        if self.mc_probs is not None and (
            self.mc_probs.ndim != 3 or self.mc_probs.shape[1:] != self.probs.shape
        ):
            raise ValueError(
                f"mc_probs must be [T, {n}, {self.probs.shape[1]}], got {self.mc_probs.shape}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def take(self, rows: np.ndarray | slice) -> PoolOutputs:
        """Subset by row positions (not ids) or a slice of them (views); labeled_embeddings
        carried along. A field left out (None: a strategy that does not read it) stays out."""
        part = copy.copy(self)  # rows of valid outputs are valid: no __post_init__ again
        part.ids = self.ids[rows]
        for name in ("probs", "embeddings"):
            value = getattr(self, name)
            setattr(part, name, None if value is None else value[rows])
        part.mc_probs = None if self.mc_probs is None else self.mc_probs[:, rows]
        return part

    @staticmethod
    def concat(parts: list[PoolOutputs]) -> PoolOutputs:
        """Join shard outputs in the given order (callers pass shards in id order)."""
        has_mc = all(p.mc_probs is not None for p in parts)
        return PoolOutputs(
            ids=np.concatenate([p.ids for p in parts]),
            probs=np.concatenate([p.probs for p in parts]),
            embeddings=np.concatenate([p.embeddings for p in parts]),
            mc_probs=np.concatenate([p.mc_probs for p in parts], axis=1) if has_mc else None,
            labeled_embeddings=parts[0].labeled_embeddings if parts else None,
        )
