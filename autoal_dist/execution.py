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
from typing import TYPE_CHECKING, Protocol

from autoal_dist.config import Config
from autoal_dist.data import Dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.fitting import InProcess, OnRayTrain
from autoal_dist.models.backbones import ModelSpec
from autoal_dist.progress import Progress
from autoal_dist.scoring import LocalScorer, Scorer

if TYPE_CHECKING:
    from autoal_dist.rounds import Fitter
    from autoal_dist.run import Run


class Execution(Protocol):
    @property
    def name(self) -> str:
        """`local` or `ray`."""

    def start(self, cfg: Config) -> str:
        """Get ready to run `cfg` (start or join Ray, check that the cluster can hold what
        cfg asks for); the line that says where the run runs. Called before the run
        directory is written, so a request the cluster cannot meet changes nothing."""

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        """The round's scoring pass."""

    def fitter(self, cfg: Config, run: Run) -> Fitter:
        """Where networks are fitted: in this process, or as Ray Train jobs."""


@dataclass(frozen=True)
class Local:
    name: str = "local"

    def start(self, cfg: Config) -> str:
        return "mode local: scoring and training run in this process (no Ray)"

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        return LocalScorer(data.train_x, normalize, cfg.score.batch_size, cfg.score.mc_samples,
                           device, show_progress)

    def fitter(self, cfg: Config, run: Run) -> Fitter:
        return InProcess()


@dataclass(frozen=True)
class OnRay:
    name: str = "ray"

    def start(self, cfg: Config) -> str:
        """Scorer actors take a CPU each; with `workers: 0` they live for the whole campaign
        (Train runs in the driver), else they exist only during scoring and the Train
        workers (a CPU, or a GPU with --gpu, each) only during fitting: never both."""
        from autoal_dist.ray_cluster import announce, require
        from autoal_dist.scoring.ray_scorer import default_cache_bytes

        default_cache_bytes()  # a bad AUTOAL_DIST_SCORER_CACHE_MB: one line, before Ray starts
        line = announce()
        if cfg.shards:
            require(cfg.shards, 0, f"--shards {cfg.shards} (one scorer actor per CPU)",
                    "lower --shards (0 = one per CPU the cluster has)")
        if cfg.workers:
            require(0 if cfg.gpu else cfg.workers, cfg.workers if cfg.gpu else 0,
                    f"--workers {cfg.workers} (one Ray Train worker per "
                    f"{'GPU' if cfg.gpu else 'CPU'})", "lower --workers (0 = train in the driver)")
        return line

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        from autoal_dist.ray_cluster import default_shards, ensure_ray
        from autoal_dist.scoring.ray_scorer import RayScorer

        ensure_ray()
        return RayScorer(data.train_x, normalize, spec,
                         shards=cfg.shards or default_shards(cfg.gpu),
                         batch_size=cfg.score.batch_size, mc_samples=cfg.score.mc_samples,
                         use_gpu=cfg.gpu, persistent=cfg.workers == 0,
                         progress=Progress(show_progress))

    def fitter(self, cfg: Config, run: Run) -> Fitter:
        from autoal_dist.training.ray_job import JobRunner

        return OnRayTrain(JobRunner(cfg.workers, cfg.gpu, run.train_location(cfg.workers)))


MODES: dict[str, Execution] = {"local": Local(), "ray": OnRay()}


def execution_for(mode: str) -> Execution:
    """The execution mode named `mode` (`local` or `ray`)."""
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
    return MODES[mode]
