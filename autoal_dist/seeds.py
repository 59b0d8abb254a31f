"""Seeds: one campaign seed fans out to independent streams per round and purpose, and
counter-based hashes give every pool id a value that no sharding can change."""
from __future__ import annotations

import numpy as np

PURPOSES = {"init": 0, "train": 1, "score": 2, "select": 3, "search": 4, "split": 5,
            "eer-draw": 6}


def derive(seed: int, round_: int, purpose: str) -> int:
    """A 31-bit seed that depends only on (seed, round, purpose)."""
    ss = np.random.SeedSequence([int(seed), int(round_), PURPOSES[purpose]])
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


def splitmix64(z: np.ndarray) -> np.ndarray:
    """Counter-based hash of a uint64 array, in place (a greedy step hashes every row: no
    temporaries beyond one shift's): a uniform value per (seed, id), the same on every
    shard."""
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z ^= z >> np.uint64(shift)
            z *= np.uint64(mul)
        z ^= z >> np.uint64(31)
    return z


def splitmix64_int(x: int) -> int:
    """`splitmix64` of one value in Python integers (a greedy step hashes its seed every
    step: dozens of one-element numpy calls otherwise); x must fit in a uint64."""
    m = (1 << 64) - 1
    z = (int(np.uint64(x)) + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def hashed_uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) value per id, a pure function of (seed, id)."""
    key = np.asarray(ids).astype(np.uint64)  # a copy: hashed in place
    key ^= np.uint64(splitmix64_int(seed))
    key = splitmix64(key)
    key >>= np.uint64(11)
    u = key.astype(np.float64)
    u /= float(1 << 53)
    return u
