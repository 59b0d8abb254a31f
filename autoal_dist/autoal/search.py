"""One round of the paper's search (`autoal.mode: paper`) on the labeled set.

L is split 50/50 afresh each round into L_fit and L_search; the candidates'
memberships on L_search come from f's outputs once; FitNet is pre-fit on L_fit;
then SearchNet, the loss head and FitNet take first-order steps together: one
forward pass per iteration, each net stepping on its own objective with the
others' outputs detached (the paper's alternation; no second-order term).

Batching: p, t, s and c are defined over the rows being relaxed. We relax over a
minibatch of L_search per iteration, large enough that every candidate has about
`min_picks` picks in it (the full L_search whenever it fits, always on digits),
and the soft count's target is the candidates' mean pick count *in that batch*:
with a target of r*N (the paper's) while each candidate picks
max(2, ceil(r*N)) rows, r*N < 1 on small sets saturated the sigmoid. Rows,
memberships and losses are aligned by indexing the same row numbers of `Rows.ids`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from autoal_dist.autoal.memberships import candidate_memberships, pick_count
from autoal_dist.autoal.objectives import columns, fitnet_objective, searchnet_objective
from autoal_dist.autoal.relax import aggregate
from autoal_dist.config import AutoALConfig, Config
from autoal_dist.data import Dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.autoal_nets import SearchNet, SearchOutput, build_fitnet
from autoal_dist.models.backbones import Classifier
from autoal_dist.scoring import LocalScorer
from autoal_dist.seeds import derive

if TYPE_CHECKING:
    from autoal_dist.rounds import RoundContext


@dataclass(frozen=True)
class Rows:
    """Samples of one set, aligned by explicit pool ids (sorted)."""

    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @classmethod
    def of(cls, data: Dataset, ids: np.ndarray) -> Rows:
        return cls(ids, data.train_x[ids], data.train_y[ids])

    def batch(self, rows: np.ndarray, normalize: Normalizer,
              device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval transforms (no augmentation): l and A must describe the same input."""
        return (normalize(self.x[rows]).to(device),
                torch.from_numpy(np.asarray(self.y[rows], np.int64)).to(device))


class Comm(Protocol):
    """How one process takes part in a search step (see `SingleProcess`, and
    `autoal_dist.autoal.ray_job.Collective` for Ray Train workers)."""

    def local(self, rows: np.ndarray) -> np.ndarray:
        """This process's contiguous part of a batch's rows."""

    def assemble(self, part: torch.Tensor) -> torch.Tensor:
        """The whole batch's tensor: this process's part live, the others' as constants."""

    def reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum gradients over processes (each saw only its part's rows)."""


class SingleProcess:
    """The whole batch in this process: every method is the identity."""

    def local(self, rows: np.ndarray) -> np.ndarray:
        return rows

    def assemble(self, part: torch.Tensor) -> torch.Tensor:
        return part

    def reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        return None


SINGLE_PROCESS = SingleProcess()


@dataclass
class SearchModels:
    """The nets and their optimizers; optimizer state persists across every step."""

    searchnet: SearchNet
    fitnet: Classifier
    search_opt: torch.optim.Optimizer
    loss_head_opt: torch.optim.Optimizer | None
    fit_opt: torch.optim.Optimizer
    schedules: list[torch.optim.lr_scheduler.LRScheduler]

    def train(self) -> None:
        self.searchnet.train()
        self.fitnet.train()

    def fit_step(self, loss: torch.Tensor, comm: Comm = SINGLE_PROCESS) -> None:
        """A FitNet-only step (pre-fit)."""
        self.fit_opt.zero_grad(set_to_none=True)
        loss.backward()
        comm.reduce_grads(self.fitnet.parameters())
        self.fit_opt.step()

    def step(self, loss: torch.Tensor, comm: Comm = SINGLE_PROCESS) -> None:
        """One step of every net on the sum of their objectives (cross terms are detached,
        so each net gets exactly its own objective's gradient), then decay the SGD rates."""
        opts = [o for o in (self.search_opt, self.loss_head_opt, self.fit_opt) if o is not None]
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        comm.reduce_grads([*self.searchnet.parameters(), *self.fitnet.parameters()])
        for o in opts:
            o.step()
        for s in self.schedules:
            s.step()


def build_models(cfg: Config, input_shape: tuple[int, ...], num_classes: int,
                 device: str) -> SearchModels:
    """SearchNet (+ loss head) with cosine-decayed SGD, FitNet with Adam (the paper's
    alternating updates; docs/autoal.md).

    The loss head uses SearchNet's momentum, weight decay and decay schedule (LPL's
    own recipe is SGD, momentum 0.9, wd 5e-4) at its own rate `loss_head_lr`.
    """
    a = cfg.autoal
    searchnet = SearchNet(cfg.model, input_shape, num_classes, len(cfg.candidates),
                          a.use_loss_head, cfg.pretrained).to(device)
    fitnet = build_fitnet(cfg.model, input_shape, num_classes, cfg.train.dropout,
                          cfg.pretrained).to(device)

    def sgd(params: list[torch.nn.Parameter], lr: float) -> torch.optim.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=a.searchnet_momentum,
                               weight_decay=a.searchnet_weight_decay)

    search_opt = sgd(searchnet.search_parameters(), a.searchnet_lr)
    loss_head_opt = (sgd(list(searchnet.loss_head.parameters()), a.loss_head_lr)
                     if searchnet.loss_head is not None else None)
    schedules: list[torch.optim.lr_scheduler.LRScheduler] = [
        torch.optim.lr_scheduler.CosineAnnealingLR(o, max(1, a.search_iters))
        for o in (search_opt, loss_head_opt) if o is not None]
    fit_opt = torch.optim.Adam(fitnet.parameters(), lr=a.fitnet_lr)
    return SearchModels(searchnet, fitnet, search_opt, loss_head_opt, fit_opt, schedules)


def split_labeled(labeled: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """L -> (L_fit, L_search) at random 50/50, each sorted; L_search gets the odd sample."""
    perm = np.random.default_rng(seed).permutation(np.asarray(labeled, np.int64))
    half = len(perm) // 2
    return np.sort(perm[:half]), np.sort(perm[half:])


def row_batches(n: int, size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """Endless batches of min(size, n) row numbers, reshuffled each pass.

    The short tail of a pass is dropped (no 1-row batch reaches BatchNorm or the
    quantile); with n <= size every batch is the whole set.
    """
    size = min(size, n)
    while True:
        order = torch.randperm(n, generator=generator).numpy()
        for lo in range(0, n - size + 1, size):
            yield order[lo:lo + size]


def search_batch_size(memberships: np.ndarray, a: AutoALConfig) -> int:
    """Rows per step: `batch_size`, raised so each candidate has ~`min_picks` picks in it."""
    n = len(memberships)
    picks = float(memberships.sum(axis=0).mean()) if memberships.size else 0.0
    need = int(np.ceil(a.min_picks * n / picks)) if picks > 0 else n
    return min(n, max(a.batch_size, need))


def batch_target(memberships: torch.Tensor) -> float:
    """The soft count's target on a batch: the candidates' mean pick count in it."""
    return float(memberships.sum(dim=0).mean()) if memberships.numel() else 0.0


def train_search(models: SearchModels, search: Rows, memberships: np.ndarray, fit: Rows,
                 a: AutoALConfig, normalize: Normalizer, device: str,
                 seed: int, comm: Comm | None = None) -> None:
    """FitNet pre-fit on L_fit, then `search_iters` joint first-order steps.

    With several processes (`comm`), every process draws the same batches, runs the
    nets on its part only, and computes the whole batch's objectives from the
    assembled per-row tensors; its backward pass reaches only its own rows, so the
    summed gradients are the single-process gradients (to float rounding).
    """
    comm = comm or SINGLE_PROCESS
    gen = torch.Generator().manual_seed(seed)
    fit_rows = row_batches(len(fit.ids), a.batch_size, gen)
    search_rows = row_batches(len(search.ids), search_batch_size(memberships, a), gen)
    member_t = torch.tensor(memberships, device=device)  # a copy: may be a read-only Ray object

    def fit_logits(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """FitNet's logits on a whole L_fit batch (this process's part live) and its labels."""
        xf, _ = fit.batch(comm.local(rows), normalize, device)
        yf = torch.from_numpy(np.asarray(fit.y[rows], np.int64)).to(device)
        return comm.assemble(models.fitnet(xf)), yf

    models.train()
    for _ in range(a.fitnet_pretrain_iters):
        logits, yf = fit_logits(next(fit_rows))
        models.fit_step(F.cross_entropy(logits, yf), comm)
    for _ in range(a.search_iters):
        rows = next(search_rows)
        xs, ys = search.batch(comm.local(rows), normalize, device)
        loss = comm.assemble(F.cross_entropy(models.fitnet(xs), ys, reduction="none"))
        part = models.searchnet(xs)
        out = SearchOutput(comm.assemble(part.weights),
                           None if part.predicted_loss is None
                           else comm.assemble(part.predicted_loss))
        target = max(1.0, batch_target(member_t[rows]))
        losses = searchnet_objective(out, member_t[rows], loss, search.ids[rows],
                                     target / len(rows), a, seed, max(1, round(target)))
        logits, yf = fit_logits(next(fit_rows))
        fit_loss = fitnet_objective(loss, losses.relaxed.s, logits, yf)
        models.step(losses.searchnet + losses.loss_head + fit_loss, comm)


@dataclass
class Scores:
    weights: np.ndarray  # [n, M (+1)] w_m(x_j)
    columns: np.ndarray  # [n, M (+1)] 0/1 memberships, the loss head's last when used
    z: torch.Tensor  # [n] float64 aggregate


@torch.no_grad()
def score_rows(net: SearchNet, x: np.ndarray, memberships: np.ndarray, ids: np.ndarray, q: int,
               normalize: Normalizer, batch_size: int, device: str) -> Scores:
    """SearchNet in eval mode on samples x (rows aligned with ids): weights, columns, z."""
    net.eval()
    outs = [net(normalize(x[lo:lo + batch_size]).to(device)) for lo in range(0, len(x), batch_size)]
    out = SearchOutput(
        torch.cat([o.weights for o in outs]).cpu(),
        None if net.loss_head is None else torch.cat([o.predicted_loss for o in outs]).cpu(),
    )
    cols = columns(torch.from_numpy(memberships), out, ids, q)
    return Scores(out.weights.numpy(), cols.numpy(), aggregate(cols, out.weights))


def labeled_memberships(ctx: RoundContext, search_ids: np.ndarray, fit_ids: np.ndarray,
                        q: int, seed: int) -> np.ndarray:
    """Each candidate's top-q of L_search from one eval-mode pass of the frozen f.

    L_fit plays the labeled set for strategies seeded from it (k-center). Run in
    the driver: L_search is small next to U, and its cost is search time, not score time.
    """
    cfg = ctx.cfg
    scorer = LocalScorer(ctx.data.train_x, ctx.normalize, cfg.score.batch_size,
                         cfg.score.mc_samples, ctx.device, show_progress=False)
    outputs = scorer.outputs(ctx.model, search_ids, cfg.candidates, seed, fit_ids)
    return candidate_memberships(outputs, cfg.candidates, q, seed)


def paper_diagnostics(searchnet: SearchNet, fitnet: torch.nn.Module, search: Rows,
                      memberships: np.ndarray, a: AutoALConfig, normalize: Normalizer,
                      device: str, seed: int) -> dict[str, float | int]:
    """The round's `autoal_search.parquet` values with the trained nets, on one search
    batch of L_search (all of it when it fits): soft count vs the candidates' pick
    count there, SearchNet's gradient norm (trunk + weight head) and Spearman(z,
    FitNet's loss). FitNet was trained on these rows' s-weighted loss, so the
    correlation is in-sample: the failure the embed mode was built to avoid."""
    searchnet.eval()
    fitnet.eval()
    size = search_batch_size(memberships, a)
    rows = np.sort(np.random.default_rng(seed).permutation(len(search.ids))[:size])
    x, y = search.batch(rows, normalize, device)
    with torch.no_grad():
        loss = F.cross_entropy(fitnet(x), y, reduction="none")
    member = torch.tensor(memberships[rows], device=device)
    target = max(1.0, batch_target(member))
    losses = searchnet_objective(searchnet(x), member, loss, search.ids[rows], target / size,
                                 a, seed, max(1, round(target)))
    grads = torch.autograd.grad(losses.searchnet, searchnet.search_parameters(),
                                allow_unused=True)
    # a Tensor: the weight head's gradient is never None
    sq_sum = cast(torch.Tensor, sum((g.double() ** 2).sum() for g in grads if g is not None))
    norm = float(torch.sqrt(sq_sum))
    z = losses.relaxed.p.detach().cpu().numpy()
    corr = spearmanr(z, loss.cpu().numpy()).statistic if size > 2 else np.nan
    return {"iterations": a.search_iters, "soft_count": float(losses.relaxed.s.detach().sum()),
            "target_count": target, "grad_norm": norm, "rank_corr": float(corr),
            "evidence_rows": size}


@dataclass(frozen=True)
class SearchJob:
    """What fitting the nets needs besides the rows: shipped to Ray Train workers."""

    cfg: Config
    input_shape: tuple[int, ...]
    num_classes: int
    seed: int


FitNets = Callable[[SearchJob, "Rows", "Rows", np.ndarray, Normalizer],
                   tuple[SearchNet, torch.nn.Module]]


def search_round(ctx: RoundContext, r: float,
                 fit_nets: FitNets | None = None) -> tuple[SearchNet, dict[str, float | int]]:
    """Split L, compute A on L_search once, train the nets (in-process, or by `fit_nets`);
    return SearchNet in eval mode and the round's diagnostics."""
    cfg = ctx.cfg
    a = cfg.autoal
    fit_ids, search_ids = split_labeled(ctx.labeled, derive(cfg.seed, ctx.round, "split"))
    seed = derive(cfg.seed, ctx.round, "search")
    memberships = labeled_memberships(ctx, search_ids, fit_ids,
                                      pick_count(r, len(search_ids), a.min_picks), seed)
    search, fit = Rows.of(ctx.data, search_ids), Rows.of(ctx.data, fit_ids)
    if fit_nets is not None:  # e.g. a Ray Train job (autoal/ray_job.py)
        job = SearchJob(cfg, ctx.data.input_shape, ctx.data.num_classes, seed)
        searchnet, fitnet = fit_nets(job, search, fit, memberships, ctx.normalize)
        searchnet, fitnet = searchnet.to(ctx.device), fitnet.to(ctx.device)
    else:
        torch.manual_seed(seed)
        models = build_models(cfg, ctx.data.input_shape, ctx.data.num_classes, ctx.device)
        train_search(models, search, memberships, fit, a, ctx.normalize, ctx.device, seed)
        searchnet, fitnet = models.searchnet, models.fitnet
    diag = paper_diagnostics(searchnet, fitnet, search, memberships, a, ctx.normalize,
                             ctx.device, seed)
    return searchnet.eval(), diag
