"""The greedy steps' float32 screen (`strategies/screen.py`): the exact float64 distances are
a per-row function, and the screen never skips a row whose minimum would change."""
from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies.badge import BadgeShard
from autoal_dist.strategies.kcenter import KCenterShard
from autoal_dist.strategies.kmeans import FIXED_POINT, KMeansShard, lloyd
from autoal_dist.strategies.screen import exact_sq_dists, row_dots
from autoal_dist.strategies.sharded import greedy_select, sq_norms
from conftest import random_outputs


@pytest.mark.parametrize("d", [1, 7, 64, 77])
def test_row_dots_depend_on_the_two_rows_alone(d):
    """Any batch, any position, numpy or torch: the same bits (and close to the true dot)."""
    r = np.random.default_rng(d)
    a, b = r.normal(size=(50, d)), r.normal(size=d)
    whole = row_dots(a, b)
    rows = r.permutation(50)[:13]
    assert np.array_equal(row_dots(a[rows], b), whole[rows])
    assert np.array_equal(row_dots(a.astype(np.float32), b), row_dots(
        a.astype(np.float32).astype(np.float64), b))
    assert np.array_equal(row_dots(torch.from_numpy(a), torch.from_numpy(b)).numpy(), whole)
    assert np.array_equal(row_dots(a, np.tile(b, (50, 1))), whole)
    np.testing.assert_allclose(whole, a @ b, rtol=1e-12, atol=1e-12)


def hard_outputs(scale: float, dtype: type, n: int = 300, d: int = 24) -> PoolOutputs:
    """Near-ties everywhere: clusters of nearly identical rows (some exact duplicates, and
    the cluster's probabilities shared) at a common norm, labeled rows in near-equal pairs,
    so many distances agree to the last bits, at any scale and dtype."""
    r = np.random.default_rng(7)
    base = r.normal(size=(6, d))
    cluster = r.integers(0, 6, n)
    x = base[cluster] + r.normal(size=(n, d)) * 1e-6
    x[::17] = x[0]
    logits = r.normal(size=(6, 5))[cluster] + r.normal(size=(n, 5)) * 1e-7
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labeled = base[[0, 0, 1, 1, 2]] + r.normal(size=(5, d)) * 1e-5
    return PoolOutputs(np.arange(n) * 3, p.astype(np.float32), (x * scale).astype(dtype),
                       labeled_embeddings=(labeled * scale).astype(dtype))


def unscreened(shard, centers: list[int]) -> np.ndarray:
    """min over the centers of the exact distance of every row, no screen."""
    d2 = np.full(shard.n, np.inf)
    for row in centers:
        c = shard._prepare(shard._payload(row))
        d2 = np.minimum(d2, shard._exact_d2(np.arange(shard.n), *c))
    return d2


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e12])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [KMeansShard, BadgeShard, partial(KMeansShard, unit=True)],
                         ids=["kmeans", "badge", "unit-rows"])
def test_screened_folds_equal_exact_folds_bit_for_bit(make, dtype, scale):
    out = hard_outputs(scale, dtype)
    shard = make(dataclasses.replace(out, labeled_embeddings=None), block=16)
    chosen = greedy_select([shard], 40, seed=1)
    rows = [int(np.flatnonzero(out.ids == c.id)[0]) for c in chosen[:-1]]
    assert np.array_equal(shard.min_d2, unscreened(shard, rows))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e12])
def test_kcenter_labeled_seed_is_the_exact_minimum(scale):
    out = hard_outputs(scale, np.float64)
    shard = KCenterShard(out, block=16)
    lab = out.labeled_embeddings
    exact = np.full(len(out), np.inf)
    for c in lab:
        exact = np.minimum(exact, exact_sq_dists(np, out.embeddings, sq_norms(out.embeddings),
                                                 c, sq_norms(c)))
    assert np.array_equal(shard.min_d2, exact)


def test_kmeans_sums_kept_across_passes_equal_the_labels_sums():
    out = random_outputs(n=500, d=6, seed=2)
    shard = KMeansShard(out, block=32)
    seeds = np.stack([c.payload[0] for c in greedy_select([shard], 9, seed=0)])
    _, changes = lloyd([shard], seeds, tol=0.0)
    assert len(changes) > 2  # passes after the first moved rows one by one
    labels = shard.labels[: shard.n]
    fixed = np.round(out.embeddings.astype(np.float64) * FIXED_POINT).astype(np.int64)
    sums, counts = shard.totals
    assert np.array_equal(counts, np.bincount(labels, minlength=9))
    assert np.array_equal(sums, np.stack([fixed[labels == j].sum(0) for j in range(9)]))


def test_coarse_float32_products_widen_the_screen(monkeypatch):
    """torch with TF32/bf16 float32 matmuls: the bound uses their unit, same ids."""
    out = random_outputs(n=200, d=16, seed=4)
    ids = KMeansShard(out, block=16)
    expected = [c.id for c in greedy_select([ids], 20, seed=3)]
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "medium")
    shard = KMeansShard(out, block=16, device="torch-cpu")
    assert shard.arrays.f32_unit == 2.0**-8
    assert [c.id for c in greedy_select([shard], 20, seed=3)] == expected


def test_probcover_without_its_ball_graph_selects_the_same(monkeypatch):
    """A shard whose within-delta pairs exceed PAIRS_MAX measures every step again: same ids
    (1 and 3 shards)."""
    from autoal_dist.strategies import probcover, select, typiclust
    from conftest import run_sharded

    monkeypatch.setattr(typiclust, "REF_MAX", 64)
    out = random_outputs(n=300, d=3, seed=6)  # 3-d: balls hold many rows
    want = select("probcover", out, 30, seed=1)
    monkeypatch.setattr(probcover, "PAIRS_MAX", 0)
    assert np.array_equal(select("probcover", out, 30, seed=1), want)
    assert np.array_equal(run_sharded("probcover", out, 30, 1, 3, block=16), want)
