"""The `autoal` and `vote` round policies: query U from the candidates' picks.

The candidates' selections on U come from ONE `ctx.scorer.select_many` call (one
forward pass, sharded under Ray); only the union of their picks is scored, so only
samples some candidate picked can be queried. `vote` weighs every candidate
equally (no search, no loss column): the control that says whether AutoAL's
search adds anything. AutoAL with `search_iters: 0` and no loss head is `vote`.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from autoal_dist.autoal import eer, embed_search, gain, report
from autoal_dist.autoal.crossfit import HeadSettings
from autoal_dist.autoal.memberships import union_memberships
from autoal_dist.autoal.search import score_rows, search_round
from autoal_dist.models.inference import compute_outputs
from autoal_dist.rounds import RoundContext
from autoal_dist.scoring.base import Selection
from autoal_dist.seeds import derive
from autoal_dist.strategies import needs_of, top_b

LOSS_HEAD = "loss_head"  # the loss head's column in autoal_weights.parquet


def candidate_picks(ctx: RoundContext, keep: bool = False) -> list[np.ndarray]:
    """Each candidate's top-b on U, in its selection order: one scoring pass (`keep`: held
    for `Scorer.rows`)."""
    cfg = ctx.cfg
    sels = ctx.scorer.select_many(ctx.model, ctx.unlabeled, cfg.candidates, cfg.budget,
                                  derive(cfg.seed, ctx.round, "select"), ctx.labeled, ctx.timings,
                                  keep=keep)
    return [sels[n].ids for n in cfg.candidates]


def candidate_union(ctx: RoundContext) -> tuple[np.ndarray, np.ndarray]:
    """(union of the candidates' top-b on U, its memberships): one scoring pass."""
    return union_memberships(candidate_picks(ctx))


def column_names(ctx: RoundContext) -> list[str]:
    return [*ctx.cfg.candidates, *([LOSS_HEAD] if ctx.cfg.autoal.use_loss_head else [])]


def vote_policy(ctx: RoundContext) -> Selection:
    """The b rows most candidates picked (the plain vote; ties by smallest id)."""
    ids, member = candidate_union(ctx)
    z = member.astype(np.float64) @ np.full(member.shape[1], 1.0 / member.shape[1])
    chosen = top_b(ids, z, ctx.cfg.budget)
    return Selection(chosen, z[np.searchsorted(ids, chosen)])


def add_search_seconds(ctx: RoundContext, seconds: float) -> None:
    ctx.timings["search_s"] = ctx.timings.get("search_s", 0.0) + seconds


def embed_policy(ctx: RoundContext, r: float) -> Selection:
    """Mode embed: strategy-level weights from the cross-fitted search; z = A w on U."""
    cfg = ctx.cfg
    t0 = time.perf_counter()
    found = embed_search.search(ctx, r, derive(cfg.seed, ctx.round, "search"),
                                ctx.fitter.fit_weights(f"search{ctx.round:03d}"))
    search_s = time.perf_counter() - t0
    ids, member = candidate_union(ctx)
    t1 = time.perf_counter()
    if cfg.autoal.use_loss_head:
        member = np.hstack([member, embed_search.loss_column_on(ctx, found, ids, cfg.budget)])
    w = found.fit.weights
    ctx.progress.note(f"  round {ctx.round}: AutoAL search: {found.fit.iterations} iterations; "
                      + ", ".join(f"{n} {x:.2f}" for n, x in zip(column_names(ctx), w)))
    z = member.astype(np.float64) @ w
    chosen = top_b(ids, z, cfg.budget)
    rows = np.searchsorted(ids, chosen)
    add_search_seconds(ctx, search_s + time.perf_counter() - t1)
    names, round_ = column_names(ctx), ctx.round + 1
    report.record_weights(ctx.run, report.weights_table(
        round_, names, np.broadcast_to(w, (len(rows), len(w))), member[rows]))
    fit = found.fit
    report.record(ctx.run, report.SEARCH_FILE, report.search_table(
        round_, "embed", names, w, found.active, iterations=fit.iterations,
        soft_count=fit.soft_count, target_count=fit.target, grad_norm=fit.grad_norm,
        rank_corr=fit.rank_corr, evidence_rows=found.evidence_rows))
    return Selection(chosen, z[rows])


def head_settings(ctx: RoundContext) -> HeadSettings:
    cfg, a = ctx.cfg, ctx.cfg.autoal
    return HeadSettings(a.fitnet_pretrain_iters, a.head_weight_decay, cfg.train.dropout,
                        cfg.score.mc_samples)


def gain_problem(ctx: RoundContext, seed: int) -> gain.GainProblem:
    """The simulation's input: f_B (trained on a seeded half B of L, its step floor scaled
    to B's share) and its scoring pass over L, L's labels, and which labels were drawn at
    random (the journal's round 0)."""
    cfg, a = ctx.cfg, ctx.cfg.autoal
    if ctx.fit is None:
        raise ValueError("autoal.reward 'gain' trains a model of its own: the round context "
                         "needs a trainer (fit)")
    journal = ctx.run.journal()
    initial = journal.column("id").to_numpy()[journal.column("round").to_numpy() == 0]
    base = gain.base_rows(len(ctx.labeled), seed)
    f_b = ctx.fit(ctx.labeled[base], seed, f"simulate{ctx.round:03d}",
                  min_steps=gain.base_min_steps(cfg.train.min_steps, int(base.sum()),
                                                len(base)))
    out = compute_outputs(f_b, ctx.data.train_x[ctx.labeled], ctx.labeled, ctx.normalize,
                          needs=needs_of(list(cfg.candidates)), batch_size=cfg.score.batch_size,
                          mc_samples=cfg.score.mc_samples, seed=seed, device=ctx.device)
    return gain.GainProblem(
        out.probs, out.embeddings, out.mc_probs, ctx.data.train_y[ctx.labeled], base,
        np.isin(ctx.labeled, initial), tuple(cfg.candidates), cfg.budget / len(ctx.labeled),
        head_settings(ctx), a.random_draws, seed, a.gain_validation, a.combine == "interleave")


def eer_problem(ctx: RoundContext, picks: list[np.ndarray], seed: int) -> eer.EerProblem:
    """Expected error reduction's input: f's outputs on the union of the candidates'
    batches, on a seeded sample E of U and on L, all read from the round's scoring pass
    (`Scorer.rows`, `Scorer.labeled`: f runs over nothing twice)."""
    cfg = ctx.cfg
    if len({len(p) for p in picks}) > 1:
        raise ValueError("autoal.reward 'eer' compares batches of one size; the candidates "
                         f"picked {', '.join(str(len(p)) for p in picks)} rows")
    union = np.unique(np.concatenate(picks))
    n_eval = min(cfg.autoal.eer_eval, len(ctx.unlabeled))
    sample = np.sort(np.random.default_rng(seed).choice(ctx.unlabeled, n_eval, replace=False))
    both = np.union1d(union, sample)
    on_u = ctx.scorer.rows(both)
    in_union, in_sample = np.searchsorted(both, union), np.searchsorted(both, sample)
    return eer.EerProblem(
        ctx.scorer.labeled(), ctx.data.train_y[ctx.labeled], union, on_u.embeddings[in_union],
        on_u.probs[in_union], np.stack([np.searchsorted(union, p) for p in picks]),
        on_u.embeddings[in_sample], tuple(cfg.candidates), head_settings(ctx), seed)


def gain_policy(ctx: RoundContext) -> Selection:
    """Rewards `gain` and `eer`: candidate weights from this round's estimated gains and
    earlier rounds' (decayed); the batch is the top-b of the prior candidate, or of the
    leader once it leads by `switch_se` standard errors (`combine`: or the picks
    interleaved by weight, or the weighted vote)."""
    cfg, a = ctx.cfg, ctx.cfg.autoal
    seed = derive(cfg.seed, ctx.round, "search")
    problem: gain.RewardProblem
    if a.reward == "eer":  # judges the real batches: the scoring pass comes first
        picks = candidate_picks(ctx, keep=True)
        t0 = time.perf_counter()
        problem, units, with_mix = eer_problem(ctx, picks, seed), a.eer_draws, False
        what = "label draws"
    else:
        t0 = time.perf_counter()
        problem = gain_problem(ctx, seed)
        units, with_mix, what = a.splits, problem.with_mix, "simulated splits"
    gains = ctx.fitter.simulate(f"search{ctx.round:03d}")(problem, list(range(units)))
    current = gain.estimate(gains)
    options = list(problem.options)
    n_classes = ctx.data.num_classes
    journal_rounds = ctx.run.journal().column("round").to_numpy()  # |L| at round k: rounds < k
    earlier = [gain.GainEstimate(m, se) for k, m, se in
               report.earlier_gains(ctx.run, ctx.round + 1, options)
               if gain.trusted(a, int((journal_rounds < k).sum()), n_classes)]
    est = gain.pooled([*earlier, current], a.evidence_decay)
    option_w = gain.option_weights(est, a.gain_temperature)
    w = gain.candidate_weights(option_w, with_mix)
    search_s = time.perf_counter() - t0
    if a.reward != "eer":
        picks = candidate_picks(ctx)
    ids, member = union_memberships(picks)
    t1 = time.perf_counter()
    prior = gain.prior_candidate(list(cfg.candidates), a, len(ctx.labeled), n_classes)
    trusted = gain.trusted(a, len(ctx.labeled), n_classes)
    best = ((gain.chosen_candidate(est, prior, a.switch_se) if trusted else prior)
            if a.combine == "best" and not with_mix else None)
    ctx.progress.note(f"  round {ctx.round}: AutoAL {units} {what}; weights "
                      + ", ".join(f"{n} {x:.2f}" for n, x in zip(options, option_w))
                      + ("" if best is None else f"; batch: {cfg.candidates[best]}'s")
                      + ("" if best is None or trusted else " (cold start: the estimates wait)"))
    chosen, z = gain.combine(a.combine, picks, ids, member, w, cfg.budget, best)
    rows = np.searchsorted(ids, chosen)
    add_search_seconds(ctx, search_s + time.perf_counter() - t1)
    round_ = ctx.round + 1
    report.record_weights(ctx.run, report.weights_table(
        round_, list(cfg.candidates), np.broadcast_to(w, (len(rows), len(w))), member[rows]))
    report.record(ctx.run, report.SEARCH_FILE, report.search_table(
        round_, "embed", options, option_w, np.ones(len(options), bool), iterations=0,
        soft_count=np.nan, target_count=np.nan, grad_norm=np.nan, rank_corr=np.nan,
        evidence_rows=len(ctx.labeled) * (len(earlier) + 1), reward=current.mean,
        reward_se=current.se))
    return Selection(chosen, z[rows])


def paper_policy(ctx: RoundContext, r: float) -> Selection:
    """Mode paper: the per-sample SearchNet (a trunk of f's family) scores the union."""
    cfg = ctx.cfg
    t0 = time.perf_counter()
    searchnet, diag = search_round(ctx, r, ctx.fitter.fit_nets(f"search{ctx.round:03d}"))
    search_s = time.perf_counter() - t0
    ids, member = candidate_union(ctx)
    t1 = time.perf_counter()
    scores = score_rows(searchnet, ctx.data.train_x[ids], member, ids, cfg.budget,
                        ctx.normalize, cfg.score.batch_size, ctx.device)
    p = torch.softmax(scores.z, dim=0).numpy()
    chosen = top_b(ids, p, cfg.budget)
    rows = np.searchsorted(ids, chosen)
    add_search_seconds(ctx, search_s + time.perf_counter() - t1)
    names, round_ = column_names(ctx), ctx.round + 1
    report.record_weights(ctx.run, report.weights_table(round_, names, scores.weights[rows],
                                                            scores.columns[rows]))
    report.record(ctx.run, report.SEARCH_FILE, report.search_table(
        round_, "paper", names, scores.weights.mean(axis=0), np.ones(len(names), bool),
        **diag))
    return Selection(chosen, p[rows])


def autoal_policy(ctx: RoundContext) -> Selection:
    """The batch of the candidate a simulated acquisition on L supports (default reward).
    Adds the search's seconds to ctx.timings['search_s'] and records the round's diagnostics;
    `autoal.mode`/`reward` pick the search (docs/autoal.md)."""
    r = ctx.cfg.budget / (len(ctx.labeled) + len(ctx.unlabeled))
    a = ctx.cfg.autoal
    if a.mode == "embed" and a.reward in ("gain", "eer"):
        return gain_policy(ctx)
    mode = embed_policy if a.mode == "embed" else paper_policy
    return mode(ctx, r)

