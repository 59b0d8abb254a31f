"""`POLICIES["autoal"]`: search on L, then query U (AUTOAL.md step 7).

The candidates' selections on U come from ONE `ctx.scorer.select_many` call (one
forward pass, sharded under Ray); SearchNet then only scores the union of their
picks, so only samples some candidate picked can be queried.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from autoal_dist.autoal.memberships import union_memberships
from autoal_dist.autoal.report import plot_autoal_weights, record_weights, weights_table
from autoal_dist.autoal.search import score_rows, search_round
from autoal_dist.policies import POLICIES, RoundContext
from autoal_dist.scoring import Selection
from autoal_dist.seeds import derive
from autoal_dist.strategies import top_b

LOSS_HEAD = "loss_head"  # the loss head's column in autoal_weights.parquet


def autoal_policy(ctx: RoundContext) -> Selection:
    """The b samples of largest p on U (ties: smallest id); adds the search's seconds to
    ctx.timings['search_s'] and records the batch's strategy weights."""
    cfg = ctx.cfg
    r = cfg.budget / (len(ctx.labeled) + len(ctx.unlabeled))
    t0 = time.perf_counter()
    searchnet = search_round(ctx, r)
    search_s = time.perf_counter() - t0
    sels = ctx.scorer.select_many(ctx.model, ctx.unlabeled, cfg.candidates, cfg.budget,
                                  derive(cfg.seed, ctx.round, "select"), ctx.labeled, ctx.timings)
    t1 = time.perf_counter()
    ids, memberships = union_memberships([sels[n].ids for n in cfg.candidates])
    scores = score_rows(searchnet, ctx.data.train_x[ids], memberships, ids, cfg.budget,
                        ctx.normalize, cfg.score.batch_size, ctx.device)
    p = torch.softmax(scores.z, dim=0).numpy()
    chosen = top_b(ids, p, cfg.budget)
    rows = np.searchsorted(ids, chosen)
    ctx.timings["search_s"] = ctx.timings.get("search_s", 0.0) + search_s + time.perf_counter() - t1
    names = [*cfg.candidates, *([LOSS_HEAD] if cfg.autoal.use_loss_head else [])]
    # journal round of this batch (campaign round r queries journal round r + 1)
    record_weights(ctx.run_dir, weights_table(ctx.round + 1, names, scores.weights[rows],
                                              scores.columns[rows]))
    plot_autoal_weights(ctx.run_dir)
    return Selection(chosen, p[rows])


POLICIES["autoal"] = autoal_policy
