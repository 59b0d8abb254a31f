"""The oracle: for diagnosis in the accuracy benchmark only, never a selection `run` can make.

It reads the pool's true labels and the test split, which no strategy may see. Each
round, every candidate's top-b batch on U (the round's one scoring pass) is added to L
and a head is refitted on the round's frozen embeddings (softmax regression on f's
embeddings, standardized by L's statistics: `autoal.crossfit.fit_head`), then scored on
the test split: the candidate's *true gain* that round. Two uses:

- `oracle_policy` queries, every round, the batch of the candidate with the largest true
  gain: its AUC is the room any strategy-level combiner of these candidates has.
- `with_oracle(policy)` runs AutoAL's policy unchanged, then writes the true gains of the
  options the search ranked (every candidate and their even mix) next to the search's own
  estimates in `autoal_search.parquet` (`oracle_gain`, and `oracle_corr`, the round's
  Spearman correlation between the two): the reward judged round by round.

The benchmark installs these in its own worker processes by replacing the campaign
module's `policy_for` (`install`); `autoal_dist` does not import this file and its policy
registry never holds it (tests/test_oracle.py checks that `run` refuses it).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from scipy.stats import spearmanr

from autoal_dist.autoal import report
from autoal_dist.autoal.crossfit import HeadSettings, fit_head, standardize
from autoal_dist.autoal.gain import MIX, interleave
from autoal_dist.models.inference import compute_outputs
from autoal_dist.rounds import Policy, RoundContext
from autoal_dist.scoring.base import Selection
from autoal_dist.seeds import derive

ORACLE = "oracle"  # the benchmark's label for the oracle's campaigns


def candidate_batches(ctx: RoundContext) -> dict[str, np.ndarray]:
    """Each candidate's top-b on U, and their even mix (the same pass the policies use)."""
    cfg = ctx.cfg
    sels = ctx.scorer.select_many(ctx.model, ctx.unlabeled, cfg.candidates, cfg.budget,
                                  derive(cfg.seed, ctx.round, "select"), ctx.labeled, {})
    batches = {n: sels[n].ids for n in cfg.candidates}
    batches[MIX] = interleave(list(batches.values()), np.ones(len(batches)), cfg.budget)
    return batches


def true_gains(ctx: RoundContext, batches: dict[str, np.ndarray]) -> dict[str, float]:
    """Test accuracy of a head on L + batch, minus the head on L alone, per batch."""
    cfg, data = ctx.cfg, ctx.data
    rows = np.unique(np.concatenate([ctx.labeled, *batches.values()]))

    def embed(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return compute_outputs(ctx.model, x, ids, ctx.normalize, batch_size=cfg.score.batch_size,
                               device=ctx.device).embeddings

    emb = embed(data.train_x[rows], rows)
    test = embed(data.test_x, np.arange(len(data.test_y)))
    at = {int(i): k for k, i in enumerate(rows)}
    heads = HeadSettings(cfg.autoal.fitnet_pretrain_iters, cfg.autoal.head_weight_decay,
                         cfg.train.dropout, cfg.score.mc_samples)
    labeled = np.array([at[int(i)] for i in ctx.labeled])
    e_all, e_test = standardize(emb[labeled], emb, test)[1:]
    y_all = torch.from_numpy(data.train_y[rows].astype(np.int64))
    y_test = torch.from_numpy(data.test_y.astype(np.int64))

    def accuracy(train_rows: np.ndarray) -> float:
        head = fit_head(e_all[train_rows], y_all[train_rows], data.num_classes, heads)
        with torch.no_grad():
            return float((head(e_test).argmax(1) == y_test).float().mean())

    before = accuracy(labeled)
    return {name: accuracy(np.r_[labeled, [at[int(i)] for i in ids]]) - before
            for name, ids in batches.items()}


def oracle_policy(ctx: RoundContext) -> Selection:
    """The batch of the candidate whose true gain is largest (ties: the first candidate)."""
    batches = candidate_batches(ctx)
    gains = true_gains(ctx, {n: batches[n] for n in ctx.cfg.candidates})
    best = max(ctx.cfg.candidates, key=lambda n: gains[n])
    ids = np.sort(batches[best])
    return Selection(ids, np.full(len(ids), gains[best]))


def with_oracle(policy: Policy) -> Policy:
    """`policy` (AutoAL), then its round's search rows annotated with the true gains."""

    def annotated(ctx: RoundContext) -> Selection:
        sel = policy(ctx)
        round_ = ctx.round + 1
        table = report.read_rounds(ctx.run, report.SEARCH_FILE, report.SEARCH_SCHEMA)
        rows = table.filter(pc.equal(table.column("round"), round_))
        names = rows.column("strategy").to_pylist()
        gains = true_gains(ctx, {n: b for n, b in candidate_batches(ctx).items() if n in names})
        oracle = np.array([gains.get(n, np.nan) for n in names])
        reward = rows.column("reward").to_numpy()
        ok = np.isfinite(oracle) & np.isfinite(reward)
        corr = (spearmanr(reward[ok], oracle[ok]).statistic
                if ok.sum() > 2 and np.ptp(reward[ok]) > 0 and np.ptp(oracle[ok]) > 0
                else np.nan)
        rows = rows.set_column(rows.schema.get_field_index("oracle_gain"), "oracle_gain",
                               pa.array(oracle, pa.float64()))
        rows = rows.set_column(rows.schema.get_field_index("oracle_corr"), "oracle_corr",
                               pa.array(np.full(len(names), corr), pa.float64()))
        report.record(ctx.run, report.SEARCH_FILE, rows)
        return sel

    return annotated


def install(label: str) -> None:
    """In this (benchmark worker) process: campaigns labelled `oracle` query with the oracle,
    `autoal` campaigns record the oracle's gains beside the search's estimates."""
    from autoal_dist import campaign
    from autoal_dist.policies import policy_for

    if label == ORACLE:
        campaign.policy_for = lambda name: oracle_policy  # type: ignore[assignment]
    elif label.startswith("autoal") and label != "autoal-paper":
        campaign.policy_for = lambda name: with_oracle(policy_for(name))  # type: ignore
    else:
        campaign.policy_for = policy_for  # type: ignore[assignment]
