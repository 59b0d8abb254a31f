"""What a scorer is: one pass over the unlabeled pool -> every requested strategy's selection.

`local.LocalScorer` runs the pass in the driver process; `ray_scorer.RayScorer` has the same
`select_many` surface and runs it on sharded Ray actors, with the same results bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from autoal_dist.models.backbones import Classifier
from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import ScoringStrategy, get, top_b_scored


@dataclass
class Selection:
    ids: np.ndarray  # selected ids, in selection order
    scores: np.ndarray  # the strategy's score per selected id (NaN for set strategies)


class Scorer(Protocol):
    def select_many(self, model: Classifier, positions: np.ndarray, names: list[str],
                    budget: int, seed: int, labeled_positions: np.ndarray,
                    timings: dict[str, float] | None = None) -> dict[str, Selection]:
        """For each strategy name, its top-`budget` ids among pool `positions` (sorted).

        Adds seconds spent to `timings["score_s"]` (the pass) and `["select_s"]`.
        """


def selection_from_outputs(outputs: PoolOutputs, name: str, budget: int, seed: int,
                           block: int, device: str = "cpu") -> Selection:
    """Run one registered strategy on outputs, keeping scores for the journal.

    `block` is the alignment unit shared with the sharded path (RayScorer), so a
    set strategy computes exactly what it computes there; it runs on `device`.
    """
    strategy = get(name)
    if isinstance(strategy, ScoringStrategy):
        return Selection(*top_b_scored(outputs.ids, strategy.score(outputs, seed), budget))
    ids = strategy.select(outputs, budget, seed, block=block, device=device)
    return Selection(ids, np.full(len(ids), np.nan))
