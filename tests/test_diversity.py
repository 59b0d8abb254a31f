"""Set-selecting strategies (kcenter, badge, kmeans): math, contract, sharding exactness."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies import STRATEGIES, select
from autoal_dist.strategies.badge import BadgeShard
from autoal_dist.strategies.kmeans import KMeansShard, converged, lloyd
from autoal_dist.strategies.sharded import (
    d2_race_keys,
    greedy_select,
    shard_slices,
)
from conftest import random_outputs, run_sharded

SET_STRATEGIES = ["kcenter", "badge", "kmeans"]


def with_labeled(out: PoolOutputs, m: int = 6, seed: int = 1) -> PoolOutputs:
    labeled = np.random.default_rng(seed).normal(size=(m, out.embeddings.shape[1]))
    return dataclasses.replace(out, labeled_embeddings=labeled.astype(np.float32))


def with_duplicates(out: PoolOutputs) -> PoolOutputs:
    """Rows 0..9 repeated at the end under new ids: exact distance ties everywhere."""
    rows = np.r_[np.arange(len(out)), np.arange(10)]
    dup = out.take(rows)
    dup.ids = np.r_[out.ids, out.ids.max() + 1 + np.arange(10)]
    return dup



def kcenter_reference(out: PoolOutputs, budget: int, seed: int) -> np.ndarray:
    """Straight O(N*b) greedy k-center: direct squared distances, no sharding, no blocks."""
    x = out.embeddings.astype(np.float64)
    dist = lambda c: ((x - c) ** 2).sum(axis=1)  # noqa: E731
    min_d = np.full(len(x), np.inf)
    for c in [] if out.labeled_embeddings is None else out.labeled_embeddings.astype(np.float64):
        min_d = np.minimum(min_d, dist(c))
    chosen: list[int] = []
    for _ in range(budget):
        if np.isinf(min_d).all():
            i = int(np.argmin(hashed_uniform(out.ids, seed)))
        else:
            i = int(np.argmax(np.where(np.isin(np.arange(len(x)), chosen), -np.inf, min_d)))
        chosen.append(i)
        min_d = np.minimum(min_d, dist(x[i]))
    return out.ids[chosen]


def test_badge_factorized_distances_match_explicit_gradient_embeddings():
    out = random_outputs(n=30, c=4, d=5)
    p, e = out.probs.astype(np.float64), out.embeddings.astype(np.float64)
    a = p - np.eye(out.num_classes)[p.argmax(axis=1)]
    g = (a[:, :, None] * e[:, None, :]).reshape(len(out), -1)  # explicit [N, C*D]
    shard = BadgeShard(out, block=7)

    first = shard.best(seed=0, step=0)
    assert first.id == out.ids[np.argmax((g ** 2).sum(axis=1))]

    naive = np.full(len(out), np.inf)
    for row in [int(np.flatnonzero(out.ids == first.id)[0]), 3, 17]:
        shard.add_center(int(out.ids[row]), (shard.a[row], shard.e[row]))
        naive = np.minimum(naive, ((g - g[row]) ** 2).sum(axis=1))
    np.testing.assert_allclose(shard.min_d2, naive, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("seed", [0, 5])
def test_kcenter_matches_reference(labeled, seed):
    out = random_outputs(n=120, d=6, seed=seed)
    out = with_labeled(out) if labeled else out
    expected = kcenter_reference(out, budget=25, seed=seed)
    np.testing.assert_array_equal(select("kcenter", out, 25, seed=seed), expected)


def test_d2_race_samples_proportionally_to_d2():
    ids = np.arange(4, dtype=np.int64)
    d2 = np.array([0.0, 1.0, 2.0, 5.0])
    wins = np.bincount([np.argmin(d2_race_keys(ids, d2, seed, 3)) for seed in range(4000)],
                       minlength=4) / 4000
    np.testing.assert_allclose(wins, d2 / d2.sum(), atol=0.03)
    assert wins[0] == 0  # D^2 = 0 is never drawn


@pytest.mark.parametrize("name", SET_STRATEGIES)
def test_contract_unique_ids_deterministic(name):
    out = with_labeled(random_outputs(n=80, d=6))
    ids = select(name, out, 12, seed=3)
    assert len(ids) == 12 and len(set(ids.tolist())) == 12
    assert set(ids.tolist()) <= set(out.ids.tolist())
    np.testing.assert_array_equal(ids, select(name, out, 12, seed=3))
    assert STRATEGIES[name].kind == "set"


@pytest.mark.parametrize("name", ["badge", "kmeans", "kcenter"])
def test_selection_changes_with_seed(name):
    out = random_outputs(n=80, d=6)  # no labeled set: kcenter's first center is seeded too
    picks = {tuple(select(name, out, 10, seed=s).tolist()) for s in range(4)}
    assert len(picks) > 1


@pytest.mark.parametrize("name", SET_STRATEGIES)
def test_budget_equal_to_pool_returns_every_id(name):
    out = random_outputs(n=20, d=3)
    assert sorted(select(name, out, 20).tolist()) == out.ids.tolist()


@pytest.mark.parametrize("name", SET_STRATEGIES)
@pytest.mark.parametrize("n_shards", [3, 20])  # 20 > 14 blocks: some shards are empty
def test_sharding_invariance_bit_for_bit(name, n_shards):
    out = with_duplicates(with_labeled(random_outputs(n=100, d=6)))
    single = run_sharded(name, out, budget=15, seed=2, n_shards=1, block=8)
    np.testing.assert_array_equal(single, select(name, out, 15, seed=2))
    np.testing.assert_array_equal(run_sharded(name, out, 15, 2, n_shards, block=8), single)


def test_shards_must_start_on_block_boundaries():
    assert all(sl.start % 8 == 0 for sl in shard_slices(100, 3, 8))
    assert sum(sl.stop - sl.start for sl in shard_slices(100, 3, 8)) == 100
    with pytest.raises(ValueError, match="block"):
        KMeansShard(random_outputs(n=10), block=8, start=4)


def test_kmeans_picks_one_sample_per_well_separated_blob():
    r = np.random.default_rng(0)
    centers = 100.0 * np.eye(5, 4)
    emb = (np.repeat(centers, 20, axis=0) + r.normal(size=(100, 4))).astype(np.float32)
    out = PoolOutputs(np.arange(100), np.full((100, 2), 0.5, np.float32), emb)
    picks = select("kmeans", out, 5, seed=1)
    assert sorted(picks // 20) == [0, 1, 2, 3, 4]
    for i in picks:  # each pick is the sample nearest its blob's mean
        blob = emb[i // 20 * 20:(i // 20 + 1) * 20].astype(np.float64)
        assert i % 20 == np.argmin(((blob - blob.mean(axis=0)) ** 2).sum(axis=1))


def test_kcenter_through_registry_without_labeled_embeddings():
    out = random_outputs(n=40)
    ids = select("kcenter", out, 5, seed=0)
    assert ids[0] == out.ids[np.argmin(hashed_uniform(out.ids, 0))]
    assert len(set(ids.tolist())) == 5


@pytest.mark.parametrize("name", SET_STRATEGIES)
def test_torch_selects_exactly_what_numpy_selects(name):
    """One implementation on two array libraries: torch (CUDA's path, here on the CPU)
    picks the numpy ids, single-process and sharded, ties included."""
    for out in (with_labeled(random_outputs(n=300, c=7, d=16), m=20),
                with_duplicates(with_labeled(random_outputs(n=100, d=6)))):
        cpu = select(name, out, 20, seed=4)
        assert np.array_equal(STRATEGIES[name].select(out, 20, 4, device="torch-cpu"), cpu)
        assert np.array_equal(run_sharded(name, out, 20, 4, 3, block=8, device="torch-cpu"),
                              run_sharded(name, out, 20, 4, 1, block=8))


@pytest.mark.parametrize("name", SET_STRATEGIES)
def test_selection_does_not_depend_on_cpu_threads(name, monkeypatch):
    """Chunks run on the process's threads, each product single-threaded: same ids."""
    out = with_labeled(random_outputs(n=9000, c=5, d=8))  # > 2 chunks of 4096 rows
    picks = []
    for threads in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        picks.append(select(name, out, 12, seed=1))
    np.testing.assert_array_equal(*picks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SET_STRATEGIES)
def test_cuda_selects_what_cpu_selects(name):
    """On a GPU: the CPU's ids, single-process and over 3 shards (see docs/set-strategies.md
    for where float order could differ)."""
    out = with_labeled(random_outputs(n=3000, c=10, d=32), m=50)
    cpu = STRATEGIES[name].select(out, 40, 3, block=256)
    np.testing.assert_array_equal(STRATEGIES[name].select(out, 40, 3, block=256, device="cuda"),
                                  cpu)
    np.testing.assert_array_equal(run_sharded(name, out, 40, 3, 3, 256, device="cuda"), cpu)


def test_kmeans_lloyd_runs_to_its_tolerance():
    out = random_outputs(n=400, d=4, seed=3)
    shards = [KMeansShard(out, block=8)]
    seeds = np.stack([c.payload[0] for c in greedy_select(shards, 12, seed=0)])
    _, changes = lloyd(shards, seeds, tol=0.0)
    assert changes[-1] == 0 and converged(changes, len(out), 0.0)
    assert all(c > 0 for c in changes[:-1])  # no pass stopped early
    _, loose = lloyd([KMeansShard(out, block=8)], seeds, tol=0.05)
    assert converged(loose, len(out), 0.05) and len(loose) < len(changes)
    assert loose[-1] <= 0.05 * len(out) < min(loose[:-1])
    _, capped = lloyd([KMeansShard(out, block=8)], seeds, max_iter=2, tol=0.0)
    assert len(capped) == 2 and not converged(capped, len(out), 0.0)
