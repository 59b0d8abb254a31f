"""AutoAL's expected-error-reduction reward (autoal/eer.py): label draws, the planted check,
draws that workers can share, and a campaign that records it."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoal_dist.autoal import eer, gain
from autoal_dist.autoal.crossfit import HeadSettings
from autoal_dist.cli import main

HEADS = HeadSettings(iters=100, weight_decay=1e-3, dropout=0.3, mc_samples=4)


def planted_problem(seed: int = 0) -> eer.EerProblem:
    """Five classes in 4-D, each a blob and a small sub-cluster 40% of the way to the next
    class's blob, where f is about 87% sure. L holds two rows of every blob. `near_twins`
    picks ten rows of one sub-cluster, `spread` two rows of each of the five: the batch that
    settles f's doubt in five places against one that settles it in one."""
    r = np.random.default_rng(seed)
    c, d = 5, 4
    centers = 5.0 * np.eye(c)[:, :d]  # four axes and the origin: every pair apart
    subs = (1 - 0.4) * centers + 0.4 * np.roll(centers, -1, 0)
    y_l = np.repeat(np.arange(c), 2)
    y_u = np.r_[np.repeat(np.arange(c), 40), np.repeat(np.arange(c), 20)]
    where = np.r_[centers[y_u[:200]], subs[y_u[200:]]]

    def noise(n: int) -> np.ndarray:
        return r.normal(scale=0.3, size=(n, d))

    emb_l = (centers[y_l] + noise(len(y_l))).astype(np.float32)
    emb_u = (where + noise(len(y_u))).astype(np.float32)
    dist = ((emb_u[:, None] - centers[None]) ** 2).sum(2)
    probs = np.exp(-(dist - dist.min(1, keepdims=True)) / 2)
    probs = (probs / probs.sum(1, keepdims=True)).astype(np.float32)
    pos = np.arange(len(y_u))
    sub_rows = [pos[200:][y_u[200:] == k] for k in range(c)]
    near_twins = sub_rows[0][:10]
    spread = np.concatenate([rows[:2] for rows in sub_rows])
    return eer.EerProblem(emb_l, y_l, pos.astype(np.int64) + 100, emb_u, probs,
                          np.stack([near_twins, spread]), emb_u, ("near_twins", "spread"),
                          HEADS, seed)


def test_reward_ranks_the_planted_candidate_first():
    for seed in range(3):
        p = planted_problem(seed)
        est = gain.estimate(eer.draw_gains(p, range(6)))
        assert p.options[int(np.argmax(est.mean))] == "spread"
        lead = est.mean[1] - est.mean[0]
        assert lead > 2 * max(est.se.max(), gain.GAIN_RESOLUTION)


def test_draws_are_independent_so_workers_can_share_them():
    p = planted_problem()
    whole = eer.draw_gains(p, [0, 1, 2, 3])
    dealt = np.vstack([eer.draw_gains(p, [d]) for d in (3, 2, 1, 0)][::-1])
    np.testing.assert_array_equal(whole, dealt)
    assert eer.draw_gains(p, []).shape == (0, 2)


def test_drawn_labels_follow_the_probabilities_and_the_id_alone():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 20000)
    ids = np.arange(20000) * 7 + 3
    y = eer.drawn_labels(probs, ids, 11)
    assert y.min() >= 0 and y.max() <= 3
    np.testing.assert_allclose(np.bincount(y, minlength=4) / len(y), probs.mean(0), atol=0.01)
    # a row's label is a function of (seed, id, its probabilities): any subset, any order
    sub = rng.permutation(20000)[:500]
    np.testing.assert_array_equal(eer.drawn_labels(probs[sub], ids[sub], 11), y[sub])
    assert not np.array_equal(eer.drawn_labels(probs, ids, 12), y)
    sure = np.eye(4)[rng.integers(0, 4, 100)]
    np.testing.assert_array_equal(eer.drawn_labels(sure, np.arange(100), 5), sure.argmax(1))


def test_a_campaign_with_the_eer_reward_records_its_evidence(tmp_path):
    cfg = tmp_path / "eer.json"
    cfg.write_text('{"autoal": {"reward": "eer", "eer_draws": 3, "eer_eval": 300}}')
    out = tmp_path / "run"
    assert main(["run", "--local", "--strategy", "autoal", "--config", str(cfg), "--init", "20",
                 "--budget", "10", "--rounds", "2", "--epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    search = pq.read_table(out / "autoal_search.parquet").to_pandas()
    assert set(search["round"]) == {1, 2}
    assert np.isfinite(search["reward"]).all() and np.isfinite(search["reward_se"]).all()
    assert np.allclose(search.groupby("round")["weight"].sum(), 1.0)


def test_the_cold_start_takes_typiclusts_batch_and_pools_nothing_from_it(tmp_path):
    """Digits, 10 classes, cold below 2.5 labels per class: round 1 (|L| 20) is cold, so its
    batch is TypiClust's whatever the estimates say, and round 2 (|L| 30) weighs its own
    estimates alone; with `cold_evidence` round 2 pools round 1's."""
    runs = {}
    for trust in (False, True):
        cfg = tmp_path / f"c{trust}.json"
        cfg.write_text(json.dumps({"autoal": {"eer_draws": 3, "eer_eval": 300,
                                              "cold_per_class": 2.5, "cold_evidence": trust}}))
        out = runs[trust] = tmp_path / f"run{trust}"
        assert main(["run", "--local", "--strategy", "autoal", "--config", str(cfg), "--init",
                     "20", "--budget", "10", "--rounds", "2", "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    shares = pq.read_table(runs[False] / "autoal_weights.parquet").to_pandas()
    first = shares[shares["round"] == 1].groupby("strategy")["share"].first()
    assert first["typiclust"] == 1.0
    search = {t: pq.read_table(r / "autoal_search.parquet").to_pandas() for t, r in runs.items()}
    # round 1 is the same campaign either way; round 2's weights: its estimate alone
    np.testing.assert_array_equal(search[False].query("round == 1")["reward"],
                                  search[True].query("round == 1")["reward"])
    two = search[False].query("round == 2")
    alone = gain.option_weights(gain.GainEstimate(two["reward"].to_numpy(),
                                                  two["reward_se"].to_numpy()), 1.0)
    np.testing.assert_allclose(two["weight"], alone)
    pooled_two = search[True].query("round == 2")["weight"].to_numpy()
    assert not np.allclose(pooled_two, alone)


@pytest.mark.parametrize("bad", ['{"eer_draws": 1}', '{"reward": "eeer"}', '{"eer_eval": 0}'])
def test_bad_eer_settings_are_refused_in_one_line(tmp_path, capsys, bad):
    cfg = tmp_path / "bad.json"
    cfg.write_text('{"autoal": ' + bad + '}')
    assert main(["run", "--local", "--strategy", "autoal", "--config", str(cfg), "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "autoal." in err[0]
    assert not (tmp_path / "run").exists()
