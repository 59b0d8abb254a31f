"""The contract every registered strategy and round policy meets (issue #17 item 5).

Parametrized over the registries (`STRATEGIES`, `POLICIES`), in the style of
scikit-activeml's shared template tests: a newly registered strategy or policy is
covered without touching this file. The synthetic outputs are built from what a
strategy declares it `needs`, never from a per-strategy table:

- the budget is met exactly; budget >= pool gives the whole pool; budget 0 nothing;
- ids are distinct and all from the pool (non-contiguous ids);
- the same seed gives the same selection; another seed a different one for the
  strategies that draw on it;
- 1 shard == 3 shards, bit for bit: the in-process selection equals RayScorer's over
  the same outputs;
- a declared input that is missing raises; the declared needs are enough.
"""
from __future__ import annotations

import numpy as np
import pytest

from autoal_dist.cli import main
from autoal_dist.data import load_dataset
from autoal_dist.outputs import OPTIONAL_NEEDS, PoolOutputs
from autoal_dist.policies import POLICIES
from autoal_dist.run import Run
from autoal_dist.scoring.base import selection_from_outputs
from autoal_dist.strategies import STRATEGIES, get
from conftest import quick_cases

NAMES = sorted(STRATEGIES)
N, BLOCK, BUDGET, SEED = 600, 64, 25, 3
CLASSES, DIM, MC, LABELED = 6, 8, 4, 7

# Strategies whose selection is a deterministic function of the outputs (given every
# need, optional ones included: k-center seeds from the labeled set then). Every other
# strategy is expected to draw on the seed; list a new one here only if it does not.
SEED_FREE = {"least_confidence", "var_ratio", "margin", "entropy", "bald", "mean_std",
             "kcenter"}


def outputs_for(needs: frozenset[str], n: int = N, seed: int = 0) -> PoolOutputs:
    """Tie-free random outputs carrying exactly what `needs` declares (probs and embeddings
    always: PoolOutputs requires them), over sorted ids drawn from 0..10^6."""
    r = np.random.default_rng(seed)
    ids = np.sort(r.choice(10**6, size=n, replace=False))

    def softmax(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)

    logits = r.normal(size=(n, CLASSES)) * 2
    return PoolOutputs(
        ids=ids,
        probs=softmax(logits),
        embeddings=r.normal(size=(n, DIM)).astype(np.float32),
        mc_probs=(softmax(logits[None] + r.normal(scale=0.5, size=(MC, n, CLASSES)))
                  if "mc_probs" in needs else None),
        labeled_embeddings=(r.normal(size=(LABELED, DIM)).astype(np.float32)
                            if "labeled_embeddings" in needs else None),
    )


def pick(name: str, out: PoolOutputs, budget: int = BUDGET, seed: int = SEED):
    """The in-process selection, as LocalScorer makes it."""
    return selection_from_outputs(out, name, budget, seed, BLOCK)


def assert_valid(ids: np.ndarray, out: PoolOutputs, budget: int) -> None:
    assert ids.dtype == np.int64
    assert len(ids) == min(budget, len(out))
    assert len(np.unique(ids)) == len(ids), "ids repeat"
    assert np.isin(ids, out.ids).all(), "ids outside the pool"


# ---- in process -----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_budget_met_with_distinct_pool_ids(name):
    out = outputs_for(get(name).needs)
    sel = pick(name, out)
    assert_valid(sel.ids, out, BUDGET)
    assert len(sel.scores) == len(sel.ids)
    # the public entry point and the scorer's path agree
    np.testing.assert_array_equal(get(name).select(out, BUDGET, SEED, block=BLOCK), sel.ids)
    if get(name).kind == "scoring":  # scores are the strategy's, in descending order
        scores = get(name).score(out, SEED)
        np.testing.assert_array_equal(sel.scores, scores[np.searchsorted(out.ids, sel.ids)])
        assert (np.diff(sel.scores) <= 0).all()
    else:
        assert np.isnan(sel.scores).all()


@pytest.mark.parametrize("name", NAMES)
def test_budget_at_least_the_pool_returns_the_whole_pool(name):
    out = outputs_for(get(name).needs, n=40)
    for budget in (40, 41, 100):
        for ids in (get(name).select(out, budget, SEED, block=16), pick(name, out, budget).ids):
            assert_valid(ids, out, budget)
            np.testing.assert_array_equal(np.sort(ids), out.ids)
    assert len(get(name).select(out, 0, SEED, block=16)) == 0
    assert len(pick(name, out, 0).ids) == 0


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name):
    needs = get(name).needs
    a, b = pick(name, outputs_for(needs)), pick(name, outputs_for(needs))
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)
    other = pick(name, outputs_for(needs), seed=SEED + 1)
    if name in SEED_FREE:
        np.testing.assert_array_equal(other.ids, a.ids)
    else:
        assert not np.array_equal(other.ids, a.ids), f"{name} ignores the seed"


OPTIONAL = [(n, k) for n in NAMES for k in sorted(get(n).needs & OPTIONAL_NEEDS)]


SCORING = [n for n in NAMES if get(n).kind == "scoring"]


@pytest.mark.parametrize("name", SCORING)
def test_scores_in_row_blocks_equal_the_whole_pool_bit_for_bit(monkeypatch, name):
    """A shard is scored in row blocks (bounded temporaries): a score is a function of its
    own row, so the blocks (256 rows here, 2.3 blocks) change no bit."""
    from autoal_dist.strategies import base

    out = outputs_for(get(name).needs)
    whole = np.asarray(get(name).score_fn(out, SEED), dtype=np.float64)
    monkeypatch.setattr(base, "SCORE_BLOCK_BYTES", 1)
    assert base.score_rows(out) == 256 < len(out)
    assert np.array_equal(get(name).score(out, SEED), whole)


@pytest.mark.parametrize("name,need", OPTIONAL)
def test_optional_input_absent_still_meets_the_contract(name, need):
    out = outputs_for(get(name).needs)
    setattr(out, need, None)
    a = get(name).select(out, BUDGET, SEED, block=BLOCK)
    assert_valid(a, out, BUDGET)
    np.testing.assert_array_equal(get(name).select(out, BUDGET, SEED, block=BLOCK), a)


REQUIRED = [(n, k) for n in NAMES for k in sorted(get(n).needs - OPTIONAL_NEEDS)]


@pytest.mark.parametrize("name,need", REQUIRED)
def test_missing_declared_input_raises(name, need):
    """Both paths (Strategy.select, and the scorers' selection_from_outputs, which scores
    directly) check the declared needs: a ValueError naming the field."""
    out = outputs_for(get(name).needs)
    setattr(out, need, None)
    with pytest.raises(ValueError, match=rf"strategy '{name}' needs \['{need}'\]"):
        get(name).select(out, BUDGET, SEED, block=BLOCK)
    with pytest.raises(ValueError, match=rf"strategy '{name}' needs \['{need}'\]"):
        pick(name, out)


@pytest.mark.parametrize("name", NAMES)
def test_declared_needs_are_enough(name):
    """Inputs a strategy does not declare are not read: removing them changes nothing."""
    needs = get(name).needs
    full = pick(name, outputs_for(needs))
    out = outputs_for(needs)
    for field in ("probs", "embeddings", "mc_probs", "labeled_embeddings"):
        if field not in needs:
            setattr(out, field, None)
    np.testing.assert_array_equal(get(name).select(out, BUDGET, SEED, block=BLOCK), full.ids)


# ---- sharded over Ray actors -----------------------------------------------------------

@pytest.fixture(scope="module")
def scorers(ray_cluster):
    """RayScorers of 1 and 3 shards on the given outputs (no model: `load_outputs`).
    The 1-shard scorer borrows the first actor of the 3-shard one, so the module holds
    3 CPUs of the session cluster, not 4; calls are sequential, each load a new round."""
    from autoal_dist.scoring.ray_scorer import RayScorer

    three = RayScorer(np.zeros((1, 1), np.float32), None, None, shards=3, batch_size=BLOCK)
    one = RayScorer(np.zeros((1, 1), np.float32), None, None, shards=1, batch_size=BLOCK,
                    actors=three.actors[:1])
    try:
        yield {1: one, 3: three}
    finally:
        three.close()


def ray_pick(scorer, name: str, out: PoolOutputs, budget: int = BUDGET, seed: int = SEED):
    """What RayScorer.select_many does after its forward pass, on the given outputs."""
    scorer.load_outputs(out)
    if get(name).kind == "scoring":
        return scorer._top_b(name, budget, seed)
    return scorer.select_set(name, budget, seed, out.labeled_embeddings)


@pytest.mark.parametrize("name", NAMES)
def test_one_shard_equals_three_shards_bit_for_bit(scorers, name):
    out = outputs_for(get(name).needs)
    ref = pick(name, out)
    for k, scorer in scorers.items():
        got = ray_pick(scorer, name, out)
        np.testing.assert_array_equal(got.ids, ref.ids, err_msg=f"{k} shard(s)")
        np.testing.assert_array_equal(got.scores, ref.scores, err_msg=f"{k} shard(s)")


@pytest.mark.parametrize("name", NAMES)
def test_sharded_budget_equal_to_the_pool(scorers, name):
    """The whole pool on 1 and 3 shards, in the in-process order. A budget above the pool
    is clamped by scoring strategies' merge; a set strategy's driver is not clamped
    (Config keeps budget <= pool, so select_many never asks): today it raises."""
    out = outputs_for(get(name).needs, n=150)
    ref = pick(name, out, budget=150)
    for scorer in scorers.values():
        np.testing.assert_array_equal(ray_pick(scorer, name, out, budget=150).ids, ref.ids)
        if get(name).kind == "scoring":
            np.testing.assert_array_equal(ray_pick(scorer, name, out, budget=151).ids, ref.ids)
        else:
            with pytest.raises(ValueError):
                ray_pick(scorer, name, out, budget=151)


# ---- round policies: a real one-round campaign -----------------------------------------

@pytest.fixture(scope="module")
def pool_size():
    return len(load_dataset("digits").train_x)


@pytest.mark.parametrize("policy", quick_cases(sorted(POLICIES), {"vote", "albl"}))
def test_policy_budget_met_distinct_pool_ids_deterministic(tmp_path, pool_size, policy):
    journals = []
    for run in ("a", "b"):
        out = tmp_path / run
        assert main(["run", "--local", "--dataset", "digits", "--strategy", policy,
                     "--rounds", "1", "--budget", "10", "--epochs", "1", "--out", str(out),
                     "--quiet"]) == 0
        journals.append(Run.at(out).journal().to_pandas())
    a, b = journals
    batch = a[a["round"] == 1]
    assert len(batch) == 10 and set(batch.strategy) == {policy}
    assert batch.id.is_unique and batch.id.between(0, pool_size - 1).all()
    assert not batch.id.isin(a[a["round"] == 0].id).any(), "queried an already labeled id"
    assert a.id.is_unique
    assert np.array_equal(a.id, b.id) and np.array_equal(a["round"], b["round"])
    assert np.array_equal(a.score, b.score, equal_nan=True)
