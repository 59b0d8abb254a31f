"""ALBL: EXP4.P's probabilities and update, the IW-ACC reward's unbiasedness, the batch
draws, and the `albl` policy end to end on digits (--local), deterministic and resumable."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from autoal_dist.albl import bandit
from autoal_dist.albl.state import STATE_FILE, UNIFORM
from autoal_dist.cli import main
from autoal_dist.run import Run

POOL = np.arange(40, dtype=np.int64) * 3 + 7  # sorted ids, not 0..n-1


def rankings(seed: int = 0, n_experts: int = 3, depth: int = 10) -> list[np.ndarray | None]:
    """n_experts deterministic rankings over POOL (overlapping) + the uniform sampler."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(POOL)[:depth] for _ in range(n_experts)] + [None]


# ---- probabilities and the update ------------------------------------------------

@pytest.mark.parametrize("n, horizon", [(2, 10), (8, 160), (8, 20000)])
def test_default_pmin_is_a_valid_floor(n, horizon):
    assert 0 < bandit.default_pmin(n, horizon) <= 1 / n


@pytest.mark.parametrize("seed", range(5))
def test_probabilities_sum_to_one_and_respect_pmin(seed):
    rng = np.random.default_rng(seed)
    log_w = rng.normal(scale=30, size=8)  # weights spanning e^±90: no overflow
    pmin = bandit.default_pmin(8, 160)
    p = bandit.probabilities(log_w, pmin)
    assert np.isclose(p.sum(), 1.0) and (p >= pmin - 1e-15).all()
    assert np.argmax(p) == np.argmax(log_w)
    assert np.allclose(bandit.probabilities(np.zeros(8), pmin), 1 / 8)


def test_probabilities_refuse_a_floor_above_one_over_n():
    with pytest.raises(ValueError, match="p_min"):
        bandit.probabilities(np.zeros(4), 0.3)


def test_update_is_exp4p_formula_once_per_draw():
    log_w, pmin, delta, horizon = np.log([1.0, 2.0, 3.0]), 0.05, 0.1, 50
    p = bandit.probabilities(log_w, pmin)
    ratios = np.array([[2.0, 0.0, 0.5], [0.0, 1.5, 0.5]])
    got = bandit.update(log_w, p, ratios, 0.4, pmin, delta, horizon)
    bonus = np.sqrt(np.log(3 / delta) / (3 * horizon)) / p
    w = np.array([1.0, 2.0, 3.0])
    for row in ratios:  # w_k *= exp(p_min/2 (r_hat_k + v_hat_k sqrt(...))) per draw
        w = w * np.exp(pmin / 2 * (0.4 * row + bonus))
    assert np.allclose(np.exp(got), w)


def test_update_favours_the_expert_that_advised_the_rewarded_sample():
    log_w = np.zeros(3)
    p = bandit.probabilities(log_w, 0.05)
    new = bandit.update(log_w, p, np.array([[1 / p[0], 0.0, 0.0]]), 1.0, 0.05, 0.1, 10)
    assert new[0] > new[1] == new[2]


# ---- the reward ------------------------------------------------------------------

def test_iw_accuracy_is_unbiased_for_the_pool_accuracy():
    """E over the draw of W [correct] / n = the pool accuracy, for the q the draws use."""
    rng = np.random.default_rng(0)
    correct = rng.random(len(POOL)) < 0.7
    ranks = rankings()
    p = bandit.probabilities(np.array([1.0, -0.5, 0.3, 0.0]), 0.05)
    pos = {int(i): k for k, i in enumerate(POOL)}
    est, seen = [], np.zeros(len(POOL))
    for s in range(20000):
        d = bandit.draw_batch(ranks, POOL, p, 1, np.random.default_rng(s))
        k = pos[int(d.ids[0])]
        seen[k] += 1
        est.append(bandit.iw_accuracy(correct[k:k + 1], 1 / d.q, len(POOL), 1))
    est = np.asarray(est)
    assert abs(est.mean() - correct.mean()) < 4 * est.std() / np.sqrt(len(est))
    # the recorded q is the draw's true probability: exact, then by frequency
    q = p[3] / len(POOL) + sum(p[k] * (POOL == ranks[k][0]) for k in range(3))
    assert np.isclose(q.sum(), 1.0)
    assert np.abs(seen / len(est) - q).max() < 0.02


# ---- batch draws -----------------------------------------------------------------

def test_draw_batch_fills_distinct_ids_with_consistent_ratios():
    p = bandit.probabilities(np.array([0.5, 0.0, -0.5, 0.0]), 0.05)
    d = bandit.draw_batch(rankings(), POOL, p, 15, np.random.default_rng(1))
    assert len(d.ids) == 15 == len(np.unique(d.ids)) and np.isin(d.ids, POOL).all()
    assert np.allclose(d.ratios @ p, 1.0)  # sum_k p_k xi_k(x) / q(x) = 1 by definition of q
    assert (d.q > 0).all() and (d.q <= 1).all()
    again = bandit.draw_batch(rankings(), POOL, p, 15, np.random.default_rng(1))
    assert np.array_equal(d.ids, again.ids) and np.array_equal(d.q, again.q)


def test_draw_batch_survives_identical_and_exhausted_rankings():
    """Experts sharing one short ranking run out of advice: they then advise uniformly."""
    same = [POOL[:3].copy(), POOL[:3].copy(), None]
    d = bandit.draw_batch(same, POOL, np.array([0.45, 0.45, 0.1]), len(POOL),
                          np.random.default_rng(2))
    assert np.array_equal(np.sort(d.ids), POOL)
    assert np.allclose(d.ratios @ np.array([0.45, 0.45, 0.1]), 1.0)
    assert np.isclose(d.q[-1], 1.0)  # the last remaining sample is certain


def test_expert_takes_its_next_ranked_unpicked_sample():
    ranks = [np.array([POOL[5], POOL[6], POOL[7]]), np.array([POOL[5], POOL[9]]), None]
    d = bandit.draw_batch(ranks, POOL, np.array([0.0, 1.0, 0.0]), 2, np.random.default_rng(0))
    assert d.ids.tolist() == [POOL[5], POOL[9]] and d.experts.tolist() == [1, 1]


# ---- the policy, end to end --------------------------------------------------------

FAST = ["run", "--local", "--strategy", "albl", "--init", "10", "--budget", "10",
        "--rounds", "2", "--epochs", "1", "--quiet", "--candidates", "entropy,margin,kmeans"]


@pytest.mark.slow
def test_albl_campaign_is_deterministic_and_resumes_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*FAST, "--out", str(a)]) == 0
    state = json.loads((a / STATE_FILE).read_text())
    assert state["experts"] == ["entropy", "margin", "kmeans", UNIFORM]
    assert [e["round"] for e in state["rounds"]] == [0, 1]
    assert state["rounds"][0]["reward"] is None and state["rounds"][1]["reward"] > 0
    assert Run.at(a).journal_rounds() == [0, 1, 2]
    batch = Run.at(a).journal().to_pandas().query("round == 2")
    assert len(batch) == 10 and batch.id.tolist() == state["rounds"][1]["ids"]
    assert np.allclose(batch.score, state["rounds"][1]["q"])

    # crash after the bandit state was written, before round 2's batch was journaled: the
    # journal ends at round 1 and metrics at round 0 (round 1's row follows round 2's batch)
    shutil.copytree(a, b)
    Run.at(b).round_path(2).unlink()
    Run.at(b).write_metrics([r for r in Run.at(b).metrics() if r["round"] < 1])
    assert main(["run", "--local", "--out", str(b), "--resume", "--quiet"]) == 0
    assert (b / STATE_FILE).read_text() == (a / STATE_FILE).read_text()
    ja, jb = (Run.at(d).journal().to_pandas() for d in (a, b))
    assert np.array_equal(ja.id, jb.id) and np.array_equal(ja.score, jb.score, equal_nan=True)
