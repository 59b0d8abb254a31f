"""The scorer actor: owns one contiguous shard of the unlabeled pool for a round.

Its pool is one of two kinds. An in-memory dataset's pixels arrive once per campaign as
an object-store ref (read zero-copy). A stored pool (`pool:DIR_OR_URI`) arrives as its
`StoredArray` (a few KB: the location and the row-group table); the actor reads the
rows of its shard from storage itself, batch by batch as the forward pass goes (one
batch read ahead on a thread), and keeps the decoded row groups of its shard's row
range across rounds up to `cache_bytes` (the StoredArray's keep tier): it never holds
another shard's rows, nor more than its own. Per round the actor gets the weights ref
and its slice of positions, runs the one forward pass, and keeps the outputs for every
strategy asked of it. Every call names the round it belongs to; an actor that restarted
(and so lost its state) answers `NeedsRebuild` and the driver re-prepares and replays it.
"""
from __future__ import annotations

import os
import resource
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import ModelSpec
from autoal_dist.models.inference import compute_outputs
from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import get, top_b_scored


class NeedsRebuild(RuntimeError):
    """The actor holds no state for this round/shard (it restarted); re-prepare and replay."""


@dataclass(frozen=True)
class ShardTask:
    """One actor's part of a round: `positions` of the pool (a contiguous slice of the
    round's sorted unlabeled ids, starting at row `start`, a multiple of the batch size)."""

    key: str
    positions: np.ndarray
    start: int
    labeled_positions: np.ndarray  # this actor's slice of the labeled set (for k-center)
    needs: frozenset[str]
    batch_size: int
    mc_samples: int
    seed: int


TRIM_EVERY = 16  # batches between two `release_free_memory` calls during a stored pass
# The StoredArray's LRU cache in an actor: a sweep in order needs the row groups of one batch
# and the next (read ahead); the rows kept across rounds are the keep tier's (`cache_bytes`).
ACTOR_LRU_BYTES = 16 << 20


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to release this way
        return None


_LIBC = _libc()


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim; a no-op elsewhere).

    A forward pass frees batch-sized buffers while it keeps each batch's small outputs:
    glibc then holds the freed pages between them, and the process's RSS grows with the
    rows passed (measured: ~50 KB a 64x64x3 row), as if it held the pool in float32. Trimming
    every few batches keeps that to a few batches' worth, for ~5% of the pass's time."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class RowsAt:
    """Rows `positions` of a stored pool, read as they are sliced (`compute_outputs` takes
    x[lo:lo + batch] in order): each slice is read from storage when asked for, and the
    next slice of the same length is read ahead on one thread while the model runs. Every
    `TRIM_EVERY` slices the heap's free pages are released (`release_free_memory`)."""

    def __init__(self, x: Any, positions: np.ndarray, read_ahead: bool = True) -> None:
        self.x, self.positions = x, positions
        self._ahead: ThreadPoolExecutor | None = (ThreadPoolExecutor(1) if read_ahead
                                                  else None)
        self._next: tuple[int, int, Future] | None = None
        self._slices = 0

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, step = key.indices(len(self))
        if step != 1:
            raise IndexError("RowsAt takes contiguous slices")
        self._slices += 1
        if self._slices % TRIM_EVERY == 0:
            release_free_memory()
        nxt, self._next = self._next, None
        rows = (nxt[2].result() if nxt is not None and nxt[:2] == (lo, hi)
                else self.x[self.positions[lo:hi]])
        if self._ahead is not None and hi < len(self):
            n_lo, n_hi = hi, min(len(self), hi + (hi - lo))
            self._next = (n_lo, n_hi, self._ahead.submit(
                self.x.__getitem__, self.positions[n_lo:n_hi]))
        return rows

    def close(self) -> None:
        if self._next is not None:  # an abandoned read ahead (an error mid-pass)
            self._next[2].cancel()
        if self._ahead is not None:
            self._ahead.shutdown(wait=True)
        release_free_memory()


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far: VmHWM, which starts afresh with the
    process image (ru_maxrss, the fallback, survives execve: it would report the peak of
    whatever process started this one)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def rss_bytes() -> int:
    """This process's resident set size now (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


@ray.remote(max_restarts=-1, max_task_retries=-1)
class ScorerActor:
    def __init__(self, normalize: Normalizer, spec: ModelSpec, device: str, threads: int = 1,
                 cache_bytes: int = 0) -> None:
        """The pool arrives with the first `prepare` (`attach`), not here: a restarted actor
        re-runs its constructor from the constructor's arguments, and Ray warns (at error
        level, on every run) about an actor whose constructor arguments live in the object
        store. Up to `cache_bytes` of a stored pool's shard stay decoded across rounds."""
        torch.set_num_threads(threads)  # fixed, so outputs do not depend on the host's cores
        self.stored = False
        self.x: Any = None
        self.cache_bytes = cache_bytes
        self.normalize, self.spec, self.device = normalize, spec, device
        self.key: str | None = None
        self.outputs: PoolOutputs | None = None
        self.shards: dict[str, Any] = {}
        self.rss_at_start = rss_bytes()

    def pid(self) -> int:
        """For tests and diagnostics: which process currently backs this actor."""
        return os.getpid()

    def stats(self) -> dict[str, Any]:
        """For tests and benchmarks: what this process read and holds."""
        return {"pid": os.getpid(), "stored": self.stored,
                "groups_read": getattr(self.x, "groups_read", 0),
                "cached_bytes": getattr(self.x, "cached_bytes", 0),
                "kept_bytes": getattr(self.x, "kept_bytes", 0),
                "outputs_bytes": 0 if self.outputs is None else sum(
                    a.nbytes for a in (self.outputs.probs, self.outputs.embeddings,
                                       self.outputs.mc_probs) if a is not None),
                "rss_at_start": self.rss_at_start, "rss": rss_bytes(),
                "peak_rss": peak_rss_bytes()}

    def _rows(self, positions: np.ndarray) -> Any:
        """The samples at `positions`: a lazy reader over a stored pool, else a copy."""
        return RowsAt(self.x, positions) if self.stored else self.x[positions]

    def _outputs(self, model: Any, positions: np.ndarray, **kw: Any) -> PoolOutputs:
        rows = self._rows(positions)
        try:
            return compute_outputs(model, rows, positions, self.normalize,
                                   device=self.device, **kw)
        finally:
            if isinstance(rows, RowsAt):
                rows.close()

    def attach(self, pool: Any) -> None:
        """`pool` is [ref to the pool's pixel array] (an in-memory dataset): nested, so the
        actor fetches it itself, zero-copy, once; or a stored pool's `StoredArray`, read by
        row from storage."""
        if self.x is not None:
            return
        self.stored = not isinstance(pool, list)
        self.x = pool if self.stored else ray.get(pool[0])
        if self.stored:
            self.x.cache_bytes = min(self.x.cache_bytes, ACTOR_LRU_BYTES)

    def prepare(self, task: ShardTask, weights: dict[str, np.ndarray],
                pool: Any) -> np.ndarray | None:
        """The round's forward pass over this shard; returns the labeled slice's embeddings."""
        self.attach(pool)
        model = self.spec.build().to(self.device)
        model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
        # the last round's outputs and strategy state go before this round's are computed
        self.key, self.outputs, self.shards = None, None, {}
        if self.stored and len(task.positions):
            # this round's shard spans rows [first, last]: keep those row groups for the
            # next rounds (a shard moves little between rounds), drop any others kept
            self.x.keep(int(task.positions[0]), int(task.positions[-1]) + 1, self.cache_bytes)
        self.outputs = self._outputs(
            model, task.positions, needs=task.needs, batch_size=task.batch_size,
            mc_samples=task.mc_samples, seed=task.seed,
            first_batch=task.start // task.batch_size)
        self.key, self.shards = task.key, {}
        if len(task.labeled_positions) == 0:
            return None
        return self._outputs(model, task.labeled_positions,
                             batch_size=task.batch_size).embeddings

    def load_outputs(self, task: ShardTask, outputs: PoolOutputs) -> None:
        """This round's outputs given, not computed (`RayScorer.load_outputs`: benchmarks)."""
        self.outputs, self.key, self.shards = outputs, task.key, {}

    def _check(self, key: str) -> PoolOutputs:
        if self.key != key or self.outputs is None:
            raise NeedsRebuild(key)
        return self.outputs

    def top_b(self, key: str, name: str, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A scoring strategy's local top-b (ids, scores): merged on the driver, exactly."""
        out = self._check(key)
        return top_b_scored(out.ids, get(name).score(out, seed), budget)

    def shard_init(self, key: str, name: str, start: int, block: int,
                   labeled_embeddings: np.ndarray | None) -> None:
        """Build strategy `name`'s per-shard state (k-center distances, k-means labels...) on
        this actor's device, computing with all of its CPU threads (`arrays.py`)."""
        out = self._check(key)
        out.labeled_embeddings = labeled_embeddings
        make_shard = get(name).make_shard
        assert make_shard is not None, f"{name} is not a set strategy"
        self.shards[name] = make_shard(out, block, start, device=self.device)

    def shard_call(self, key: str, name: str, method: str, args: tuple) -> Any:
        self._check(key)
        if name not in self.shards:
            raise NeedsRebuild(f"{key}/{name}")
        return getattr(self.shards[name], method)(*args)
