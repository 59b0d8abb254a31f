"""Train the task classifier on the labeled set (one process; Ray Train wraps this loop).

Reproducible for a seed: weights are initialised, shuffled and augmented from
explicit generators.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from autoal_dist.data.transforms import Normalizer, augment
from autoal_dist.models.backbones import Classifier


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    weight_decay: float = 5e-4
    min_steps: int = 100  # tiny labeled sets still get enough updates


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, s: torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay),
    "sgd": lambda params, s: torch.optim.SGD(params, lr=s.lr, momentum=0.9,
                                             weight_decay=s.weight_decay),
}


def num_steps(n: int, s: TrainSettings) -> int:
    """Epochs over the labeled set, but never fewer than `min_steps` optimizer steps."""
    per_epoch = max(1, -(-n // s.batch_size))
    return max(s.epochs * per_epoch, s.min_steps)


def train_classifier(
    model: Classifier,
    x: np.ndarray,
    y: np.ndarray,
    normalize: Normalizer,
    settings: TrainSettings,
    seed: int,
    *,
    use_augment: bool = False,
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> Classifier:
    """Fit `model` in place on (x, y) with cosine-decayed LR; returns it in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    opt = OPTIMIZERS[settings.optimizer](model.parameters(), settings)
    steps = num_steps(len(x), settings)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    order = torch.randperm(len(x), generator=gen)
    pos = 0
    for step in range(steps):
        if pos >= len(x):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + settings.batch_size]
        pos += settings.batch_size
        if len(idx) < 2 and len(x) >= 2:  # BatchNorm needs >= 2 samples
            order, pos = torch.randperm(len(x), generator=gen), 0
            idx = order[:settings.batch_size]
            pos = len(idx)
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
    return model.eval()
