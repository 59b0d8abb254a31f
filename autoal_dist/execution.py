"""Execution modes, chosen once per run: where the scoring pass and the network fits run.

* `local`: everything in the driver process: `LocalScorer`, networks trained in-process.
* `ray`: the scoring pass on `shards` Ray actors (`RayScorer`) and the networks fitted as
  Ray Train jobs on `workers` workers (`workers: 0`: Ray Train runs the loop in the driver
  process; in Ray's words its "local mode").

Both give the same journal for the same seed. `run` (`--local` / `--ray`, kept in
config.json) and `tune` (`tune.mode` of the sweep file) choose by the same word.

In mode `ray` the scorer actors live for the whole campaign, beside the Train workers of
every round's fits (`Reservation`): their CPUs (and GPUs) are counted together against the
cluster before anything starts, so each shard's rows are read from storage once per
campaign (as its keep budget allows), and the Train workers always find room.
"""
from __future__ import annotations

from collections.abc import Mapping
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
class Reservation:
    """What a mode-`ray` campaign holds at once: `shards` scorer actors of `actor` resources
    each, for the whole campaign, and while a round fits a network, `workers` Ray Train
    workers of `worker` each (Train's own default: a CPU, or with --gpu a whole GPU and no
    CPU). The driver process reserves nothing (it waits on both), nor does Train's
    controller (num_cpus=0)."""

    shards: int
    actor: Mapping[str, float]
    workers: int
    worker: Mapping[str, float]

    def total(self, resource: str) -> float:
        """`resource` held at once: every scorer actor's and every Train worker's."""
        return (self.shards * self.actor.get(resource, 0.0)
                + self.workers * self.worker.get(resource, 0.0))


def reservation(cfg: Config, cluster: Mapping[str, float]) -> Reservation:
    """The scorer actors and Train workers of `cfg` on a cluster of `cluster` resources.

    `--shards 0` takes what the Train workers leave: one scorer actor per CPU (per GPU with
    --gpu) beyond the workers', at least one. A scorer actor takes a CPU and, with --gpu,
    a share of the GPUs left: with Train workers beside it a whole GPU (Train's workers need
    whole GPUs, and fractional shares spread over GPUs could leave none whole for them),
    without them an even share of every GPU, at most one each."""
    gpu = cfg.gpu
    gpus = float(cluster.get("GPU", 0.0)) if gpu else 0.0
    spare_gpus = max(0.0, gpus - (cfg.workers if gpu else 0))
    spare_cpus = float(cluster.get("CPU", 1.0)) - (0 if gpu else cfg.workers)
    shards = cfg.shards or max(1, int(spare_gpus if gpu else spare_cpus))
    if gpu and cfg.workers:
        share = 1.0 if gpus else 0.0
    else:
        share = min(1.0, gpus / shards) if gpus else 0.0
    return Reservation(shards, {"CPU": 1.0, "GPU": share}, cfg.workers,
                       {"GPU": 1.0} if gpu else {"CPU": 1.0})


def _need(n: int, one: str) -> str:
    return f"{n} {one}{'s' * (n != 1)}"


@dataclass(frozen=True)
class OnRay:
    name: str = "ray"

    def start(self, cfg: Config) -> str:
        """Scorer actors hold a CPU each (and with --gpu a GPU share) for the whole campaign;
        with `workers > 0` the Train workers (a CPU, or with --gpu a GPU, each) are placed
        beside them every round, so the cluster must hold both at once (`reservation`)."""
        from autoal_dist.ray_cluster import announce, cluster_resources, require
        from autoal_dist.scoring.ray_scorer import default_cache_bytes

        default_cache_bytes()  # a bad AUTOAL_DIST_SCORER_CACHE_MB: one line, before Ray starts
        line = announce()
        r = reservation(cfg, cluster_resources())
        if not cfg.workers:
            if cfg.shards:  # the default, one per CPU (GPU), fits by construction
                require(r.total("CPU"), r.total("GPU"),
                        f"--shards {cfg.shards} (one scorer actor per CPU)",
                        "lower --shards (0 = one per CPU the cluster has)")
            return line
        unit = "GPU" if cfg.gpu else "CPU"
        held = "a CPU and a whole GPU" if r.actor["GPU"] >= 1 else "a CPU"
        scorers = (f"--shards {cfg.shards} ({held} per scorer actor" if cfg.shards else
                   f"{_need(r.shards, 'scorer actor')} (--shards 0; {held} each")
        require(r.total("CPU"), r.total("GPU"),
                f"--workers {cfg.workers} (one Ray Train worker per {unit}) beside {scorers}, "
                f"for the whole campaign)",
                f"lower --workers or --shards: both are held at once, so --shards plus "
                f"--workers may be at most the cluster's {unit}s (--shards 0 = the {unit}s "
                f"--workers leaves; --workers 0 = train in the driver)")
        return line

    def scorer(self, cfg: Config, data: Dataset, normalize: Normalizer, spec: ModelSpec,
               device: str, show_progress: bool) -> Scorer:
        from autoal_dist.ray_cluster import cluster_resources, ensure_ray
        from autoal_dist.scoring.ray_scorer import RayScorer

        ensure_ray()
        r = reservation(cfg, cluster_resources())
        return RayScorer(data.train_x, normalize, spec, shards=r.shards,
                         batch_size=cfg.score.batch_size, mc_samples=cfg.score.mc_samples,
                         use_gpu=cfg.gpu, gpu_share=r.actor["GPU"],
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
