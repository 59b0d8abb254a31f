"""Train the task classifier on the labeled set: one loop for every execution mode.

The loop is what Ray Train runs on each worker (`ray_job.py`) and what
local mode runs in-process. Every rank draws the same global batch from the same
generator and takes its strided slice, so DDP's averaged gradient is the
single-process gradient of that batch. The loop's whole state (weights,
optimizer, schedule, generators, position) can be checkpointed and resumed, so a
crashed worker group restarts where it left off, not from scratch.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from autoal_dist.config import TrainConfig
from autoal_dist.data.transforms import Normalizer, augment
from autoal_dist.models.backbones import Classifier
from autoal_dist.training import OPTIMIZERS  # the package's table of adam, sgd below


def adam(params: Any, s: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)


def sgd(params: Any, s: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)


def num_steps(n: int, s: TrainConfig) -> int:
    """Epochs over the labeled set, but never fewer than `min_steps` optimizer steps."""
    per_epoch = max(1, -(-n // s.batch_size))
    return max(s.epochs * per_epoch, s.min_steps)


def unwrap(model: torch.nn.Module) -> Classifier:
    """The Classifier inside a DistributedDataParallel wrapper (or the model itself)."""
    return cast(Classifier, getattr(model, "module", model))


class BatchSampler:
    """Global batches of indices, reshuffled each epoch; never a batch of 1 (BatchNorm)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n, self.batch_size, self.gen = n, batch_size, generator
        self.order, self.pos = torch.randperm(n, generator=generator), 0

    def next(self) -> torch.Tensor:
        if self.pos >= self.n or (self.n - self.pos < 2 <= self.n):
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += len(idx)
        return idx

    def state(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "order": self.order, "pos": self.pos}

    def load(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.order, self.pos = state["order"], int(state["pos"])


def train_classifier(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    normalize: Normalizer,
    settings: TrainConfig,
    seed: int,
    *,
    use_augment: bool = False,
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], None] | None = None,
    rank: int = 0,
    world: int = 1,
    resume: dict[str, Any] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> Classifier:
    """Fit `model` (a Classifier, possibly DDP-wrapped) on (x, y); returns it in eval mode.

    Cosine-decayed LR over `num_steps`. With `checkpoint_every`, calls
    `on_checkpoint(state)` every that many steps and at the end; `resume` is such
    a state, and training continues from it exactly.
    """
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = OPTIMIZERS[settings.optimizer](model.parameters(), settings)
    steps = num_steps(len(x), settings)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    sampler = BatchSampler(len(x), settings.batch_size, gen)
    y_t = torch.tensor(np.asarray(y), dtype=torch.int64)  # a copy: y may be a read-only Ray object
    start = 0
    if resume is not None:
        unwrap(model).load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        sampler.load(resume["sampler"])
        torch.set_rng_state(resume["torch_rng"])
        start = int(resume["step"])

    def state(step: int) -> dict[str, Any]:
        return {"step": step, "model": unwrap(model).state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "sampler": sampler.state(),
                "torch_rng": torch.get_rng_state()}

    for step in range(start, steps):
        idx = sampler.next()[rank::world]  # this rank's slice of the global batch
        xb = normalize(x[idx.numpy()])
        if use_augment:
            xb = augment(xb, gen)
        loss = F.cross_entropy(model(xb.to(device)), y_t[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step, loss.item())
        if on_checkpoint and checkpoint_every and (step + 1) % checkpoint_every == 0:
            on_checkpoint(state(step + 1))
    if on_checkpoint and checkpoint_every and steps % checkpoint_every:
        on_checkpoint(state(steps))
    return unwrap(model).eval()
