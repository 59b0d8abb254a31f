"""One round's query step: what a round policy may use (`RoundContext`) and the plain policy.

A policy turns the round's trained classifier into a batch of ids. A plain strategy is one
scoring pass + its own top-b; AutoAL, ALBL and vote combine the candidates' passes
(`policies.py` registers them).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from autoal_dist.config import Config
from autoal_dist.data import Dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.fitting import InProcess
from autoal_dist.models.backbones import Classifier
from autoal_dist.progress import QUIET, Progress
from autoal_dist.scoring import Scorer, Selection
from autoal_dist.seeds import derive

if TYPE_CHECKING:
    from autoal_dist.autoal.embed_search import FitWeights
    from autoal_dist.autoal.gain import Simulate
    from autoal_dist.autoal.search import FitNets
    from autoal_dist.config import TrainConfig
    from autoal_dist.models.backbones import ModelSpec
    from autoal_dist.run import Run


class Fitter(Protocol):
    """Where a run fits networks, handed out by its execution mode (execution.py): in this
    process, or as Ray Train jobs. The loop and the policies ask it to fit; they never ask
    which it is."""

    def describe(self) -> str:
        """Where training runs, for the progress lines."""

    def classifier(self, spec: ModelSpec, x: np.ndarray, y: np.ndarray, normalize: Normalizer,
                   t: TrainConfig, seed: int, use_augment: bool, name: str, device: str,
                   progress: Callable[[int, float], None] | None) -> Classifier:
        """A fresh classifier trained on (x, y) with recipe `t` (progress: in-process only)."""

    def simulate(self, name: str) -> Simulate:
        """AutoAL's reward evidence: the gain simulation's splits or the expected error
        reduction's label draws (dealt to the Train workers when there are)."""

    def fit_weights(self, name: str) -> FitWeights:
        """AutoAL's strategy-level weights (mode embed, reward loss_rank)."""

    def fit_nets(self, name: str) -> FitNets | None:
        """AutoAL's paper-mode nets as a job, or None: in this process."""


class Fit(Protocol):
    """A fresh classifier on pool rows `ids`, trained with the run's recipe where the run
    trains (AutoAL's simulation model f_B); `min_steps` overrides the recipe's step floor
    (f_B's is scaled to its share of L)."""

    def __call__(self, ids: np.ndarray, seed: int, name: str, *,
                 min_steps: int | None = None) -> Classifier: ...


@dataclass
class RoundContext:
    """What a selection policy may use in one round."""

    cfg: Config
    data: Dataset
    normalize: Normalizer
    model: Classifier
    scorer: Scorer
    round: int
    labeled: np.ndarray  # sorted pool ids
    unlabeled: np.ndarray  # sorted pool ids
    device: str
    run: Run  # the run directory: a policy's own files (run/directory.py)
    timings: dict[str, float] = field(default_factory=dict)
    fitter: Fitter = field(default_factory=InProcess)  # where networks are fitted (execution)
    progress: Progress = QUIET  # lines about steps that run on Ray
    fit: Fit | None = None  # None where no trainer is at hand


Policy = Callable[[RoundContext], Selection]


def plain_policy(ctx: RoundContext) -> Selection:
    """A single registered strategy: one scoring pass, its own top-b."""
    name = ctx.cfg.strategy
    return ctx.scorer.select_many(ctx.model, ctx.unlabeled, [name], ctx.cfg.budget,
                                  derive(ctx.cfg.seed, ctx.round, "select"), ctx.labeled,
                                  ctx.timings)[name]
