"""Where a run fits its networks: in this process (`InProcess`, mode local) or as Ray Train
jobs (`OnRayTrain`, mode ray). The execution mode hands one to the round loop and the
policies (`rounds.Fitter`); they fit through it and never ask which it is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from autoal_dist.autoal.embed_search import FitWeights
    from autoal_dist.autoal.gain import Simulate
    from autoal_dist.autoal.search import FitNets
    from autoal_dist.config import TrainConfig
    from autoal_dist.data.transforms import Normalizer
    from autoal_dist.models.backbones import Classifier, ModelSpec
    from autoal_dist.training.ray_job import JobRunner


@dataclass(frozen=True)
class InProcess:
    """Every network fitted in this process (mode local)."""

    def describe(self) -> str:
        return "in this process"

    def classifier(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray, normalize: Normalizer,
                   t: TrainConfig, seed: int, use_augment: bool, name: str, device: str,
                   progress: Callable[[int, float], None] | None) -> Classifier:
        import torch

        from autoal_dist.training.loop import train_classifier

        torch.set_num_threads(t.threads)
        torch.manual_seed(seed)
        return train_classifier(spec.build(), x, y, normalize, t, seed, use_augment=use_augment,
                                device=device, progress=progress)

    def simulate(self, name: str) -> Simulate:
        from autoal_dist.autoal.gain import evidence

        return evidence

    def fit_weights(self, name: str) -> FitWeights:
        from autoal_dist.autoal.weights import fit_weights

        return fit_weights

    def fit_nets(self, name: str) -> FitNets | None:
        return None


@dataclass(frozen=True)
class OnRayTrain:
    """Networks fitted as Ray Train jobs on `jobs.workers` workers (0: Train's local mode, in
    the driver). AutoAL's gain simulation and weights fit run as jobs only when there are
    workers to deal them to: in local mode a job would only add overhead to a fit of a few
    hundred steps."""

    jobs: JobRunner

    def describe(self) -> str:
        n = self.jobs.workers
        return f"Ray Train, {n} worker{'s' * (n != 1)}" if n else "Ray Train in the driver process"

    def classifier(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray, normalize: Normalizer,
                   t: TrainConfig, seed: int, use_augment: bool, name: str, device: str,
                   progress: Callable[[int, float], None] | None) -> Classifier:
        from autoal_dist.training.loop import num_steps
        from autoal_dist.training.ray_job import TrainJob, fit_classifier

        job = TrainJob(spec, t, seed, use_augment, max(1, num_steps(len(x), t) // 4))
        return fit_classifier(x, y, normalize, job, self.jobs, name)

    def simulate(self, name: str) -> Simulate:
        if self.jobs.workers == 0:
            return InProcess().simulate(name)
        from autoal_dist.autoal.ray_job import simulate_job

        return partial(simulate_job, jobs=self.jobs, name=name)

    def fit_weights(self, name: str) -> FitWeights:
        if self.jobs.workers == 0:
            return InProcess().fit_weights(name)
        from autoal_dist.autoal.ray_job import fit_weights_job

        return partial(fit_weights_job, jobs=self.jobs, name=name)

    def fit_nets(self, name: str) -> FitNets | None:
        from autoal_dist.autoal.ray_job import fit_search

        return partial(fit_search, jobs=self.jobs, name=name)
