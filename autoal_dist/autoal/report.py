"""AutoAL's per-round files in the run directory.

- `autoal_weights.parquet`: which candidates SearchNet trusted on the batch it
  queried (mean weight over the batch, and the share of the batch each picked);
- `autoal_search.parquet`: did the search learn this round: iterations run, soft
  count against its target, final weight per candidate, gradient norm, and the
  rank correlation of the aggregate with the held-out reward;
- `autoal_evidence.parquet` (mode embed): each round's search set (0/1
  memberships and held-out reward per row), pooled by later rounds;
- `autoal_weights.png`: weights and soft count per round.

Every table is keyed by round and replaced round-wise, so a resumed round adds no
duplicates (the search is deterministic: a redone round writes the same rows).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from autoal_dist.run import Run

WEIGHTS_FILE = "autoal_weights.parquet"
SEARCH_FILE = "autoal_search.parquet"
EVIDENCE_FILE = "autoal_evidence.parquet"
PLOT_FILE = "autoal_weights.png"

WEIGHTS_SCHEMA = pa.schema([
    ("round", pa.int32()), ("strategy", pa.string()), ("weight", pa.float64()),
    ("share", pa.float64()),
])
SEARCH_SCHEMA = pa.schema([
    ("round", pa.int32()), ("mode", pa.string()), ("strategy", pa.string()),
    ("weight", pa.float64()), ("active", pa.bool_()), ("iterations", pa.int64()),
    ("soft_count", pa.float64()), ("target_count", pa.float64()), ("grad_norm", pa.float64()),
    ("rank_corr", pa.float64()), ("evidence_rows", pa.int64()),
    # reward: gain: this round's simulated gain of the row's option over random picks and its
    # standard error (NaN for the loss-rank reward); oracle_*: filled only by the accuracy
    # benchmark (the true gain of the option's batch on the test split, and the round's
    # Spearman correlation between the two rankings)
    ("reward", pa.float64()), ("reward_se", pa.float64()), ("oracle_gain", pa.float64()),
    ("oracle_corr", pa.float64()),
])
EVIDENCE_SCHEMA = pa.schema([
    ("round", pa.int32()), ("id", pa.int64()), ("reward", pa.float64()), ("q", pa.int64()),
    ("memberships", pa.list_(pa.float32())),
])


def weights_table(round_: int, names: list[str], weights: np.ndarray,
                  memberships: np.ndarray) -> pa.Table:
    """One row per column of the aggregate, over the queried batch's rows:
    weight = mean w_m(x), share = fraction of the batch that column also picked."""
    return pa.table({
        "round": np.full(len(names), round_, np.int32), "strategy": names,
        "weight": weights.mean(axis=0).astype(np.float64),
        "share": (memberships > 0).mean(axis=0).astype(np.float64),
    }, schema=WEIGHTS_SCHEMA)


def search_table(round_: int, mode: str, names: list[str], weights: np.ndarray,
                 active: np.ndarray, **round_values: Any) -> pa.Table:
    """One row per column: its final weight, plus the round's search diagnostics
    (iterations, soft_count, target_count, grad_norm, rank_corr, evidence_rows)."""
    n = len(names)
    cols = {"round": np.full(n, round_, np.int32), "mode": [mode] * n, "strategy": names,
            "weight": np.asarray(weights, np.float64), "active": np.asarray(active, bool)}
    per_row = ("reward", "reward_se", "oracle_gain", "oracle_corr")  # scalars or [n]
    cols.update({k: [v] * n for k, v in round_values.items() if k not in per_row})
    for name in per_row:
        value = round_values.get(name, np.nan)
        cols[name] = np.broadcast_to(np.asarray(value, np.float64), (n,)).copy()
    return pa.table(cols, schema=SEARCH_SCHEMA)


def evidence_table(round_: int, ids: np.ndarray, reward: np.ndarray, q: int,
                   memberships: np.ndarray) -> pa.Table:
    return pa.table({
        "round": np.full(len(ids), round_, np.int32), "id": np.asarray(ids, np.int64),
        "reward": np.asarray(reward, np.float64), "q": np.full(len(ids), q, np.int64),
        "memberships": list(np.asarray(memberships, np.float32)),
    }, schema=EVIDENCE_SCHEMA)


def check_table(run: Run, name: str) -> None:
    """A resumed round reads these tables (`policies.POLICY_FILES`): ValueError unless `name`
    is readable parquet with a round column."""
    try:
        names = run.read_table(name).schema.names
    except Exception as e:  # noqa: BLE001 - truncated/corrupt parquet raises by cause
        text = str(e).strip()
        raise ValueError(f"not a readable parquet file "
                         f"({text.splitlines()[0] if text else type(e).__name__})") from None
    if "round" not in names:
        raise ValueError(f"no column 'round' (columns: {', '.join(names)})")


FILES = {WEIGHTS_FILE: check_table, SEARCH_FILE: check_table, EVIDENCE_FILE: check_table}


def read_rounds(run: Run, name: str, schema: pa.Schema) -> pa.Table:
    return run.read_table(name, schema=schema) if run.exists(name) else schema.empty_table()


def record(run: Run, name: str, table: pa.Table) -> None:
    """Replace this round's rows of the run's table `name` with `table`."""
    old = read_rounds(run, name, table.schema)
    kept = old.filter(pc.not_equal(old.column("round"), table.column("round")[0]))
    run.write_table(name, pa.concat_tables([kept, table]).sort_by("round"))


def record_weights(run: Run, table: pa.Table) -> None:
    record(run, WEIGHTS_FILE, table)


def earlier_gains(run: Run, round_: int, options: list[str]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(reward, reward_se) per option of every earlier round with the same options, in order:
    the gain reward's evidence pooled over rounds."""
    t = read_rounds(run, SEARCH_FILE, SEARCH_SCHEMA)
    t = t.filter(pc.less(t.column("round"), round_))
    out = []
    for k in sorted(set(t.column("round").to_pylist())):
        part = t.filter(pc.equal(t.column("round"), k))
        if part.column("strategy").to_pylist() != options:
            continue
        reward = part.column("reward").to_numpy()
        if np.isnan(reward).any():
            continue
        out.append((reward, part.column("reward_se").to_numpy()))
    return out


def earlier_evidence(run: Run, round_: int) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
    """(round, memberships, reward, q) of every recorded round before `round_`, in order."""
    t = read_rounds(run, EVIDENCE_FILE, EVIDENCE_SCHEMA)
    t = t.filter(pc.less(t.column("round"), round_))
    out = []
    for k in sorted(set(t.column("round").to_pylist())):
        part = t.filter(pc.equal(t.column("round"), k))
        member = np.stack(part.column("memberships").to_numpy(zero_copy_only=False))
        out.append((k, member.astype(np.float32), part.column("reward").to_numpy(),
                    int(part.column("q")[0].as_py())))
    return out


def plot_autoal_weights(run: Run) -> str:
    """Per round: each column's weight (the search's final weights when recorded, else
    the mean over the batch) and, below, what the weights were fitted on: the simulated
    gains (reward `gain`) or the soft count against its target (the relaxed searches)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    search = read_rounds(run, SEARCH_FILE, SEARCH_SCHEMA).to_pandas()
    rows = search if len(search) else read_rounds(run, WEIGHTS_FILE,
                                                  WEIGHTS_SCHEMA).to_pandas()
    gains = len(search) and search["reward"].notna().any()
    fig, axes = plt.subplots(2 if len(search) else 1, 1, figsize=(6.5, 6 if len(search) else 4),
                             sharex=True, squeeze=False)
    ax = axes[0, 0]
    for name, part in rows.groupby("strategy", sort=False):
        ax.plot(part["round"], part["weight"], "o-", label=name)
    if gains:  # combine best: ring the candidate whose whole batch was taken
        taken = read_rounds(run, WEIGHTS_FILE, WEIGHTS_SCHEMA).to_pandas()
        taken = taken[taken["share"] >= 1.0].merge(search[["round", "strategy", "weight"]],
                                                   on=["round", "strategy"],
                                                   suffixes=("_batch", ""))
        ax.plot(taken["round"], taken["weight"], "o", ms=11, mfc="none", mec="k",
                label="batch taken")
    ax.set_ylabel("weight")
    ax.set_title("AutoAL: weight of each option per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    if gains:
        ax2 = axes[1, 0]
        for name, part in search.groupby("strategy", sort=False):
            ax2.errorbar(part["round"], part["reward"], yerr=part["reward_se"], fmt="o-",
                         ms=3, capsize=2, label=name)
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_ylabel("simulated gain over random")
        ax2.grid(alpha=0.3)
    elif len(search):
        per_round = search.groupby("round").first()
        ax2 = axes[1, 0]
        ax2.plot(per_round.index, per_round["soft_count"], "o-", label="soft count")
        ax2.plot(per_round.index, per_round["target_count"], "k--", label="target (picks)")
        ax2.fill_between(per_round.index, 0.8 * per_round["target_count"],
                         1.2 * per_round["target_count"], color="k", alpha=0.08, label="±20%")
        ax2.set_ylabel("rows")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize="small")
    axes[-1, 0].set_xlabel("round (journal round of the queried batch)")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    run.write_with(PLOT_FILE, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return run.where(PLOT_FILE)
