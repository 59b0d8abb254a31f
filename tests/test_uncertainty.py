"""Uncertainty strategies on hand-computed cases, plus the shared selection rules."""
import numpy as np
import pytest

from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import STRATEGIES, merge_top_b, select, top_b
from conftest import random_outputs


def outputs(probs, mc=None, ids=None):
    probs = np.asarray(probs, np.float32)
    n = len(probs)
    return PoolOutputs(np.arange(n) if ids is None else ids, probs, np.zeros((n, 2), np.float32),
                       None if mc is None else np.asarray(mc, np.float32))


P = [[0.9, 0.05, 0.05],   # confident
     [0.4, 0.35, 0.25],   # uncertain, small margin
     [0.5, 0.5, 0.0],     # margin 0, but lower entropy than a flat row
     [1/3, 1/3, 1/3]]     # flat: max entropy, margin 0


def test_least_confidence_and_var_ratio_hand_computed():
    out = outputs(P)
    s = STRATEGIES["least_confidence"].score(out)
    np.testing.assert_allclose(s, [0.1, 0.6, 0.5, 2 / 3], rtol=1e-6)
    np.testing.assert_array_equal(STRATEGIES["var_ratio"].score(out), s)
    assert select("least_confidence", out, 2).tolist() == [3, 1]


def test_margin_hand_computed_ties_break_by_smallest_id():
    out = outputs(P)
    np.testing.assert_allclose(STRATEGIES["margin"].score(out), [-0.85, -0.05, 0.0, 0.0], atol=1e-6)
    assert select("margin", out, 3).tolist() == [2, 3, 1]  # 2 and 3 tie at margin 0


def test_entropy_hand_computed():
    out = outputs(P)
    expected = [-(0.9 * np.log(0.9) + 2 * 0.05 * np.log(0.05)),
                -(0.4 * np.log(0.4) + 0.35 * np.log(0.35) + 0.25 * np.log(0.25)),
                np.log(2), np.log(3)]
    np.testing.assert_allclose(STRATEGIES["entropy"].score(out), expected, rtol=1e-5)
    assert select("entropy", out, 1).tolist() == [3]


def test_bald_and_mean_std_hand_computed():
    # sample 0: the MC samples disagree completely; sample 1: they agree.
    mc = [[[1.0, 0.0], [0.5, 0.5]],
          [[0.0, 1.0], [0.5, 0.5]]]
    out = outputs([[0.5, 0.5], [0.5, 0.5]], mc=mc)
    np.testing.assert_allclose(STRATEGIES["bald"].score(out), [np.log(2), 0.0], atol=1e-6)
    np.testing.assert_allclose(STRATEGIES["mean_std"].score(out), [0.5, 0.0], atol=1e-7)
    assert select("bald", out, 1).tolist() == [0]


def test_mc_strategies_require_mc_probs():
    with pytest.raises(ValueError, match="mc_probs"):
        select("bald", outputs(P), 1)


def test_random_is_a_function_of_seed_and_id_only():
    out = random_outputs(100)
    a = select("random", out, 10, seed=3)
    assert np.array_equal(a, select("random", out, 10, seed=3))
    assert not np.array_equal(a, select("random", out, 10, seed=4))
    half = out.take(np.arange(50, 100))
    s_full = STRATEGIES["random"].score(out)[50:]
    np.testing.assert_array_equal(STRATEGIES["random"].score(half), s_full)


def test_top_b_order_and_ties():
    ids = np.array([7, 3, 5, 1])
    assert top_b(ids, np.array([1.0, 2.0, 2.0, 0.5]), 3).tolist() == [3, 5, 7]
    with pytest.raises(ValueError, match="NaN"):
        top_b(ids, np.array([1.0, np.nan, 0, 0]), 2)


@pytest.mark.parametrize("name", ["least_confidence", "margin", "entropy", "bald", "mean_std",
                                  "random", "var_ratio"])
def test_merging_shard_top_b_equals_global_top_b(name):
    out = random_outputs(200, seed=1)
    strategy = STRATEGIES[name]
    parts = []
    for rows in np.array_split(np.arange(200), 3):
        shard = out.take(rows)
        ids = strategy.select(shard, 15, seed=2)
        parts.append((ids, strategy.score(shard.take(np.searchsorted(shard.ids, ids)), 2)))
    np.testing.assert_array_equal(merge_top_b(parts, 15)[0], strategy.select(out, 15, seed=2))


def test_budget_larger_than_outputs_returns_all():
    out = random_outputs(5)
    assert sorted(select("entropy", out, 50).tolist()) == sorted(out.ids.tolist())
