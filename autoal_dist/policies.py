"""Round policies: how a round turns a trained classifier into a batch of ids.

A plain strategy is one scoring pass + its own top-b. AutoAL is a policy too: it
scores its candidates in one pass, then runs the SearchNet/FitNet search. The
registry maps strategy names to policies; names not listed use `plain_policy`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from autoal_dist.config import Config
from autoal_dist.data import Dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models.backbones import Classifier
from autoal_dist.scoring import Scorer, Selection
from autoal_dist.seeds import derive


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
    run_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    ray_train: bool = False  # train networks as Ray Train jobs (cfg.workers workers)


Policy = Callable[[RoundContext], Selection]


def plain_policy(ctx: RoundContext) -> Selection:
    """A single registered strategy: one scoring pass, its own top-b."""
    name = ctx.cfg.strategy
    return ctx.scorer.select_many(ctx.model, ctx.unlabeled, [name], ctx.cfg.budget,
                                  derive(ctx.cfg.seed, ctx.round, "select"), ctx.labeled,
                                  ctx.timings)[name]


# strategy name -> round policy; anything not listed runs plain_policy.
POLICIES: dict[str, Policy] = {}


def policy_for(strategy: str) -> Policy:
    return POLICIES.get(strategy, plain_policy)




# AutoAL and ALBL register themselves here; imported last because they import this module.
from autoal_dist.autoal import policy as _autoal_policy  # noqa: E402,F401
from autoal_dist.albl import policy as _albl_policy  # noqa: E402,F401
