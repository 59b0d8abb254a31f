"""The round's scoring pass: one forward pass over the unlabeled pool, every strategy's pick.

`LocalScorer` (in the driver) and `ray_scorer.RayScorer` (sharded Ray actors; imported
from its module, as it imports Ray) give the same selections bit for bit.
"""
from autoal_dist.scoring.base import Scorer, Selection, selection_from_outputs
from autoal_dist.scoring.local import LocalScorer

__all__ = ["LocalScorer", "Scorer", "Selection", "selection_from_outputs"]
