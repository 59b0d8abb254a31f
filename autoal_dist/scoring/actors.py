"""The scorer actor: owns one contiguous shard of the unlabeled pool for a round.

Its pool is one of two kinds. An in-memory dataset's pixels arrive once per campaign as
an object-store ref (read zero-copy). A stored pool (`pool:DIR_OR_URI`) arrives as its
`StoredArray` (a few KB: the location and the row-group table); the actor reads the
rows of its shard from storage itself, batch by batch as the forward pass goes (one
batch read ahead on a thread), and keeps the decoded row groups of its shard's row
range across rounds (the StoredArray's keep tier): by default as much as keeps its memory
within its shard's decoded bytes once the round's outputs, the batches in flight and the
reader are counted, up to 1 GiB (`keep_budget`); or the budget a user set
(AUTOAL_DIST_SCORER_CACHE_MB). It never holds another shard's rows. Per round the actor
gets the weights ref and its slice of positions, runs the one forward pass, and keeps the
outputs for every strategy asked of it. Every call names the round it belongs to; an
actor that restarted (and so lost its state) answers `NeedsRebuild` and the driver
re-prepares and replays it.
"""
from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import ModelSpec
from autoal_dist.models.inference import compute_outputs
from autoal_dist.outputs import PoolOutputs
from autoal_dist.scoring.base import rows_of
from autoal_dist.scoring.rows import rows_at
from autoal_dist.strategies import ScoringStrategy, SetStrategy, get, top_b_scored


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


# The StoredArray's LRU cache in an actor (or two row groups, if larger): a sweep in order
# needs the row group a batch shares with the next; the rows kept across rounds are the
# keep tier's. Measured on 64x64x3 rows: 16 MiB and 4 parallel group reads per batch held
# ~80 MB during a pass, 8 MiB and one reader (beside the read-ahead thread) ~20 MB.
ACTOR_LRU_BYTES = 8 << 20
# The keep tier's cap when AUTOAL_DIST_SCORER_CACHE_MB is unset (bytes); `keep_budget` may
# keep less, to stay within the shard's bound.
CACHE_BYTES = 1 << 30
# Memory a stored pool's reader holds beside the rows it keeps and the batches in flight:
# its LRU cache, the row group being decoded, pyarrow's code and its allocator's free pages.
# Measured in an actor over 64x64x3 rows: ~110 MB at its peak during a pass.
READ_RESERVE_BYTES = 128 << 20
# A shard whose decoded rows fit in this is kept whole, whatever its outputs weigh (a pool
# of tiny images can have outputs larger than its samples; re-reading it saves nothing).
KEEP_FLOOR_BYTES = 32 << 20


def keep_budget(cap: int, shard_rows: int, row_bytes: int, output_bytes: int,
                batch_size: int) -> int:
    """Decoded bytes of its shard a stored pool's actor keeps across rounds.

    At most `cap`, and at most what keeps the actor within its shard's decoded bytes
    (plus the model) while it also holds the round's outputs (`output_bytes`), the batch
    being scored and the one read ahead, and the reader's own memory (READ_RESERVE_BYTES);
    a shard under KEEP_FLOOR_BYTES is kept whole."""
    shard = shard_rows * row_bytes
    room = shard - output_bytes - 2 * batch_size * row_bytes - READ_RESERVE_BYTES
    floor = KEEP_FLOOR_BYTES if shard <= KEEP_FLOOR_BYTES else 0  # its row groups, whole
    return int(max(0, min(cap, max(room, floor))))


def output_bytes(rows: int, num_classes: int, embedding_dim: int, needs: frozenset[str],
                 mc_samples: int) -> int:
    """Bytes `compute_outputs` allocates for `rows` samples (float32)."""
    per_row = num_classes + embedding_dim + (mc_samples * num_classes
                                             if "mc_probs" in needs else 0)
    return 4 * rows * per_row


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
                 cache_bytes: int | None = None) -> None:
        """The pool arrives with the first `prepare` (`attach`), not here: a restarted actor
        re-runs its constructor from the constructor's arguments, and Ray warns (at error
        level, on every run) about an actor whose constructor arguments live in the object
        store. A stored pool's shard stays decoded across rounds up to `cache_bytes` when
        given (the user's budget), else up to `keep_budget`'s bound."""
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
                "bytes_read": getattr(self.x, "bytes_read", 0),
                "cached_bytes": getattr(self.x, "cached_bytes", 0),
                "kept_bytes": getattr(self.x, "kept_bytes", 0),
                "outputs_bytes": 0 if self.outputs is None else sum(
                    a.nbytes for a in (self.outputs.probs, self.outputs.embeddings,
                                       self.outputs.mc_probs) if a is not None),
                "rss_at_start": self.rss_at_start, "rss": rss_bytes(),
                "peak_rss": peak_rss_bytes()}

    def _outputs(self, model: Any, positions: np.ndarray, **kw: Any) -> PoolOutputs:
        with rows_at(self.x, positions) as rows:
            return compute_outputs(model, rows, positions, self.normalize,
                                   device=self.device, **kw)

    def attach(self, pool: Any) -> None:
        """`pool` is [ref to the pool's pixel array] (an in-memory dataset): nested, so the
        actor fetches it itself, zero-copy, once; or a stored pool's `StoredArray`, read by
        row from storage."""
        if self.x is not None:
            return
        self.stored = not isinstance(pool, list)
        self.x = pool if self.stored else ray.get(pool[0])
        if self.stored:
            # a sweep in order needs the row group shared by a batch and the next one
            self.x.cache_bytes = max(ACTOR_LRU_BYTES, 2 * self.x.max_group_bytes)
            self.x.readers = 1  # the read-ahead thread overlaps reading with the model
            self.x.row_cache_bytes = 0  # its memory is its shard's: rows by id not kept

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
            rows = len(task.positions)
            outputs = output_bytes(rows + len(task.labeled_positions), model.num_classes,
                                   model.embedding_dim, task.needs, task.mc_samples)
            budget = (self.cache_bytes if self.cache_bytes is not None else
                      keep_budget(CACHE_BYTES, rows, self.x.row_bytes, outputs,
                                  task.batch_size))
            self.x.keep(int(task.positions[0]), int(task.positions[-1]) + 1, budget)
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
        strategy = get(name)
        if not isinstance(strategy, ScoringStrategy):
            raise TypeError(f"{name} is not a scoring strategy")
        return top_b_scored(out.ids, strategy.score(out, seed), budget)

    def rows(self, key: str, ids: np.ndarray) -> PoolOutputs:
        """This shard's outputs at pool `ids` (sorted, all in this shard)."""
        return rows_of(self._check(key), ids)

    def shard_init(self, key: str, name: str, start: int, block: int,
                   labeled_embeddings: np.ndarray | None) -> None:
        """Build strategy `name`'s per-shard state (k-center distances, k-means labels...) on
        this actor's device, computing with all of its CPU threads (`arrays.py`)."""
        out = self._check(key)
        out.labeled_embeddings = labeled_embeddings
        strategy = get(name)
        if not isinstance(strategy, SetStrategy):
            raise TypeError(f"{name} is not a set strategy")
        self.shards[name] = strategy.make_shard(out, block, start, device=self.device)

    def shard_call(self, key: str, name: str, method: str, args: tuple) -> Any:
        self._check(key)
        if name not in self.shards:
            raise NeedsRebuild(f"{key}/{name}")
        return getattr(self.shards[name], method)(*args)
