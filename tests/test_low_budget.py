"""Low-budget set strategies (typiclust, probcover): against direct all-pairs versions,
bit for bit under sharding, and on blobs whose right answer is plain.

What the direct versions cross-check: for TypiClust, everything after the k-means
(final labels, labeled counts, typicality as the mean distance to the k nearest rows of
the reference sample in the same cluster, the cluster order, the exact shard merge); the
k-means itself is the strategy's (the same seeding and `lloyd` run on one shard), tested
in test_diversity.py. For ProbCover, the coverage counts, the labeled set's cover, the
greedy order and its hashed fallback; delta is the strategy's `purity_delta`, checked
against its definition by brute force on its own.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autoal_dist.outputs import PoolOutputs
from autoal_dist.seeds import hashed_uniform
from autoal_dist.strategies import STRATEGIES, probcover, select, typiclust
from autoal_dist.strategies.kmeans import lloyd
from autoal_dist.strategies.sharded import stream_seed
from conftest import run_sharded

NAMES = ["typiclust", "probcover"]


def unit(x: np.ndarray) -> np.ndarray:
    """Unit rows rounded to float32 (the strategies' definition), in float64."""
    x = np.asarray(x, np.float64)
    norm = np.sqrt((x * x).sum(1))
    return (x / np.where(norm > 0, norm, 1.0)[:, None]).astype(np.float32).astype(np.float64)


def d2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairs, by differences: no product, no blocks."""
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def reference_rows(ids: np.ndarray, seed: int) -> np.ndarray:
    """Positions of R: the REF_MAX smallest (hashed key, id)."""
    keys = hashed_uniform(ids, stream_seed(seed, typiclust.REF_STREAM))
    return np.lexsort((ids, keys))[: typiclust.REF_MAX]


def blobs(n: int, k: int, d: int = 8, noise: float = 0.3, labeled: int = 0, seed: int = 0,
          classes: int | None = None) -> tuple[PoolOutputs, np.ndarray]:
    """n rows around k random centers (blob of row i: i % k), sorted non-contiguous ids,
    probs with `classes` (default k) classes; and each row's blob."""
    r = np.random.default_rng(seed)
    centers = r.normal(size=(k, d)) * 3
    blob = np.arange(n) % k
    emb = centers[blob] + r.normal(scale=noise * 3, size=(n, d))
    ids = np.sort(r.choice(10 * n, size=n, replace=False))
    lab = centers[r.integers(0, k, labeled)] + r.normal(scale=noise * 3, size=(labeled, d))
    c = classes or k
    out = PoolOutputs(ids, np.full((n, c), 1 / c, np.float32), emb.astype(np.float32),
                      labeled_embeddings=lab.astype(np.float32) if labeled else None)
    return out, blob



# ---- direct versions ------------------------------------------------------------------

def typiclust_direct(out: PoolOutputs, budget: int, seed: int, block: int) -> np.ndarray:
    n_lab = 0 if out.labeled_embeddings is None else len(out.labeled_embeddings)
    k = min(n_lab + budget, typiclust.MAX_CLUSTERS, len(out))
    shard = typiclust.TypiClustShard(out, block)  # the strategy's k-means, on one shard
    chosen: list = []
    typiclust.seed_centers([shard], min(budget, typiclust.MAX_CLUSTERS), seed, chosen)
    typiclust.seed_centers([shard], k, seed, chosen)
    centers, _ = lloyd([shard], np.stack([c.payload[0] for c in chosen]))

    x, ids = unit(out.embeddings), out.ids
    labels = d2(x, centers).argmin(1)
    count = (np.bincount(d2(unit(out.labeled_embeddings), centers).argmin(1), minlength=k)
             if n_lab else np.zeros(k, int))
    ref = reference_rows(ids, seed)
    spread = np.empty(len(x))
    for i in range(len(x)):
        same = ref[labels[ref] == labels[i]]
        m = min(typiclust.K_NN, len(same) - 1)
        if m <= 0:  # under two R rows in the cluster: distance to the centroid
            spread[i] = np.sqrt(d2(x[i:i + 1], centers[labels[i]][None])[0, 0])
        else:
            spread[i] = np.sort(np.sqrt(d2(x[i:i + 1], x[same[same != i]])[0]))[:m].mean()
    sizes = np.bincount(labels, minlength=k)
    taken = np.zeros(len(x), bool)
    picks = []
    for _ in range(budget):
        left = sizes - np.bincount(labels[taken], minlength=k)
        ok = (left > 0) & (sizes >= typiclust.MIN_CLUSTER_SIZE)
        ok = ok if ok.any() else left > 0
        c = min(np.flatnonzero(ok), key=lambda c: (count[c], -sizes[c], c))
        rows = np.flatnonzero((labels == c) & ~taken)
        i = rows[np.lexsort((ids[rows], spread[rows]))[0]]
        picks.append(ids[i])
        taken[i] = True
        count[c] += 1
    return np.array(picks)


def probcover_direct(out: PoolOutputs, budget: int, seed: int) -> tuple[np.ndarray, int]:
    """The ids, and the step at which every R row was covered (budget if never)."""
    x, ids = unit(out.embeddings), out.ids
    ref = np.sort(reference_rows(ids, seed))
    delta2, _ = probcover.purity_delta(ids[ref], x[ref], out.num_classes, seed)
    reach = d2(x, x[ref]) <= delta2  # [pool, R]
    covered = np.zeros(len(ref), bool)
    if out.labeled_embeddings is not None:
        covered |= (d2(unit(out.labeled_embeddings), x[ref]) <= delta2).any(0)
    tie = hashed_uniform(ids, stream_seed(seed, probcover.TIE_STREAM))
    taken = np.zeros(len(x), bool)
    picks, full = [], budget
    for step in range(budget):
        gain = np.where(taken, -1, (reach & ~covered).sum(1))
        i = int(np.argmax(gain)) if gain.max() > 0 else int(np.argmin(np.where(taken, 2, tie)))
        if covered.all() and full == budget:
            full = step
        covered |= reach[i]
        taken[i] = True
        picks.append(ids[i])
    return np.array(picks), full


@pytest.mark.parametrize("ref_max", [4096, 90])  # R = the pool; R = 90 of its 300 rows
@pytest.mark.parametrize("labeled", [0, 12])
@pytest.mark.parametrize("max_clusters", [500, 4])  # 4: ~8 picks a cluster, fetched deeper
def test_typiclust_matches_direct(monkeypatch, ref_max, labeled, max_clusters):
    monkeypatch.setattr(typiclust, "REF_MAX", ref_max)
    monkeypatch.setattr(typiclust, "MAX_CLUSTERS", max_clusters)
    out, _ = blobs(300, 5, noise=0.6, labeled=labeled, seed=labeled)
    want = typiclust_direct(out, 30, 3, block=16)  # K = 30 or 42 clusters: some small
    np.testing.assert_array_equal(STRATEGIES["typiclust"].select(out, 30, 3, block=16), want)


@pytest.mark.parametrize("ref_max", [4096, 120])
@pytest.mark.parametrize("labeled", [0, 6])
def test_probcover_matches_direct(monkeypatch, ref_max, labeled):
    monkeypatch.setattr(typiclust, "REF_MAX", ref_max)
    out, _ = blobs(300, 12, noise=0.3, labeled=labeled, seed=1, classes=4)  # overlapping balls
    want, full = probcover_direct(out, 48, 5)
    assert 20 < full < 48, "many greedy steps, then the hashed fallback after full coverage"
    np.testing.assert_array_equal(STRATEGIES["probcover"].select(out, 48, 5, block=16), want)


def test_purity_delta_is_the_largest_pure_enough_radius():
    out, _ = blobs(400, 6, noise=0.4, seed=2)
    x = unit(out.embeddings)
    delta2, labels = probcover.purity_delta(out.ids, x, 6, seed=1)
    d = np.sqrt(d2(x, x))
    other = np.where(labels[:, None] != labels[None, :], d, np.inf).min(1)  # [R]

    def purity(delta: float) -> float:
        return float((other > delta).mean())

    delta = np.sqrt(delta2)
    kth = np.sort(other)[len(x) - int(np.ceil(probcover.ALPHA * len(x)))]
    assert purity(delta) >= probcover.ALPHA > purity(kth) and delta < kth
    assert not ((other > delta) & (other < kth)).any()  # every delta up to kth as pure
    assert 0 < delta < np.median(d)


# ---- sharding --------------------------------------------------------------------------

@pytest.mark.parametrize("name,max_clusters", [("typiclust", 500), ("typiclust", 6),
                                               ("probcover", 500)])
def test_one_three_seven_shards_bit_for_bit_beyond_the_reference_sample(monkeypatch, name,
                                                                         max_clusters):
    monkeypatch.setattr(typiclust, "REF_MAX", 64)  # pool of 400 > R
    monkeypatch.setattr(typiclust, "MAX_CLUSTERS", max_clusters)  # 6: deeper fetches
    out, _ = blobs(400, 5, noise=0.5, labeled=7, seed=4)
    dup = out.take(np.r_[np.arange(400), np.arange(8)])  # exact ties
    dup.ids = np.r_[out.ids, out.ids.max() + 1 + np.arange(8)]
    for data in (out, dup):
        single = run_sharded(name, data, 25, 2, 1, block=16)
        np.testing.assert_array_equal(select(name, data, 25, seed=2), single)
        for k in (3, 7, 30):  # 30 > 26 blocks: empty shards too
            np.testing.assert_array_equal(run_sharded(name, data, 25, 2, k, block=16), single)


@pytest.mark.parametrize("name", NAMES)
def test_torch_selects_what_numpy_selects(monkeypatch, name):
    monkeypatch.setattr(typiclust, "REF_MAX", 100)
    out, _ = blobs(300, 5, noise=0.5, labeled=5, seed=5)
    cpu = run_sharded(name, out, 20, 1, 1, block=16)
    np.testing.assert_array_equal(STRATEGIES[name].select(out, 20, 1, 16, "torch-cpu"), cpu)
    np.testing.assert_array_equal(run_sharded(name, out, 20, 1, 3, 16, "torch-cpu"), cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_selects_what_cpu_selects(monkeypatch, name):
    """On a GPU: the CPU's ids, one process and 3 shards, with R a sample of the pool
    (docs/set-strategies.md says where float order could differ)."""
    monkeypatch.setattr(typiclust, "REF_MAX", 1000)
    out, _ = blobs(3000, 10, d=32, noise=0.5, labeled=50, seed=9)
    cpu = STRATEGIES[name].select(out, 40, 3, block=256)
    np.testing.assert_array_equal(STRATEGIES[name].select(out, 40, 3, 256, "cuda"), cpu)
    np.testing.assert_array_equal(run_sharded(name, out, 40, 3, 3, 256, "cuda"), cpu)


@pytest.mark.parametrize("name", NAMES)
def test_selection_does_not_depend_on_cpu_threads(monkeypatch, name):
    out, _ = blobs(9000, 5, d=4, noise=0.5, labeled=5, seed=6)  # > 2 chunks of 4096 rows
    picks = []
    for threads in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        picks.append(select(name, out, 8, seed=1))
    np.testing.assert_array_equal(*picks)


# ---- on blobs ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_unit_rows_are_held_once_in_float32(name):
    """The shard's unit rows are float32 values (no float64 copy beside the screen's), and
    zero rows (and padding) stay zero."""
    out, _ = blobs(300, 5)
    out.embeddings[7] = 0.0
    shard = STRATEGIES[name].make_shard(out, 64, 0)
    assert shard.x.dtype == np.float32 and shard.x32 is shard.x
    norms = np.sqrt((shard.x.astype(np.float64) ** 2).sum(1))
    assert np.all(np.abs(norms[:300][np.arange(300) != 7] - 1.0) < 1e-6)
    assert not shard.x[7].any() and not shard.x[300:].any()
    np.testing.assert_array_equal(shard.x[:300], unit(out.embeddings).astype(np.float32))


def test_typicality_distances_are_exact_in_any_shape_and_library():
    """fixed_sq_dists equals the integer computation (int64: every term < 2^53), whatever
    rows a product holds, on numpy and torch."""
    from autoal_dist.strategies import sharded
    from autoal_dist.strategies.arrays import backend_for
    from autoal_dist.strategies.sharded import unit_rows32

    r = np.random.default_rng(3)
    x = unit_rows32(r.normal(size=(300, 512)) * r.uniform(0.01, 100, size=(300, 1)))
    x[5] = 0.0
    ref = x[::7]
    ints = np.round(x.astype(np.float64) * 2.0**sharded.FIXED_BITS).astype(np.int64)
    ri = ints[::7]
    exact = (ints * ints).sum(1)[:, None] + (ri * ri).sum(1)[None, :] - 2 * (ints @ ri.T)
    for device in ("cpu", "torch-cpu"):
        arrays = backend_for(device, 64)
        f = sharded.fixed_rows(arrays, arrays.put(ref.astype(np.float64)))
        rt, r_sqn = f.T, (f * f).sum(1)
        whole = arrays.host(sharded.fixed_sq_dists(
            sharded.fixed_rows(arrays, arrays.put(x)), rt, r_sqn))
        np.testing.assert_array_equal(whole * 2.0 ** (2 * sharded.FIXED_BITS), exact)
        for rows in (np.arange(1), np.arange(17, 90), np.arange(299, -1, -3)):
            part = sharded.fixed_sq_dists(sharded.fixed_rows(arrays, arrays.put(x[rows])),
                                            rt, r_sqn)
            np.testing.assert_array_equal(arrays.host(part), whole[rows])


def test_typiclust_takes_the_most_typical_row_of_each_blob():
    out, blob = blobs(180, 6, noise=0.05, seed=7)
    picks = select("typiclust", out, 6, seed=0)
    rows = np.searchsorted(out.ids, picks)
    assert sorted(blob[rows]) == list(range(6))
    x = unit(out.embeddings)
    for row in rows:
        members = np.flatnonzero(blob == blob[row])
        d = np.sort(np.sqrt(d2(x[members], x[members])), axis=1)[:, 1:1 + typiclust.K_NN]
        assert row == members[np.argmin(d.mean(1))]


def test_typiclust_avoids_labeled_blobs():
    out, blob = blobs(180, 6, noise=0.05, seed=7)
    labeled = out.embeddings[[0, 1]]  # one from blob 0, one from blob 1: K = 2 + 4 = 6
    out.labeled_embeddings = labeled + 0.01
    picks = select("typiclust", out, 4, seed=0)
    assert sorted(blob[np.searchsorted(out.ids, picks)]) == [2, 3, 4, 5]


def test_probcover_covers_every_blob_before_a_second_pick_in_any():
    out, blob = blobs(180, 6, noise=0.05, seed=8)
    picks = select("probcover", out, 9, seed=3)
    rows = np.searchsorted(out.ids, picks)
    assert sorted(blob[rows[:6]]) == list(range(6))
    # everything is covered: the rest follows the seed's hashed order
    tie = hashed_uniform(out.ids, stream_seed(3, probcover.TIE_STREAM))
    rest = np.setdiff1d(np.arange(180), rows[:6])
    np.testing.assert_array_equal(picks[6:], out.ids[rest[np.argsort(tie[rest])[:3]]])
    # a labeled sample in blob 0 covers it
    out.labeled_embeddings = out.embeddings[:1] + 0.01
    picks = select("probcover", out, 5, seed=3)
    assert sorted(blob[np.searchsorted(out.ids, picks)]) == [1, 2, 3, 4, 5]
