"""Execution modes, chosen once per run: where the scoring pass and the network fits run.

* `local`: everything in the driver process: `LocalScorer`, networks trained in-process.
* `ray`: the scoring pass on `shards` Ray actors (`RayScorer`) and the networks fitted as
  Ray Train jobs on `workers` workers (`workers: 0`: Ray Train runs the loop in the driver
  process; in Ray's words its "local mode").

Both give the same journal for the same seed. `run` (`--local` / `--ray`, kept in
config.json) and `tune` (`tune.mode` of the sweep file) choose by the same word.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from autoal_dist.config import Config
from autoal_dist.data import Dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import ModelSpec
from autoal_dist.scoring import LocalScorer, Scorer

if TYPE_CHECKING:
    from autoal_dist.training.ray_job import JobRunner


class Execution(Protocol):
    name: str

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        """The round's scoring pass."""

    def jobs(self, cfg: Config, run_dir: Path) -> JobRunner | None:
        """Where networks are fitted: a Ray Train JobRunner, or None for in-process."""


@dataclass(frozen=True)
class Local:
    name: str = "local"

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        return LocalScorer(data.train_x, normalize, cfg.score.batch_size, cfg.score.mc_samples,
                           device, show_progress)

    def jobs(self, cfg: Config, run_dir: Path) -> JobRunner | None:
        return None


@dataclass(frozen=True)
class OnRay:
    name: str = "ray"

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        from autoal_dist.ray_cluster import default_shards, ensure_ray
        from autoal_dist.scoring.ray_scorer import RayScorer

        ensure_ray()
        return RayScorer(data.train_x, normalize, spec, shards=cfg.shards or default_shards(cfg.gpu),
                         batch_size=cfg.score.batch_size, mc_samples=cfg.score.mc_samples,
                         use_gpu=cfg.gpu, persistent=cfg.workers == 0)

    def jobs(self, cfg: Config, run_dir: Path) -> JobRunner | None:
        from autoal_dist.rundir import train_location
        from autoal_dist.training.ray_job import JobRunner

        return JobRunner(cfg.workers, cfg.gpu, str(train_location(run_dir, cfg.workers)))


MODES: dict[str, Execution] = {"local": Local(), "ray": OnRay()}


def execution_for(mode: str) -> Execution:
    """The execution mode named `mode` (`local` or `ray`)."""
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
    return MODES[mode]
