"""Ray scorer actors: same selections as one process, whatever the shard count or failures."""
import threading

import numpy as np
import pytest
import ray
import torch

from autoal_dist.cli import main
from autoal_dist.data import load_dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models import build_model
from autoal_dist.models.backbones import ModelSpec
from autoal_dist.run import Run
from autoal_dist.scoring import LocalScorer
from autoal_dist.scoring.ray_scorer import RayScorer, ShardProxy
from autoal_dist.strategies import STRATEGIES, get
from conftest import quick_cases, random_outputs

# Every registered strategy (test_strategy_contract.py checks them on synthetic outputs;
# here through the real forward pass).
NAMES = sorted(STRATEGIES)
SET_NAMES = [n for n in NAMES if get(n).kind == "set"]


@pytest.fixture(scope="module")
def round_inputs():
    data = load_dataset("digits")
    norm = Normalizer.fit(data.train_x)
    torch.manual_seed(0)
    model = build_model("auto", data.input_shape, 10, 0.3)
    positions = np.setdiff1d(np.arange(len(data.train_x)), np.arange(0, 600, 20))
    labeled = np.arange(0, 600, 20)
    spec = ModelSpec("smallcnn", data.input_shape, 10, 0.3)
    return data, norm, model, positions, labeled, spec


def assert_same(a, b):
    for n in a:
        assert np.array_equal(a[n].ids, b[n].ids), n
        assert np.array_equal(a[n].scores, b[n].scores, equal_nan=True), n


def test_ray_shards_equal_local_scoring(ray_cluster, round_inputs):
    data, norm, model, pos, lab, spec = round_inputs
    local = LocalScorer(data.train_x, norm, 128, 5, show_progress=False)
    ref = local.select_many(model, pos, NAMES, 25, 3, lab, keep=True)
    ask = np.sort(np.random.default_rng(0).choice(pos, 300, replace=False))  # every shard's
    want, want_lab = local.rows(ask), local.labeled()
    for k in (1, 3):
        scorer = RayScorer(data.train_x, norm, spec, shards=k, batch_size=128, mc_samples=5)
        try:
            assert_same(scorer.select_many(model, pos, NAMES, 25, 3, lab, keep=True), ref)
            got = scorer.rows(ask)  # the search's rows of U, from the same pass
            assert np.array_equal(got.ids, ask)
            assert np.array_equal(got.probs, want.probs)
            assert np.array_equal(got.embeddings, want.embeddings)
            assert np.array_equal(scorer.labeled(), want_lab)  # L's, from the same call
            with pytest.raises(KeyError, match="not in the last scoring pass"):
                scorer.rows(lab[:2])  # labeled rows were not scored
        finally:
            scorer.close()


def test_local_rows_are_the_pass_rows(round_inputs):
    data, norm, model, pos, lab, _ = round_inputs
    local = LocalScorer(data.train_x, norm, 128, 5, show_progress=False)
    with pytest.raises(RuntimeError, match="no scoring pass kept"):
        local.rows(pos[:3])
    local.select_many(model, pos, ["margin"], 25, 3, lab)  # not kept: the driver frees it
    assert local.last is None
    local.select_many(model, pos, ["margin"], 25, 3, lab, keep=True)  # margin reads no L
    out = local.last
    direct = local.outputs(model, lab, ["margin"], 3)  # L's rows, as their own pass
    assert np.array_equal(local.labeled(), direct.embeddings)
    got = local.rows(pos[[0, 7, -1]])
    assert np.array_equal(got.embeddings, out.embeddings[[0, 7, -1]])
    assert np.array_equal(got.probs, out.probs[[0, 7, -1]])
    with pytest.raises(KeyError, match=f"pool id {lab[0]} was not in the last scoring pass"):
        local.rows(np.sort(np.r_[pos[:2], lab[:1]]))


@pytest.mark.slow
def test_killing_a_scorer_mid_greedy_leaves_the_selection_unchanged(ray_cluster, round_inputs,
                                                                    monkeypatch):
    data, norm, model, pos, lab, spec = round_inputs
    names = ["kcenter", "kmeans", "badge"]
    ref = LocalScorer(data.train_x, norm, 128, 5, show_progress=False).select_many(
        model, pos, names, 25, 3, lab)
    scorer = RayScorer(data.train_x, norm, spec, shards=3, batch_size=128, mc_samples=5)
    pids_before = ray.get([a.pid.remote() for a in scorer.actors])
    kills = []
    submit = ShardProxy.submit

    def submit_and_kill(self, method, *args, wait=True):
        # kill shard 1's actor at its 7th call of every strategy: mid-greedy / mid-Lloyd
        if self.k == 1 and len(self.log) == 6:
            ray.kill(scorer.actors[1], no_restart=False)
            kills.append(self.name)
        return submit(self, method, *args, wait=wait)

    monkeypatch.setattr(ShardProxy, "submit", submit_and_kill)
    try:
        assert_same(scorer.select_many(model, pos, names, 25, 3, lab), ref)
        assert kills == names
        assert ray.get(scorer.actors[1].pid.remote()) != pids_before[1]
    finally:
        scorer.close()


@pytest.mark.slow
def test_killing_a_scorer_during_the_forward_pass(ray_cluster, round_inputs):
    data, norm, model, pos, lab, spec = round_inputs
    names = ["entropy", "bald"]
    ref = LocalScorer(data.train_x, norm, 128, 5, show_progress=False).select_many(
        model, pos, names, 25, 3, lab)
    scorer = RayScorer(data.train_x, norm, spec, shards=2, batch_size=128, mc_samples=5)
    try:
        ray.get([a.pid.remote() for a in scorer.actors])
        killer = threading.Timer(0.05, lambda: ray.kill(scorer.actors[0], no_restart=False))
        killer.start()
        got = scorer.select_many(model, pos, names, 25, 3, lab)
        killer.join()
        assert_same(got, ref)
        # and a kill between rounds: the next round re-prepares transparently
        ray.kill(scorer.actors[1], no_restart=False)
        assert_same(scorer.select_many(model, pos, names, 25, 3, lab), ref)
    finally:
        scorer.close()


@pytest.mark.parametrize("strategy", quick_cases(["entropy", "bald", "kcenter", "badge"],
                                                 {"entropy"}))
def test_campaign_journal_same_for_1_and_3_shards(ray_cluster, tmp_path, strategy):
    common = ["run", "--strategy", strategy, "--init", "10", "--budget", "15", "--rounds", "2",
              "--epochs", "1", "--seed", "4", "--quiet", "--candidates", "entropy"]
    for k in (1, 3):
        assert main([*common, "--shards", str(k), "--out", str(tmp_path / f"k{k}")]) == 0
    a, b = (Run.at(tmp_path / f"k{k}").journal().to_pandas() for k in (1, 3))
    assert len(a) == 10 + 2 * 15
    assert np.array_equal(a.id, b.id) and np.array_equal(a["round"], b["round"])
    assert np.array_equal(a.score, b.score, equal_nan=True)


@pytest.mark.parametrize("name", quick_cases(SET_NAMES, {"kcenter"}))
def test_ray_set_strategy_is_one_call_per_shard_per_step(ray_cluster, name):
    """Over 3 actors: the single-process ids, and each greedy step one call per shard
    (the step carries the previous winner), issued to all shards before any is awaited."""
    out = random_outputs(n=200, c=6, d=8)
    out.labeled_embeddings = np.random.default_rng(1).normal(size=(7, 8)).astype(np.float32)
    scorer = RayScorer(np.zeros((1, 1), np.float32), None, None, shards=3, batch_size=16)
    try:
        scorer.load_outputs(out)
        proxies = scorer.set_shards(name, out.labeled_embeddings)
        ids = get(name).drive(proxies, 25, 3)
    finally:
        scorer.close()
    np.testing.assert_array_equal(ids, get(name).select(out, 25, 3, block=16))
    for p in proxies:  # setup calls (probcover's reference sample) may come first
        calls = [args[2] for method, args in p.log if method == "shard_call"]
        first = calls.index("step")
        assert p.log[0][0] == "shard_init" and calls[first:first + 25] == ["step"] * 25
