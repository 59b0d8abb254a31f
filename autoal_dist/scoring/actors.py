"""The scorer actor: owns one contiguous shard of the unlabeled pool for a round.

The pool's pixels arrive once per campaign as an object-store ref (read
zero-copy); per round the actor gets the weights ref and its slice of positions,
runs the one forward pass, and keeps the outputs for every strategy asked of it.
Every call names the round it belongs to; an actor that restarted (and so lost
its state) answers `NeedsRebuild` and the driver re-prepares and replays it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.inference import compute_outputs
from autoal_dist.models.backbones import ModelSpec
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


@ray.remote(max_restarts=-1, max_task_retries=-1)
class ScorerActor:
    def __init__(self, pool: list[ray.ObjectRef], normalize: Normalizer, spec: ModelSpec,
                 device: str, threads: int = 1) -> None:
        """`pool` is [ref to the pool's pixel array]: nested, so the actor fetches it itself
        (zero-copy) and a restart refetches it from the driver-owned object."""
        torch.set_num_threads(threads)  # fixed, so outputs do not depend on the host's cores
        self.x = ray.get(pool[0])
        self.normalize, self.spec, self.device = normalize, spec, device
        self.key: str | None = None
        self.outputs: PoolOutputs | None = None
        self.shards: dict[str, Any] = {}

    def pid(self) -> int:
        """For tests and diagnostics: which process currently backs this actor."""
        return os.getpid()

    def prepare(self, task: ShardTask, weights: dict[str, np.ndarray]) -> np.ndarray | None:
        """The round's forward pass over this shard; returns the labeled slice's embeddings."""
        model = self.spec.build().to(self.device)
        model.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in weights.items()})
        self.outputs = compute_outputs(
            model, self.x[task.positions], task.positions, self.normalize, needs=task.needs,
            batch_size=task.batch_size, mc_samples=task.mc_samples, seed=task.seed,
            first_batch=task.start // task.batch_size, device=self.device)
        self.key, self.shards = task.key, {}
        if len(task.labeled_positions) == 0:
            return None
        return compute_outputs(model, self.x[task.labeled_positions], task.labeled_positions,
                               self.normalize, batch_size=task.batch_size,
                               device=self.device).embeddings

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
        self.shards[name] = get(name).make_shard(out, block, start, device=self.device)

    def shard_call(self, key: str, name: str, method: str, args: tuple) -> Any:
        self._check(key)
        if name not in self.shards:
            raise NeedsRebuild(f"{key}/{name}")
        return getattr(self.shards[name], method)(*args)
