"""The `albl` round policy: Active Learning by Learning as a round policy (bandit math in
bandit.py).

Each round: (1) the reward of this round's classifier, IW-ACC over every sample
ALBL queried so far, updates the weights once per draw of the previous batch;
(2) ONE `ctx.scorer.select_many` call ranks the pool for every candidate; (3) the
batch is filled by EXP4.P draws over the candidates and a uniform sampler.

The reward is the paper's (and libact's): IW-ACC of the newest classifier on the
queried samples, which it was trained on. A network that fits its training set
scores them near 1, so the signal is weak; and all draws of a batch share one
reward, so credit between experts moves only from round to round. Both are
properties of ALBL in this setting, kept as they are for a faithful baseline.

The bandit's state lives in `albl_state.json` in the run directory, one entry
per round, written atomically before the round's batch is journaled. A resumed
round drops entries from its own round on and recomputes them from the same
seed and the same (deterministically trained) classifier, so resume is exact.
"""
from __future__ import annotations

import time

import numpy as np

from autoal_dist.albl import bandit
from autoal_dist.albl.state import load_state, save_state
from autoal_dist.models.inference import predict
from autoal_dist.rounds import RoundContext
from autoal_dist.scoring.base import Selection
from autoal_dist.seeds import derive


def reward(ctx: RoundContext, entries: list[dict], horizon: int) -> float:
    """IW-ACC of this round's classifier over every sample ALBL queried so far."""
    ids = np.concatenate([np.asarray(e["ids"], np.int64) for e in entries])
    iw = np.concatenate([1.0 / np.asarray(e["q"], np.float64) for e in entries])
    pred = predict(ctx.model, ctx.data.train_x[ids], ctx.normalize,
                   ctx.cfg.train.eval_batch_size, ctx.device)
    return bandit.iw_accuracy(pred == ctx.data.train_y[ids], iw,
                              len(ctx.labeled) + len(ctx.unlabeled), horizon)


def albl_policy(ctx: RoundContext) -> Selection:
    """The round's batch by EXP4.P draws; selection scores are the query probabilities q."""
    cfg = ctx.cfg
    state = load_state(ctx.run, cfg.candidates, cfg.rounds * cfg.budget, ctx.round)
    seed = derive(cfg.seed, ctx.round, "select")
    # An expert needs at most 2b - 1 ranked ids: others take at most b - 1 of them.
    depth = min(len(ctx.unlabeled), 2 * cfg.budget - 1)
    sels = ctx.scorer.select_many(ctx.model, ctx.unlabeled, cfg.candidates, depth, seed,
                                  ctx.labeled, ctx.timings)
    t0 = time.perf_counter()
    entries, horizon, pmin = state["rounds"], state["horizon"], state["pmin"]
    log_w = np.zeros(len(state["experts"]))
    r = None
    if entries:
        last = entries[-1]
        r = reward(ctx, entries, horizon)
        log_w = bandit.update(np.asarray(last["log_weights"]), np.asarray(last["p"]),
                              np.asarray(last["ratios"]), r, pmin, state["delta"], horizon)
    p = bandit.probabilities(log_w, pmin)
    draws = bandit.draw_batch([*(sels[n].ids for n in cfg.candidates), None], ctx.unlabeled, p,
                              cfg.budget, np.random.default_rng(seed))
    entries.append({"round": ctx.round, "reward": r, "log_weights": log_w.tolist(),
                    "p": p.tolist(), "ids": draws.ids.tolist(), "q": draws.q.tolist(),
                    "experts": draws.experts.tolist(), "ratios": draws.ratios.tolist()})
    save_state(ctx.run, state)
    ctx.timings["select_s"] = ctx.timings.get("select_s", 0.0) + time.perf_counter() - t0
    return Selection(draws.ids, draws.q)

