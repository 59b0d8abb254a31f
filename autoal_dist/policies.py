"""The round-policy registry: strategy name -> how its round picks a batch.

Names not listed run `rounds.plain_policy` (one registered strategy, its own top-b).
The policies that combine `--candidates` are registered here by where they live, and
imported on first use (`lazy.py`): a name check or `strategies` imports no torch.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autoal_dist.lazy import LazyRegistry

if TYPE_CHECKING:
    from autoal_dist.rounds import Policy
    from autoal_dist.run import Run

POLICIES: LazyRegistry[Policy] = LazyRegistry(
    {"autoal": "autoal_dist.autoal.policy:autoal_policy",
     "albl": "autoal_dist.albl.policy:albl_policy",
     "vote": "autoal_dist.autoal.policy:vote_policy"},
    summaries={"autoal": "AutoAL: each round, the batch of the candidate a simulated "
                         "acquisition on the labeled set supports (docs/autoal.md)",
               "albl": "ALBL (Hsu & Lin 2015): an EXP4.P bandit over the candidates, "
                       "rewarded by importance-weighted accuracy",
               "vote": "the b samples most candidates picked (the plain vote; the control)"})



FileCheck = Callable[["Run", str], None]  # ValueError(reason) when the file is not sound
# policy -> its table {file name: check} of the files it keeps in the run directory: the
# policy names them and says what a sound one is; `Run.check` runs the checks
POLICY_FILES: LazyRegistry[dict[str, FileCheck]] = LazyRegistry(
    {"albl": "autoal_dist.albl.state:FILES", "autoal": "autoal_dist.autoal.report:FILES"})


def policy_files() -> dict[str, FileCheck]:
    """Every round policy's run-directory files, with their checks."""
    return {name: check for policy in POLICY_FILES for name, check in POLICY_FILES[policy].items()}


def policy_for(strategy: str) -> Policy:
    if strategy in POLICIES:
        return POLICIES[strategy]
    from autoal_dist.rounds import plain_policy

    return plain_policy
