"""The round-policy registry: strategy name -> how its round picks a batch.

Names not listed run `rounds.plain_policy` (one registered strategy, its own top-b).
The policies that combine `--candidates` are registered here by where they live, and
imported on first use (`lazy.py`): a name check or `strategies` imports no torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from autoal_dist.lazy import LazyRegistry

if TYPE_CHECKING:
    from autoal_dist.rounds import Policy

POLICIES: LazyRegistry[Policy] = LazyRegistry(
    {"autoal": "autoal_dist.autoal.policy:autoal_policy",
     "albl": "autoal_dist.albl.policy:albl_policy",
     "vote": "autoal_dist.autoal.policy:vote_policy"},
    summaries={"autoal": "AutoAL: each round, the batch of the candidate a simulated "
                         "acquisition on the labeled set supports (docs/autoal.md)",
               "albl": "ALBL (Hsu & Lin 2015): an EXP4.P bandit over the candidates, "
                       "rewarded by importance-weighted accuracy",
               "vote": "the b samples most candidates picked (the plain vote; the control)"})


def policy_for(strategy: str) -> Policy:
    if strategy in POLICIES:
        return POLICIES[strategy]
    from autoal_dist.rounds import plain_policy

    return plain_policy
