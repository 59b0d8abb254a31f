"""Derived seeds: one campaign seed fans out to independent streams per round and purpose."""
from __future__ import annotations

import numpy as np

PURPOSES = {"init": 0, "train": 1, "score": 2, "select": 3, "search": 4, "split": 5}


def derive(seed: int, round_: int, purpose: str) -> int:
    """A 31-bit seed that depends only on (seed, round, purpose)."""
    ss = np.random.SeedSequence([int(seed), int(round_), PURPOSES[purpose]])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)
