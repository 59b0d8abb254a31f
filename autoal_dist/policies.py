"""The round-policy registry: strategy name -> how its round picks a batch.

Names not listed run `rounds.plain_policy` (one registered strategy, its own top-b).
The policies that combine `--candidates` are registered here, by importing them: each
policy module imports only `rounds`, never this registry.
"""
from __future__ import annotations

from autoal_dist.albl.policy import albl_policy
from autoal_dist.autoal.policy import autoal_policy, vote_policy
from autoal_dist.rounds import Policy, plain_policy

POLICIES: dict[str, Policy] = {"autoal": autoal_policy, "albl": albl_policy, "vote": vote_policy}


def policy_for(strategy: str) -> Policy:
    return POLICIES.get(strategy, plain_policy)
