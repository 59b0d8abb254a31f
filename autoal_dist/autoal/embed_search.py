"""One round of the default search (`autoal.mode: embed`), on f's frozen embeddings.

1. f's embeddings of L (one eval pass over the labeled set: small next to U).
2. FitNet heads cross-fitted over K folds of L -> held-out probs, MC-dropout probs
   and loss for every row of L (`crossfit`).
3. Each candidate picks its top-q of L from those held-out outputs, q =
   max(min_picks, ceil(r |L|)); the loss column (when L has >= loss_head_min_rows
   rows) picks the top-q of an out-of-fold ridge prediction of the reward.
4. This round's evidence joins the earlier rounds' (`autoal_evidence.parquet`) and
   the strategy-level weights are fitted on all of it (`weights.fit_weights`).
The query then scores only the union of the candidates' picks on U.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from autoal_dist.autoal import report
from autoal_dist.autoal.crossfit import (
    HeadSettings,
    centered_ranks,
    crossfit,
    crossfit_predicted_loss,
    ridge_fit_predict,
)
from autoal_dist.autoal.memberships import candidate_picks, membership_matrix, pick_count
from autoal_dist.autoal.weights import Evidence, WeightFit, fit_weights
from autoal_dist.config import AutoALConfig
from autoal_dist.models.inference import compute_outputs
from autoal_dist.outputs import PoolOutputs
from autoal_dist.strategies import top_b

if TYPE_CHECKING:
    from autoal_dist.rounds import RoundContext

RIDGE_ALPHA = 10.0  # the loss column's L2 on standardized embeddings


@dataclass
class EmbedSearch:
    """What the query on U needs from the round's search."""

    fit: WeightFit
    active: np.ndarray  # [M'] the columns that take part this round
    loss_column: bool  # the loss column takes part this round
    emb: np.ndarray  # f's embeddings of L (for the loss column's predictor)
    reward: np.ndarray  # held-out reward of L's rows
    evidence_rows: int


def embeddings(ctx: RoundContext, ids: np.ndarray) -> np.ndarray:
    cfg = ctx.cfg
    return compute_outputs(ctx.model, ctx.data.train_x[ids], ids, ctx.normalize,
                           batch_size=cfg.score.batch_size, device=ctx.device).embeddings


def round_evidence(ctx: RoundContext, r: float, seed: int) -> tuple[Evidence, np.ndarray, bool]:
    """(this round's evidence, f's embeddings of L, loss column on)."""
    cfg, a = ctx.cfg, ctx.cfg.autoal
    ids = ctx.labeled
    emb = embeddings(ctx, ids)
    heads = HeadSettings(a.fitnet_pretrain_iters, a.head_weight_decay, cfg.train.dropout,
                         cfg.score.mc_samples)
    cf = crossfit(emb, ctx.data.train_y[ids], ctx.data.num_classes, a.folds, heads, seed)
    held_out = PoolOutputs(ids, cf.probs, emb, cf.mc_probs)
    q = pick_count(r, len(ids), a.min_picks)
    picks = candidate_picks(held_out, cfg.candidates, q, seed)
    reward = centered_ranks(cf.loss)
    loss_on = a.use_loss_head and len(ids) >= a.loss_head_min_rows
    if a.use_loss_head:
        predicted = (crossfit_predicted_loss(emb, reward, cf.fold, RIDGE_ALPHA) if loss_on
                     else None)
        picks.append(top_b(ids, predicted, q) if predicted is not None
                     else np.empty(0, np.int64))
    member = membership_matrix(ids, picks)
    return Evidence(ctx.round + 1, member, reward, q), emb, loss_on


FitWeights = Callable[[list[Evidence], np.ndarray, AutoALConfig], WeightFit]


def search(ctx: RoundContext, r: float, seed: int,
           fit_weights_with: FitWeights = fit_weights) -> EmbedSearch:
    """Gather this round's evidence, pool it with earlier rounds', fit the weights and
    record the evidence (keyed by the journal round of the batch being chosen)."""
    a = ctx.cfg.autoal
    current, emb, loss_on = round_evidence(ctx, r, seed)
    earlier = [Evidence(k, m, rw, q) for k, m, rw, q in
               report.earlier_evidence(ctx.run, current.round)]
    active = np.r_[np.ones(len(ctx.cfg.candidates), bool),
                   [loss_on] if a.use_loss_head else []].astype(bool)
    evidence = [*earlier, current]
    fit = fit_weights_with(evidence, active, a)
    report.record(ctx.run, report.EVIDENCE_FILE,
                  report.evidence_table(current.round, ctx.labeled, current.reward, current.q,
                                        current.memberships))
    return EmbedSearch(fit, active, loss_on, emb, current.reward,
                       sum(len(e.reward) for e in evidence))


def loss_column_on(ctx: RoundContext, s: EmbedSearch, ids: np.ndarray, q: int) -> np.ndarray:
    """The loss column on U's candidate rows: ridge fitted on all of L's held-out reward."""
    if not s.loss_column:
        return np.zeros((len(ids), 1), np.float32)
    predicted = ridge_fit_predict(s.emb, s.reward, embeddings(ctx, ids), RIDGE_ALPHA)
    return membership_matrix(ids, [top_b(ids, predicted, q)])
