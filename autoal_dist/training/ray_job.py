"""Classifier training as a Ray Train (V2) TorchTrainer job.

`workers=0` is Ray Train's local mode (the loop runs in this process: tests,
laptops); `workers=N` runs N DDP workers (gloo on CPU, nccl on GPU). Each round
gets a unique run name, because reusing a name silently resumes the old run.
Rank 0 checkpoints the loop's whole state under the run directory; a crashed
worker group is restarted by FailureConfig and resumes from the last checkpoint.
"""
from __future__ import annotations

import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from autoal_dist import remote
from autoal_dist.config import TrainConfig
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import Classifier, ModelSpec
from autoal_dist.training.loop import num_steps, train_classifier

STATE_FILE = "train_state.pt"
ABORT_TIMEOUT_S = 5.0  # Ctrl-C: how long to let Train tear its workers down


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, small enough to ship in train_loop_config."""

    spec: ModelSpec
    settings: TrainConfig
    seed: int
    use_augment: bool
    checkpoint_every: int
    fail_at_step: int = -1  # test hook: crash the first attempt at this step

    @property
    def threads(self) -> int:
        """torch CPU threads (see TrainConfig.threads)."""
        return self.settings.threads


def _load_state(checkpoint: ray.train.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)


def report_state(state: dict[str, Any], metrics: dict[str, Any], rank: int,
                 local_dir: str) -> None:
    """Rank 0 saves `state` as a checkpoint; every rank reports (it is a collective).

    Worker groups write to a temp dir that Ray uploads to the run's storage and
    deletes. Local mode (`local_dir` set) does not upload, so it writes under the
    run's storage itself and keeps only the newest checkpoint.
    """
    if rank != 0:
        ray.train.report(metrics)
        return
    if not local_dir:
        d = Path(tempfile.mkdtemp(prefix="autoal-ckpt-"))
    else:
        d = Path(local_dir) / uuid.uuid4().hex
        d.mkdir(parents=True)
    torch.save(state, d / STATE_FILE)
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(d)),
                     delete_local_checkpoint_after_upload=not local_dir)
    if local_dir:
        for old in Path(local_dir).iterdir():
            if old != d:
                shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class JobRunner:
    """Where a run's Ray Train jobs run: `workers` DDP workers (0: Ray Train runs the loop
    in the driver process), on GPUs or not, with checkpoints under `storage` (a local
    directory or, for workers on other nodes, a pyarrow-fs URI: `remote.train_location`)."""

    workers: int
    use_gpu: bool
    storage: str
    max_failures: int = 2

    def run(self, loop: Callable[[dict[str, Any]], None], config: dict[str, Any],
            name: str) -> dict[str, Any]:
        """Fit a TorchTrainer running `loop` and return the state of its last checkpoint.

        A unique run name per call (reusing one silently resumes an old run). The run's
        checkpoints exist to survive a crash inside this fit; once its result is back
        they are deleted (~100 MB per ResNet round would otherwise fill the disk).
        Local mode needs a local `storage`. `config` gains `local_dir` for report_state.
        A worker group that cannot be placed is named, and on a fixed cluster ends the fit
        with a ResourceError (`TrainWatch`).
        """
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from autoal_dist.training.watch import StopGate, TrainWatch

        workers = self.workers
        run_name = f"{name}-{uuid.uuid4().hex[:8]}"
        if remote.is_uri(self.storage):
            if workers == 0:
                raise ValueError(f"Ray Train local mode writes its checkpoints to a local "
                                 f"directory, got {self.storage}")
            storage = str(self.storage)
        else:
            storage = str(Path(self.storage).absolute())
        local_dir = str(Path(storage, run_name, "local")) if workers == 0 else ""
        gate: list[Any] = [StopGate()] if workers else []  # a Train callback, not a user one
        trainer = _interruptible(TorchTrainer)(
            loop, train_loop_config={**config, "local_dir": local_dir},
            scaling_config=ScalingConfig(num_workers=workers,
                                         use_gpu=self.use_gpu and workers > 0),
            run_config=RunConfig(name=run_name, storage_path=storage,
                                 failure_config=FailureConfig(max_failures=self.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=1),
                                 callbacks=gate))
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main_thread else None
        try:
            with TrainWatch(name, workers) if workers else nullcontext() as watch:
                try:
                    result = trainer.fit()
                except Exception:
                    if watch is not None:  # it stopped the run: its line, not Train's
                        watch.reraise()
                    raise
        finally:
            if main_thread:  # Train leaves its handler installed: it would swallow Ctrl-C
                signal.signal(signal.SIGINT, previous)
        state = _load_state(result.checkpoint)
        remote.remove_tree(remote.join(storage, run_name))
        if state is None:
            raise RuntimeError(f"Ray Train run {run_name} ended without a checkpoint")
        return state


def _interruptible(trainer_cls: type) -> type:
    """`trainer_cls` whose Ctrl-C aborts the Train run (as Ray Train's own handler does) and
    then interrupts this process, so a campaign stops promptly and stays resumable. Train's
    handler only aborts the run, and `fit` then returns as if it had ended."""

    class Interruptible(trainer_cls):
        def _register_sigint_handler(self, controller: Any) -> None:
            def handler(signum: int, frame: Any) -> None:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                try:
                    ray.get(controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
                except Exception:  # the controller is gone or slow: stop anyway
                    pass
                raise KeyboardInterrupt

            signal.signal(signal.SIGINT, handler)

    return Interruptible


class InjectedFailure(RuntimeError):
    """Raised by the fail_at_step test hook."""


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every worker (or in-process in local mode)."""
    job: TrainJob = config["job"]
    x, y = ray.get(config["x"]), ray.get(config["y"])
    normalize: Normalizer = config["normalize"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    resume = _load_state(ray.train.get_checkpoint())
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)  # identical initial weights on every rank
    model: torch.nn.Module = job.spec.build()  # a DDP wrapper when world > 1
    device = ray.train.torch.get_device()
    if world > 1:
        model = ray.train.torch.prepare_model(model)

    def on_checkpoint(state: dict[str, Any]) -> None:
        report_state(state, {"step": state["step"]}, rank, config["local_dir"])

    def progress(step: int, loss: float) -> None:
        if step == job.fail_at_step and resume is None:
            raise InjectedFailure(f"injected failure at step {step}")

    train_classifier(model, x, y, normalize, job.settings, job.seed,
                     use_augment=job.use_augment, device=device, rank=rank, world=world,
                     resume=resume, checkpoint_every=job.checkpoint_every,
                     on_checkpoint=on_checkpoint, progress=progress)


def fit_classifier(x: np.ndarray, y: np.ndarray, normalize: Normalizer, job: TrainJob,
                   jobs: JobRunner, name: str) -> Classifier:
    """Train through a TorchTrainer and return the final weights in a local Classifier."""
    state = jobs.run(train_loop, {"job": job, "x": ray.put(x), "y": ray.put(y),
                                  "normalize": normalize}, name)
    if state["step"] != num_steps(len(x), job.settings):
        raise RuntimeError(f"training {name} ended at step {state['step']}, not at the end")
    torch.manual_seed(job.seed)
    model = job.spec.build()
    model.load_state_dict(state["model"])
    return model.eval()
