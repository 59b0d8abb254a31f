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
                    timings: dict[str, float] | None = None,
                    keep: bool = False) -> dict[str, Selection]:
        """For each strategy name, its top-`budget` ids among pool `positions` (sorted).

        Adds seconds spent to `timings["score_s"]` (the pass) and `["select_s"]`. `keep`:
        hold the pass for `rows` until the next call (Ray actors hold theirs anyway; in the
        driver the pass is otherwise freed here: a large pool's outputs are gigabytes).
        """

    def rows(self, ids: np.ndarray) -> PoolOutputs:
        """f's probabilities and embeddings at pool `ids` (sorted, among the positions of
        the last `select_many`, called with `keep`), from that pass: a search that judges
        rows of U reads them from the round's one pass instead of running f over them again."""

    def labeled(self) -> np.ndarray:
        """f's embeddings of the labeled positions of the last `select_many` called with
        `keep` (that call computes them, as it does for the strategies that read them)."""


def rows_of(out: PoolOutputs, ids: np.ndarray) -> PoolOutputs:
    """`out`'s rows at `ids` (sorted); a clear error for an id the pass did not score."""
    at = np.minimum(np.searchsorted(out.ids, ids), max(len(out.ids) - 1, 0))
    missing = ids[out.ids[at] != ids] if len(out.ids) else ids
    if len(missing):
        raise KeyError(f"pool id {int(missing[0])} was not in the last scoring pass "
                       f"({len(missing)} of {len(ids)} ids asked were not)")
    part = out.take(at)
    part.mc_probs, part.labeled_embeddings = None, None
    return part


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
