"""AutoAL's bi-level search (SearchNet + loss head + FitNet) as a Ray Train job.

Why not plain DDP: the relaxation couples every row of a batch (softmax over
rows, quantile threshold, soft count), so a worker's rows cannot be trained
alone, and DDP would not reduce gradients of such a graph correctly anyway.
Instead each worker runs the nets on its contiguous part of the batch, gathers
the other parts' per-row outputs as constants (`Collective.assemble`), computes
the whole batch's objectives exactly as one process would, and its backward
pass reaches only its own rows; the gradients are then summed explicitly across
workers (`reduce_grads`) — the single-process gradient, to float rounding.

BatchNorm statistics are per worker on CPU (SyncBatchNorm needs GPUs; it is used
with --gpu), and dropout masks are per-worker streams: as in any DDP run, models
with either are equivalent in distribution, not bit for bit, to one process.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist

from autoal_dist.autoal.gain import RewardProblem
from autoal_dist.autoal.search import Rows, SearchJob, build_models, train_search
from autoal_dist.autoal.weights import Evidence, WeightFit, fit_weights
from autoal_dist.config import AutoALConfig
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.autoal_nets import SearchNet
from autoal_dist.training.ray_job import JobRunner, report_state


class Collective:
    """Comm over the Train workers' torch.distributed group (gloo on CPU, nccl on GPU)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def _bounds(self, n: int) -> list[int]:
        return [n * k // self.world for k in range(self.world + 1)]

    def local(self, rows: np.ndarray) -> np.ndarray:
        b = self._bounds(len(rows))
        return rows[b[self.rank]:b[self.rank + 1]]

    def assemble(self, part: torch.Tensor) -> torch.Tensor:
        n_local = torch.tensor([len(part)], device=part.device)
        sizes = [torch.zeros_like(n_local) for _ in range(self.world)]
        dist.all_gather(sizes, n_local)
        width = int(max(s.item() for s in sizes))
        padded = torch.zeros((width, *part.shape[1:]), dtype=part.dtype, device=part.device)
        padded[:len(part)] = part.detach()
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded)
        pieces = [g[:int(s.item())] for g, s in zip(gathered, sizes)]
        pieces[self.rank] = part  # live: gradients flow into this worker's rows only
        return torch.cat(pieces)

    def reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def search_loop(config: dict[str, Any]) -> None:
    job: SearchJob = config["job"]
    search, fit = ray.get(config["search"]), ray.get(config["fit"])
    memberships: np.ndarray = ray.get(config["memberships"])
    normalize: Normalizer = config["normalize"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = str(ray.train.torch.get_device())
    torch.set_num_threads(job.cfg.train.threads)
    torch.manual_seed(job.seed)  # identical initial nets on every worker
    models = build_models(job.cfg, job.input_shape, job.num_classes, device)
    if device.startswith("cuda") and world > 1:
        models.searchnet = torch.nn.SyncBatchNorm.convert_sync_batchnorm(models.searchnet)
        models.fitnet = torch.nn.SyncBatchNorm.convert_sync_batchnorm(models.fitnet)
    comm = Collective(rank, world) if world > 1 else None
    train_search(models, search, memberships, fit, job.cfg.autoal, normalize, device,
                 job.seed, comm)
    state = {net: {k: v.cpu() for k, v in getattr(models, net).state_dict().items()}
             for net in ("searchnet", "fitnet")}
    report_state(state, {"done": 1}, rank, config["local_dir"])


def fit_search(job: SearchJob, search: Rows, fit: Rows, memberships: np.ndarray,
               normalize: Normalizer, jobs: JobRunner,
               name: str) -> tuple[SearchNet, torch.nn.Module]:
    """Run the search on `workers` Train workers (0 = local mode): (SearchNet, FitNet), eval mode.

    A failed worker group is retried from scratch: the search is deterministic and
    short next to scoring, so a mid-search checkpoint would buy little.
    """
    state = jobs.run(search_loop, {"job": job, "search": ray.put(search), "fit": ray.put(fit),
                                   "memberships": ray.put(memberships), "normalize": normalize},
                     name)
    torch.manual_seed(job.seed)
    models = build_models(job.cfg, job.input_shape, job.num_classes, "cpu")
    models.searchnet.load_state_dict(state["searchnet"])
    models.fitnet.load_state_dict(state["fitnet"])
    return models.searchnet.eval(), models.fitnet.eval()


def weights_loop(config: dict[str, Any]) -> None:
    """Mode embed on a Train worker: the strategy-level fit is a few hundred steps on a
    vector of M logits, so splitting it would cost more in collectives than it computes;
    every worker runs the same deterministic fit and rank 0 reports it."""
    evidence, active, autoal_cfg = ray.get(config["problem"])
    fit = fit_weights(evidence, active, autoal_cfg)
    state = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v  # weights_only-loadable
             for k, v in dataclasses.asdict(fit).items()}
    report_state({"fit": state}, {"done": 1},
                 ray.train.get_context().get_world_rank(), config["local_dir"])


def fit_weights_job(evidence: list[Evidence], active: np.ndarray, a: AutoALConfig,
                    jobs: JobRunner, name: str) -> WeightFit:
    """`fit_weights` as a Ray Train job on `jobs.workers` workers (the same result as
    in-process)."""
    state = jobs.run(weights_loop, {"problem": ray.put((evidence, active, a))}, name)
    fields: dict[str, Any] = {k: v.numpy() if isinstance(v, torch.Tensor) else v
                              for k, v in state["fit"].items()}
    return WeightFit(**fields)


def simulate_loop(config: dict[str, Any]) -> None:
    """Reward `gain` or `eer` on a Train worker: the units (splits, label draws) are
    independent fits, so worker k computes units k, k + W, ... and rank 0 gathers every
    worker's rows (an all-gather over the workers' gloo/nccl group) and reports them in
    unit order."""
    problem, splits = ray.get(config["problem"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(1)
    mine = splits[rank::world]
    part = problem.gains(mine)
    parts: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(parts, (mine, part))
    else:
        parts = [(mine, part)]
    rows = dict(pair for got in parts for pair in zip(got[0], got[1]))
    gains = np.stack([rows[s] for s in splits])
    report_state({"gains": torch.from_numpy(gains)}, {"done": 1}, rank, config["local_dir"])


def simulate_job(problem: RewardProblem, splits: list[int], jobs: JobRunner,
                 name: str) -> np.ndarray:
    """`problem.gains` with the units dealt to `jobs.workers` Train workers: the same
    [units, options] array as in-process, each worker fitting its share."""
    state = jobs.run(simulate_loop, {"problem": ray.put((problem, list(splits)))}, name)
    return state["gains"].numpy()
