"""One round's query step: what a round policy may use (`RoundContext`) and the plain policy.

A policy turns the round's trained classifier into a batch of ids. A plain strategy is one
scoring pass + its own top-b; AutoAL, ALBL and vote combine the candidates' passes
(`policies.py` registers them).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from autoal_dist.config import Config
from autoal_dist.data import Dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import Classifier
from autoal_dist.progress import QUIET, Progress
from autoal_dist.scoring import Scorer, Selection
from autoal_dist.seeds import derive

if TYPE_CHECKING:
    from autoal_dist.run import Run
    from autoal_dist.training.ray_job import JobRunner


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
    jobs: JobRunner | None = None  # Ray Train jobs (execution `ray`); None: in-process
    progress: Progress = QUIET  # lines about steps that run on Ray
    # fit(ids, seed, name): a fresh classifier on pool rows `ids`, trained with the run's
    # recipe where the run trains (AutoAL's simulation model); None where no trainer is at hand
    fit: Callable[[np.ndarray, int, str], Classifier] | None = None


Policy = Callable[[RoundContext], Selection]


def plain_policy(ctx: RoundContext) -> Selection:
    """A single registered strategy: one scoring pass, its own top-b."""
    name = ctx.cfg.strategy
    return ctx.scorer.select_many(ctx.model, ctx.unlabeled, [name], ctx.cfg.budget,
                                  derive(ctx.cfg.seed, ctx.round, "select"), ctx.labeled,
                                  ctx.timings)[name]
