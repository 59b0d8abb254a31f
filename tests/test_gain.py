"""AutoAL's learning-gain reward (autoal/gain.py): splits, the planted check, weights, the
interleaved batch, and the oracle kept out of `run`."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from autoal_dist.autoal import gain
from autoal_dist.autoal.crossfit import HeadSettings
from autoal_dist.cli import main
from autoal_dist.config import AutoALConfig
from autoal_dist.policies import POLICIES
from autoal_dist.strategies import STRATEGIES
from autoal_dist.strategies.base import register

HEADS = HeadSettings(iters=50, weight_decay=1e-3, dropout=0.3, mc_samples=4)


@pytest.fixture()
def planted():
    """Two test-only scoring strategies: `planted_good` picks the rows of the class the base
    lacks (high second coordinate), `planted_bad` the rows most like the base's own."""
    register("planted_good", needs={"embeddings"})(lambda out, seed: out.embeddings[:, 1] * 1.0)
    register("planted_bad", needs={"embeddings"})(lambda out, seed: -out.embeddings[:, 1] * 1.0)
    yield
    for name in ("planted_good", "planted_bad"):
        STRATEGIES.pop(name)


def planted_problem(seed: int = 0) -> gain.GainProblem:
    """Three blobs in 2-D; f_B (the base) saw classes 0 and 1 only; the unseen rows hold all
    three, and a third of them were drawn at random (the validation candidates)."""
    r = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 4.0]])
    y_base = np.repeat([0, 1], 20)
    y_unseen = np.repeat([0, 1, 2], 20)
    y = np.r_[y_base, y_unseen]
    emb = (centers[y] + r.normal(scale=0.7, size=(len(y), 2))).astype(np.float32)
    probs = np.full((len(y), 3), 1 / 3, np.float32)
    base = np.r_[np.ones(len(y_base), bool), np.zeros(len(y_unseen), bool)]
    random_origin = np.r_[np.zeros(len(y_base), bool), r.random(len(y_unseen)) < 0.5]
    return gain.GainProblem(probs, emb, None, y, base, random_origin,
                            ("planted_bad", "planted_good"), 0.25, HEADS, 2, seed)


def test_reward_ranks_the_planted_candidate_first(planted):
    for seed in range(3):
        p = planted_problem(seed)
        est = gain.estimate(gain.simulate(p, range(6)))
        assert p.options[int(np.argmax(est.mean))] == "planted_good"
        assert est.mean[p.options.index("planted_good")] > est.mean[
            p.options.index("planted_bad")] + 2 * est.se.max()
        w = gain.candidate_weights(gain.option_weights(est, 1.0), p.with_mix)
        assert w[1] > 0.5  # the planted candidate takes most of the batch


def test_splits_are_independent_so_workers_can_share_them(planted):
    p = planted_problem()
    whole = gain.simulate(p, [0, 1, 2, 3])
    dealt = np.vstack([gain.simulate(p, [s]) for s in (0, 1, 2, 3)])
    np.testing.assert_array_equal(whole, dealt)


def test_validation_rows_were_drawn_at_random_and_never_picked_from():
    p = planted_problem()
    for seed in range(5):
        pool, val = gain.split_rows(p, seed)
        assert p.random_origin[val].all() and not p.base[val].any()
        assert not np.intersect1d(pool, val).size and not p.base[pool].any()
        assert len(np.r_[pool, val]) == (~p.base).sum()
    every = gain.split_rows(gain.GainProblem(**{**p.__dict__, "validation": "all"}), 0)[1]
    assert not p.random_origin[every].all()  # `all` draws from any unseen row


def test_base_is_half_of_l_and_seeded():
    a, b = gain.base_rows(41, 3), gain.base_rows(41, 3)
    assert a.sum() == 20 and np.array_equal(a, b)
    assert gain.base_rows(1, 0).sum() == 1


@pytest.mark.parametrize("mean,expect_uniform", [
    ([0.1, 0.1, 0.1], True),  # no difference
    ([0.1, 0.1001, 0.1002], True),  # below GAIN_RESOLUTION, however small the error
    ([0.0, 0.0, 0.3], False),
])
def test_option_weights(mean, expect_uniform):
    est = gain.GainEstimate(np.array(mean), np.full(3, 1e-9))
    w = gain.option_weights(est, 1.0)
    assert w.sum() == pytest.approx(1.0)
    if expect_uniform:
        assert w.max() - w.min() < 0.05
    else:
        assert w[2] > 0.99


def test_pooling_decays_older_rounds():
    old = gain.GainEstimate(np.array([1.0, 0.0]), np.array([0.1, 0.1]))
    new = gain.GainEstimate(np.array([0.0, 1.0]), np.array([0.1, 0.1]))
    pooled = gain.pooled([old, new], 0.5)
    assert pooled.mean[1] > pooled.mean[0]
    assert gain.pooled([old, new], 0.0).mean.tolist() == [0.0, 1.0]


def test_pooling_counts_each_round_in_its_own_noise_units():
    """An early round's large gains do not outvote later rounds whose gains are small
    (a model that knows more learns less from any batch); a round's scale changes nothing."""
    early = gain.GainEstimate(np.array([0.10, 0.0, 0.0]), np.array([0.01, 0.01, 0.01]))
    late = gain.GainEstimate(np.array([0.0, 0.01, 0.0]), np.array([0.001, 0.001, 0.001]),
                             resolution=0.0)
    est = gain.pooled([early, late], 0.7)
    assert int(np.argmax(est.mean)) == 1
    big = gain.GainEstimate(early.mean * 10, early.se * 10, early.resolution * 10)
    again = gain.pooled([big, late], 0.7)
    np.testing.assert_allclose(again.mean, est.mean)
    np.testing.assert_allclose(again.se, est.se)
    assert gain.noise_scale(again) == pytest.approx(gain.noise_scale(est))
    assert gain.pooled([late], 0.7) == late


def test_interleave():
    a, b = np.array([1, 2, 3, 4]), np.array([2, 5, 6, 7])
    assert gain.interleave([a, b], np.array([1.0, 1.0]), 4).tolist() == [1, 2, 3, 5]
    assert gain.interleave([a, b], np.array([1.0, 0.0]), 4).tolist() == [1, 2, 3, 4]
    assert gain.interleave([a, b], np.array([0.0, 1.0]), 3).tolist() == [2, 5, 6]
    # three to one: b contributes about a quarter; a row both picked counts once
    assert gain.interleave([a, b], np.array([3.0, 1.0]), 4).tolist() == [1, 2, 5, 3]
    # lists run out: the others fill the batch
    assert sorted(gain.interleave([a[:1], b], np.array([1.0, 1.0]), 4).tolist()) == [1, 2, 5, 6]


def test_oracle_is_never_reachable_from_run(tmp_path, capsys):
    assert "oracle" not in POLICIES and "oracle" not in STRATEGIES
    out = tmp_path / "never"
    assert main(["run", "--strategy", "oracle", "--local", "--out", str(out)]) == 2
    assert "strategy" in capsys.readouterr().err and not out.exists()
    code = ("import sys, autoal_dist.cli, autoal_dist.campaign, autoal_dist.policies; "
            "print(any(m == 'oracle' or m.endswith('.oracle') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_combine_rules():
    picks = [np.array([5, 1, 9]), np.array([2, 5, 7])]
    ids = np.array([1, 2, 5, 7, 9])
    member = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0]], np.float32)
    chosen, z = gain.combine("best", picks, ids, member, np.array([0.2, 0.8]), 3)
    assert chosen.tolist() == [2, 5, 7] and z.tolist() == [0, 3, 2, 1, 0]  # b's whole batch
    chosen, _ = gain.combine("best", picks, ids, member, np.array([0.5, 0.5]), 3)
    assert chosen.tolist() == [1, 5, 9]  # a tie goes to the earlier candidate
    chosen, _ = gain.combine("vote", picks, ids, member, np.array([0.5, 0.5]), 3)
    assert chosen.tolist() == [5, 1, 2]  # 5 has two votes; then smallest ids
    chosen, _ = gain.combine("interleave", picks, ids, member, np.array([0.5, 0.5]), 3)
    assert chosen.tolist() == [1, 2, 5]  # 5 (a's first), 2 (b's first: 5 is taken), 1


def test_the_cold_start_trusts_typicality_then_the_prior():
    a = AutoALConfig()  # cold_prior typiclust below 5 labels per class, then margin
    names = ["margin", "badge", "kmeans", "typiclust"]
    assert gain.prior_candidate(names, a, 49, 10) == 3  # 4.9 per class: cold
    assert gain.prior_candidate(names, a, 50, 10) == 0
    assert gain.prior_candidate(["badge", "margin"], a, 10, 10) == 1  # no typiclust: prior
    assert gain.prior_candidate(["badge", "kmeans"], a, 10, 10) == 0  # neither: the first
    never = AutoALConfig(cold_per_class=0.0)
    assert gain.prior_candidate(names, never, 1, 10) == 0


def test_estimates_do_not_count_in_the_cold_start():
    a = AutoALConfig()  # below 5 labels per class the estimates were at chance
    assert not gain.trusted(a, 49, 10) and gain.trusted(a, 50, 10)
    assert gain.trusted(AutoALConfig(cold_evidence=True), 10, 10)
    assert gain.trusted(AutoALConfig(cold_per_class=0.0), 1, 10)  # no cold start


def test_the_prior_candidate_keeps_the_batch_until_another_clearly_leads():
    est = gain.GainEstimate(np.array([0.10, 0.12, 0.05]), np.full(3, 0.01))
    assert gain.chosen_candidate(est, prior=0, switch_se=2.0) == 0  # leads by 2 se: not more
    assert gain.chosen_candidate(est, prior=0, switch_se=1.0) == 1
    assert gain.chosen_candidate(est, prior=2, switch_se=2.0) == 1  # 0.07 = 7 se ahead
    assert gain.chosen_candidate(est, prior=1, switch_se=0.0) == 1  # the prior leads
    flat = gain.GainEstimate(np.zeros(3), np.full(3, np.inf))  # nothing judged yet
    assert gain.chosen_candidate(flat, prior=2, switch_se=0.0) == 2
