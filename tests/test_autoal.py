"""AutoAL (docs/autoal.md): gradients, the synthetic check, the soft count,
candidates computed once per round, the query rule, and an end-to-end CLI run."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy.special import ndtri

from autoal_dist.autoal import memberships as memberships_mod
from autoal_dist.autoal import policy as policy_mod
from autoal_dist.autoal.memberships import membership_matrix, pick_count
from autoal_dist.autoal.objectives import searchnet_objective
from autoal_dist.autoal.relax import gmm_threshold, mixture_quantile, relax
from autoal_dist.autoal.report import WEIGHTS_FILE, plot_autoal_weights
from autoal_dist.autoal.search import build_models, score_rows
from autoal_dist.cli import main
from autoal_dist.config import AutoALConfig, Config
from autoal_dist.data import load_dataset
from autoal_dist.data.transforms import Normalizer
from autoal_dist.models import SearchNet, build_model
from autoal_dist.rounds import RoundContext
from autoal_dist.run import Run
from autoal_dist.scoring import LocalScorer
from autoal_dist.strategies import top_b
from autoal_dist.training.loop import train_classifier

M, FEATURES = 7, 16
# The synthetic check's settings. With the paper's defaults (tau = std(p)/4, lambda 1,
# SGD lr 0.05, GMM threshold) it holds in 3 of 24 (N, r, seed) cases; with these,
# in 22 of 24 (issue #4 note).
STABLE = AutoALConfig(mode="paper", use_loss_head=False)  # paper mode, no loss-head column


def memberships_for(ids: np.ndarray, picks: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(membership_matrix(ids, picks))


def random_problem(n: int, r: float, seed: int):
    """Features, ids (not 0..n-1), per-sample losses, and candidates picking at random."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) * 3 + 5
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    loss = rng.exponential(size=n).astype(np.float32)
    q = pick_count(r, n, 2)
    picks = [rng.choice(ids, q, replace=False) for _ in range(M)]
    return ids, x, loss, q, picks


# ---- gradients ------------------------------------------------------------------

def objective_grads(a: AutoALConfig, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    ids, x, loss, q, picks = random_problem(64, 0.1, seed)
    torch.manual_seed(seed)
    net = SearchNet("mlp", (FEATURES,), 10, M, use_loss_head=True).to(dtype)
    out = net(torch.from_numpy(x).to(dtype))
    losses = searchnet_objective(out, memberships_for(ids, picks).to(dtype), torch.from_numpy(loss),
                                 ids, 0.1, a, seed, q)
    losses.searchnet.backward()
    return [p.grad for p in net.search_parameters()]


def test_gradient_reaches_searchnet_with_default_tau():
    grads = objective_grads(AutoALConfig(), torch.float32)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # trunk and weight head alike


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_tau_gives_exactly_zero_gradient(dtype):
    """The paper's claim, with the released code's GMM threshold: s is exactly 0/1 in float64
    (the relaxation always runs in float64, so it holds for a float32 SearchNet too)."""
    for seed in range(3):
        grads = objective_grads(AutoALConfig(tau="reference", threshold="gmm"), dtype, seed)
        assert all(g is None or (g == 0).all() for g in grads)


# ---- the synthetic check and the soft count --------------------------------------

@pytest.fixture(scope="module")
def synthetic_search():
    """Candidate 0 picks exactly the top-q losses of L_search, the others pick at random."""
    n, r, seed, iters = 128, 0.1, 0, 100
    ids, x, loss, q, picks = random_problem(n, r, seed)
    picks[0] = top_b(ids, loss, q)
    member = memberships_for(ids, picks)
    cfg = Config(model="mlp", candidates=[f"c{m}" for m in range(M)],
                 autoal=dataclasses.replace(STABLE, search_iters=iters))
    torch.manual_seed(seed)
    models = build_models(cfg, (FEATURES,), 10, "cpu")
    x_t, loss_t = torch.from_numpy(x), torch.from_numpy(loss)

    def mean_weights() -> np.ndarray:
        models.searchnet.eval()
        with torch.no_grad():
            return models.searchnet(x_t).weights.mean(0).numpy()

    before = mean_weights()
    for _ in range(iters):
        models.searchnet.train()
        losses = searchnet_objective(models.searchnet(x_t), member, loss_t, ids, r, cfg.autoal,
                                     seed, q)
        models.step(losses.searchnet)
    return dict(before=before, after=mean_weights(), models=models, x=x, ids=ids,
                member=member.numpy(), q=q, r=r, a=cfg.autoal, seed=seed)


def test_high_loss_candidate_gains_weight(synthetic_search):
    before, after = synthetic_search["before"], synthetic_search["after"]
    assert abs(before[0] - before[1:].max()) < 0.1  # no head start
    assert after[0] > after[1:].max() + 0.2
    assert after[0] > before[0]


def test_soft_count_stays_near_r_n(synthetic_search):
    s = synthetic_search
    n = len(s["ids"])
    scores = score_rows(s["models"].searchnet, s["x"], s["member"], s["ids"], s["q"],
                        Normalizer(np.zeros(FEATURES, np.float32), np.ones(FEATURES, np.float32)),
                        batch_size=50, device="cpu")
    total = float(relax(scores.z, s["r"], s["a"], s["seed"]).s.sum())
    assert abs(total - s["r"] * n) <= 0.2 * s["r"] * n


# ---- the threshold -----------------------------------------------------------------

def test_mixture_quantile_of_one_gaussian():
    t = mixture_quantile(np.array([2.0]), np.array([3.0]), np.array([1.0]), 0.9)
    assert t == pytest.approx(2.0 + 3.0 * ndtri(0.9), abs=1e-9)


@pytest.mark.parametrize("r", [0.05, 0.1, 0.2])
def test_gmm_threshold_tracks_the_empirical_quantile(r):
    p = torch.softmax(torch.from_numpy(np.random.default_rng(1).normal(size=2000)), 0).numpy()
    t = gmm_threshold(p, 1 - r, components=5, seed=0)
    assert abs((p <= t).mean() - (1 - r)) < 0.02  # a 5-component fit smooths the tail


def test_gmm_threshold_with_a_spike_of_ties():
    """Most rows no candidate picked share one p exactly; the fit must still give a quantile."""
    rng = np.random.default_rng(2)
    p = np.r_[np.full(60, 0.004), rng.uniform(0.005, 0.02, 40)]
    t = gmm_threshold(p, 0.9, components=5, seed=0)
    assert np.isfinite(t) and abs((p <= t).mean() - 0.9) <= 0.03


# ---- one round through the policy -------------------------------------------------------

class CountingScorer:
    """LocalScorer that records each select_many call's names and result."""

    def __init__(self, scorer: LocalScorer):
        self.scorer, self.calls, self.results = scorer, [], []

    def select_many(self, model, positions, names, budget, seed, labeled_positions, timings=None,
                    keep=False):
        self.calls.append(list(names))
        self.results.append(self.scorer.select_many(model, positions, names, budget, seed,
                                                    labeled_positions, timings, keep))
        return self.results[-1]

    def rows(self, ids):
        return self.scorer.rows(ids)

    def labeled(self):
        return self.scorer.labeled()


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("auto", data.input_shape, data.num_classes).eval()
    return data, Normalizer.fit(data.train_x), model


def round_context(digits, tmp_path, **autoal) -> RoundContext:
    data, normalize, model = digits
    cfg = Config(budget=10, autoal=AutoALConfig(**{"search_iters": 2, "fitnet_pretrain_iters": 2,
                                                    **autoal}))
    labeled = np.arange(0, 600, 15, dtype=np.int64)  # 40 labeled
    unlabeled = np.setdiff1d(np.arange(len(data.train_y)), labeled)
    scorer = CountingScorer(LocalScorer(data.train_x, normalize, show_progress=False))
    Run.at(tmp_path).write_round(0, labeled[:20], "init")  # the randomly drawn labels
    quick = dataclasses.replace(cfg.train, epochs=1, min_steps=5)

    def fit(ids, seed, name, *, min_steps=None):
        torch.manual_seed(seed)
        return train_classifier(build_model("auto", data.input_shape, data.num_classes),
                                data.train_x[ids], data.train_y[ids], normalize, quick, seed)

    return RoundContext(cfg, data, normalize, model, scorer, 3, labeled, unlabeled, "cpu",
                        Run.at(tmp_path), fit=fit)


# embed = the loss-rank reward's search; eer = the default reward; gain = the simulation
MODES = {"embed": {"mode": "embed", "reward": "loss_rank"}, "paper": {"mode": "paper"},
         "gain": {"mode": "embed", "reward": "gain", "splits": 2, "random_draws": 1},
         "eer": {"mode": "embed", "reward": "eer", "eer_draws": 2, "eer_eval": 200}}


@pytest.mark.parametrize("mode", list(MODES))
def test_candidates_are_computed_once_per_round(digits, tmp_path, monkeypatch, mode):
    on_labeled = []
    real_select = memberships_mod.select
    monkeypatch.setattr(memberships_mod, "select",
                        lambda name, *a, **k: on_labeled.append(name) or real_select(name, *a, **k))
    results = []
    for iters in (2, 2, 6):
        ctx = round_context(digits, tmp_path, search_iters=iters, **MODES[mode])
        on_labeled.clear()
        sel = policy_mod.autoal_policy(ctx)
        assert ctx.scorer.calls == [ctx.cfg.candidates]  # U: one pass, every candidate
        if mode not in ("gain", "eer"):  # gain picks on L per split, eer only on U
            assert on_labeled == ctx.cfg.candidates  # on L: once each, whatever search_iters
        assert ctx.timings["search_s"] > 0 and ctx.timings["score_s"] > 0
        results.append(sel)
    a, b, _ = results
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.scores, b.scores)  # deterministic
    table = pq.read_table(tmp_path / WEIGHTS_FILE).to_pylist()  # same round three times: no dups
    loss_column = [] if mode in ("gain", "eer") else [policy_mod.LOSS_HEAD]
    assert [row["strategy"] for row in table] == [*ctx.cfg.candidates, *loss_column]
    assert {row["round"] for row in table} == {ctx.round + 1}
    assert sum(row["weight"] for row in table) == pytest.approx(1.0, abs=1e-5)
    assert Path(plot_autoal_weights(Run.at(tmp_path))).is_file()  # drawn by the run's report


def test_query_takes_only_candidate_picks_ties_by_smallest_id(digits, tmp_path, monkeypatch):
    """With equal weights everywhere, p ranks by how many candidates picked a sample; within
    a count every p ties exactly, so the smallest ids go first."""
    ctx = round_context(digits, tmp_path, use_loss_head=False, mode="paper")
    torch.manual_seed(0)
    flat = SearchNet(ctx.cfg.model, ctx.data.input_shape, ctx.data.num_classes,
                     len(ctx.cfg.candidates), False)
    with torch.no_grad():
        flat.weight_head.weight.zero_()
        flat.weight_head.bias.zero_()
    no_diag = {"iterations": 0, "soft_count": np.nan, "target_count": np.nan,
               "grad_norm": np.nan, "rank_corr": np.nan, "evidence_rows": 0}
    monkeypatch.setattr(policy_mod, "search_round",
                        lambda ctx, r, fit_nets=None: (flat.eval(), no_diag))
    sel = policy_mod.autoal_policy(ctx)
    (picks,) = ctx.scorer.results
    union = np.unique(np.concatenate([picks[n].ids for n in ctx.cfg.candidates]))
    votes = sum(np.isin(union, picks[n].ids).astype(float) for n in ctx.cfg.candidates)
    assert np.array_equal(sel.ids, top_b(union, votes, ctx.cfg.budget))  # within the union only


# ---- end to end ---------------------------------------------------------------------------

def test_cli_run_autoal_end_to_end(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text("autoal: {search_iters: 5, fitnet_pretrain_iters: 5}\n"
                      "train: {min_steps: 10}\n")
    out = tmp_path / "r"
    assert main(["run", "--strategy", "autoal", "--init", "20", "--budget", "10", "--rounds", "2",
                 "--epochs", "1", "--quiet", "--local", "--config", str(config),
                 "--out", str(out)]) == 0
    rows = pq.read_table(out / WEIGHTS_FILE).to_pylist()
    names = Config().candidates  # the default reward has no loss column
    assert ([(row["round"], row["strategy"]) for row in rows]
            == [(r, n) for r in (1, 2) for n in names])
    assert all(0 <= row["share"] <= 1 for row in rows)
    assert (out / "autoal_weights.png").is_file()
