"""Cross-check our strategies against a peer library (scikit-activeml) on tie-free inputs.

Scores differ by monotone transforms (e.g. skactiveml's margin is 1 - (p1 - p2)),
so we compare the full rank order, not values. BALD is skactiveml's BatchBALD
with a batch of one, which is plain BALD.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from autoal_dist.strategies import STRATEGIES, select
from conftest import random_outputs

pool = pytest.importorskip("skactiveml.pool")

PEER_UNCERTAINTY = {
    "least_confidence": "least_confident",
    "margin": "margin_sampling",
    "entropy": "entropy",
}


def rank(scores: np.ndarray) -> np.ndarray:
    """Positions from most to least preferred (higher score first)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


@pytest.fixture
def out():
    return random_outputs(n=300, c=6, d=8, t=5, seed=7)


@pytest.mark.parametrize("ours,theirs", sorted(PEER_UNCERTAINTY.items()))
def test_uncertainty_rank_order_matches_skactiveml(out, ours, theirs):
    peer = pool.uncertainty_scores(out.probs.astype(np.float64), method=theirs)
    np.testing.assert_array_equal(rank(STRATEGIES[ours].score(out)), rank(peer))


def test_bald_rank_order_matches_skactiveml_batch_bald_of_one(out):
    peer = pool.batch_bald(out.mc_probs.astype(np.float64), batch_size=1, random_state=0)[0]
    np.testing.assert_array_equal(rank(STRATEGIES["bald"].score(out)), rank(peer))


def test_kcenter_matches_skactiveml_k_greedy_center(out):
    labeled = np.random.default_rng(3).normal(size=(10, out.embeddings.shape[1]))
    x = np.vstack([labeled, out.embeddings.astype(np.float64)])
    y = np.r_[np.zeros(len(labeled)), np.full(len(out), np.nan)]
    peer_rows, _ = pool.k_greedy_center(x, y, batch_size=20, random_state=0)
    ours = select("kcenter", dataclasses.replace(out, labeled_embeddings=labeled), 20)
    np.testing.assert_array_equal(ours, out.ids[peer_rows - len(labeled)])
