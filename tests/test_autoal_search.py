"""The default search (`autoal.mode: embed`): cross-fitted heads on f's embeddings,
strategy-level weights shrunk toward uniform and pooled over rounds; `vote` as its
control; the per-round diagnostics users read to see whether the search learned."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from autoal_dist.autoal.crossfit import (
    HeadSettings,
    centered_ranks,
    crossfit,
    crossfit_predicted_loss,
    fit_head,
    fold_of,
    head_outputs,
    standardize,
)
from autoal_dist.autoal.memberships import membership_matrix, pick_count
from autoal_dist.autoal.relax import relax_count
from autoal_dist.autoal.report import EVIDENCE_FILE, SEARCH_FILE
from autoal_dist.autoal.weights import Evidence, fit_weights
from autoal_dist.cli import main
from autoal_dist.config import PAPER_CANDIDATES, AutoALConfig
from autoal_dist.strategies import top_b

M = 7
HEADS = HeadSettings(iters=50, weight_decay=1e-3, dropout=0.3, mc_samples=4)


def planted_round(round_: int, n: int, seed: int, informative: int | None = 0) -> Evidence:
    """n rows with a random held-out reward; candidate `informative` ranks rows by the
    reward (its top-q are the highest), the others rank at random."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    reward = centered_ranks(rng.normal(size=n))
    q = pick_count(0.01, n, 10)
    picks = [rng.permutation(ids)[:q] for _ in range(M)]
    if informative is not None:
        picks[informative] = top_b(ids, reward, q)
    return Evidence(round_, membership_matrix(ids, picks), reward, q)


ACTIVE = np.ones(M, bool)


def test_informative_candidate_wins_within_a_few_rounds():
    a = AutoALConfig()
    pooled, winners = [], []
    for k in range(1, 5):
        pooled.append(planted_round(k, 40 + 20 * k, seed=k))
        fit = fit_weights(pooled, ACTIVE, a)
        winners.append(int(np.argmax(fit.weights)))
        assert abs(fit.soft_count - fit.target) <= 0.2 * fit.target
    assert winners[-2:] == [0, 0]
    assert fit.weights[0] > 1.5 / M  # well above uniform
    vote = fit_weights(pooled, ACTIVE, AutoALConfig(search_iters=0))
    assert fit.rank_corr > vote.rank_corr + 0.05  # ranks rows by held-out reward better


@pytest.mark.parametrize("n", [20, 60])
def test_thin_evidence_stays_near_uniform(n):
    """One round of random picks (10 per candidate): nothing to learn, so the weights stay
    within 30% of uniform (the vote) in every seed, while a planted candidate on the same
    amount of evidence already leads."""
    for seed in range(5):
        noise = fit_weights([planted_round(1, n, seed, informative=None)], ACTIVE,
                            AutoALConfig())
        assert np.abs(noise.weights - 1 / M).max() < 0.3 / M
        assert noise.iterations < AutoALConfig().search_iters  # stopped: weights stopped moving
        planted = fit_weights([planted_round(1, n, seed)], ACTIVE, AutoALConfig())
        assert planted.weights[0] == planted.weights.max() and planted.weights[0] > 1.05 / M


def test_shrink_and_pooling_decide_how_far_the_weights_move():
    rounds = [planted_round(k, 60, seed=k) for k in range(1, 4)]
    one = fit_weights(rounds[-1:], ACTIVE, AutoALConfig()).weights[0]
    pooled = fit_weights(rounds, ACTIVE, AutoALConfig()).weights[0]
    strong = fit_weights(rounds, ACTIVE, AutoALConfig(shrink=20.0)).weights[0]
    assert pooled > one > 1 / M  # more (consistent) evidence moves the weight further
    assert strong < pooled  # a stronger prior keeps it nearer the vote


def test_inactive_column_gets_no_weight():
    ev = planted_round(1, 60, seed=1)
    ev = Evidence(1, np.hstack([ev.memberships, np.zeros((60, 1), np.float32)]), ev.reward, ev.q)
    fit = fit_weights([ev], np.r_[ACTIVE, False], AutoALConfig())
    assert fit.weights[-1] == 0.0 and fit.weights.sum() == pytest.approx(1.0)


def test_zero_search_iterations_is_the_uniform_vote():
    fit = fit_weights([planted_round(1, 60, seed=1)], ACTIVE, AutoALConfig(search_iters=0))
    assert fit.iterations == 0 and np.all(fit.weights == 1.0 / M)


def test_a_round_where_every_candidate_picks_all_of_l_leaves_the_weights_finite():
    """q >= |L| (dup-digits: init 10 = min_picks): every p is equal, the row is full; its
    relaxation once put 0 * inf = NaN into every weight and the query crashed on NaN scores."""
    ids = np.arange(10)
    full = Evidence(1, membership_matrix(ids, [ids] * 4), np.linspace(-0.5, 0.5, 10), 10)
    fit = fit_weights([full], np.ones(4, bool), AutoALConfig(reward="loss_rank"))
    np.testing.assert_allclose(fit.weights, 0.25)
    more = np.arange(30)
    picks = [more[:10], more[5:15], more[10:20], more[20:]]
    later = Evidence(2, membership_matrix(more, picks), np.linspace(-0.5, 0.5, 30), 10)
    fit = fit_weights([full, later], np.ones(4, bool), AutoALConfig(reward="loss_rank"))
    assert np.isfinite(fit.weights).all() and fit.weights[3] > 0.25  # the high-reward picks


def test_count_exact_relaxation_per_padded_row():
    """Each row's soft count equals its target exactly (padding excluded), the gradient reaches
    z, and a row whose target covers every entry selects them all."""
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(3, 50))).requires_grad_(True)
    mask = torch.ones(3, 50, dtype=torch.bool)
    mask[1, 30:] = False
    mask[2, 8:] = False
    target = torch.tensor([10.0, 5.0, 8.0], dtype=torch.float64)
    s = relax_count(z, mask, target, 1.0)
    np.testing.assert_allclose(s.sum(1).detach().numpy(), [10.0, 5.0, 8.0], rtol=1e-9)
    assert (s[~mask] == 0).all() and (s[2, :8] == 1).all()
    (s[0, :5].sum() + s[1, :5].sum()).backward()
    assert torch.isfinite(z.grad).all() and z.grad[:2].abs().sum() > 0


# ---- cross-fitting ---------------------------------------------------------------------

def test_folds_are_balanced_and_seeded():
    f = fold_of(23, 4, seed=1)
    assert sorted(np.bincount(f)) == [5, 6, 6, 6]
    assert np.array_equal(f, fold_of(23, 4, seed=1)) and not np.array_equal(f, fold_of(23, 4, 2))


def test_every_row_is_scored_by_a_head_that_never_saw_it():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    cf = crossfit(emb, y, 3, folds=4, h=HEADS, seed=5)
    for k in range(4):
        test = cf.fold == k
        e_train, e_test = standardize(emb[~test], emb[test])
        head = fit_head(e_train, torch.from_numpy(y[~test]), 3, HEADS)
        probs, mc = head_outputs(head, e_test, HEADS, 5 + k)
        np.testing.assert_array_equal(cf.probs[test], probs)
        np.testing.assert_array_equal(cf.mc_probs[:, test], mc)
    np.testing.assert_allclose(cf.loss, -np.log(cf.probs[np.arange(40), y]), rtol=1e-6)


def test_loss_column_is_predicted_out_of_fold():
    """A target that is pure noise: in-sample ridge would fit it, out-of-fold cannot."""
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 30)).astype(np.float32)
    target = rng.normal(size=200)
    pred = crossfit_predicted_loss(emb, target, fold_of(200, 4, 0), alpha=1e-3)
    assert abs(np.corrcoef(pred, target)[0, 1]) < 0.3


def test_centered_ranks():
    np.testing.assert_allclose(centered_ranks(np.array([3.0, 1.0, 2.0])), [0.5, -0.5, 0.0])
    assert centered_ranks(np.array([7.0])).tolist() == [0.0]


# ---- campaigns --------------------------------------------------------------------------

FAST = ["--init", "20", "--budget", "10", "--epochs", "1", "--quiet", "--local"]


def run(tmp_path, name, *extra, config: str = "train: {min_steps: 10}\n"):
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(config)
    out = tmp_path / name
    assert main(["run", *FAST, "--config", str(cfg), "--out", str(out), *extra]) == 0
    return out


def journal(out):
    return pq.read_table(out / "journal").sort_by([("round", "ascending"), ("id", "ascending")])


LOSS_RANK = "train: {min_steps: 10}\nautoal: {reward: loss_rank}\n"
PAPER_POOL = ",".join(PAPER_CANDIDATES)


def test_soft_count_within_20_percent_in_every_round(tmp_path):
    out = run(tmp_path, "autoal", "--strategy", "autoal", "--rounds", "4",
              "--candidates", PAPER_POOL, config=LOSS_RANK)
    t = pq.read_table(out / SEARCH_FILE).to_pandas()
    per_round = t.groupby("round").first()
    assert list(per_round.index) == [1, 2, 3, 4]
    assert ((per_round.soft_count - per_round.target_count).abs()
            <= 0.2 * per_round.target_count).all()
    assert (per_round.target_count >= 10).all() and (per_round.iterations >= 1).all()
    assert list(per_round.evidence_rows) == [20, 50, 90, 140]  # pooled: L of every round so far
    assert set(t.strategy) == {"least_confidence", "margin", "entropy", "kmeans", "bald",
                               "var_ratio", "mean_std", "loss_head"}
    assert not t[t.strategy == "loss_head"].active.any()  # |L| < loss_head_min_rows
    assert t.groupby("round").weight.sum().round(6).eq(1).all()
    assert (out / "autoal_weights.png").stat().st_size > 0
    assert pq.read_table(out / EVIDENCE_FILE).num_rows == 140


def test_campaign_learns_which_candidate_picks_informative_rows(tmp_path):
    """A real campaign whose pool has one informative candidate: margin picks the labeled rows
    with the highest held-out loss, random picks at random. Margin's weight wins from the
    first rounds on and grows as evidence pools."""
    out = run(tmp_path, "planted", "--strategy", "autoal", "--rounds", "4",
              "--candidates", "margin,random", "--epochs", "5", config=LOSS_RANK)
    t = pq.read_table(out / SEARCH_FILE).to_pandas()
    w = t.pivot(index="round", columns="strategy", values="weight")
    assert (w.margin > w.random).all()
    assert w.margin.iloc[-1] > 0.6 and w.margin.iloc[-1] >= w.margin.iloc[0]


def test_autoal_without_search_or_loss_head_is_vote(tmp_path):
    vote = run(tmp_path, "vote", "--strategy", "vote", "--rounds", "2")
    autoal = run(tmp_path, "autoal", "--strategy", "autoal", "--rounds", "2",
                 config="train: {min_steps: 10}\nautoal: {reward: loss_rank, search_iters: 0, "
                        "use_loss_head: false}\n")
    a, v = journal(autoal), journal(vote)
    assert a.column("id").equals(v.column("id"))
    np.testing.assert_array_equal(a.column("score").to_numpy(), v.column("score").to_numpy())


def test_paper_mode_reference_tau_has_zero_gradient_every_round(tmp_path):
    out = run(tmp_path, "paper", "--strategy", "autoal", "--rounds", "2",
              config="train: {min_steps: 10}\nautoal: {mode: paper, tau: reference, "
                     "threshold: gmm, search_iters: 3, fitnet_pretrain_iters: 3}\n")
    t = pq.read_table(out / SEARCH_FILE).to_pandas()
    assert set(t["mode"]) == {"paper"} and (t.grad_norm == 0).all()


def test_strategies_lists_vote_and_the_policies(capsys):
    assert main(["strategies"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"vote", "autoal", "albl", "margin", "kmeans"} <= names


@pytest.mark.parametrize("key,value,field", [
    ("mode", "fancy", "autoal.mode"), ("folds", 1, "autoal.folds"),
    ("shrink", -1, "autoal.shrink"), ("evidence_decay", 1.5, "autoal.evidence_decay"),
    ("tol", 0, "autoal.tol"), ("min_picks", 0, "autoal.min_picks"),
    ("weights_lr", ".inf", "autoal.weights_lr"),
    ("head_weight_decay", -0.1, "autoal.head_weight_decay"),
    ("loss_head_min_rows", 1, "autoal.loss_head_min_rows"),
    ("reward", "accuracy", "autoal.reward"), ("splits", 1, "autoal.splits"),
    ("random_draws", 0, "autoal.random_draws"), ("gain_temperature", 0,
                                                 "autoal.gain_temperature"),
    ("gain_validation", "test", "autoal.gain_validation"), ("combine", "max", "autoal.combine"),
    ("prior", "nope", "autoal.prior"), ("switch_se", -1, "autoal.switch_se"),
    ("cold_prior", "typical", "autoal.cold_prior"),
    ("cold_per_class", -1, "autoal.cold_per_class"),
])
def test_new_keys_are_validated(tmp_path, capsys, key, value, field):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"autoal: {{{key}: {value}}}\n")
    out = tmp_path / "never"
    assert main(["run", "--strategy", "autoal", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and not out.exists()
