"""AutoAL's per-round files in the run directory.

- `autoal_weights.parquet`: which candidates SearchNet trusted on the batch it
  queried (mean weight over the batch, and the share of the batch each picked);
- `autoal_search.parquet`: did the search learn this round: iterations run, soft
  count against its target, final weight per candidate, gradient norm, and the
  rank correlation of the aggregate with the held-out reward;
- `autoal_evidence.parquet` (mode embed): each round's search set (0/1
  memberships and held-out reward per row), pooled by later rounds;
- `autoal_weights.png`: the weights per round and, below, what they were fitted on.

Every table is keyed by round and replaced round-wise, so a resumed round adds no
duplicates (the search is deterministic: a redone round writes the same rows).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from autoal_dist.errors import first_line

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
        raise ValueError(f"not a readable parquet file "
                         f"({first_line(e)})") from None
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
                  ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(round, reward, reward_se) per option of every earlier round with the same options, in
    order: the gain reward's evidence pooled over rounds."""
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
        out.append((k, reward, part.column("reward_se").to_numpy()))
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


MARKERS = "osD^vP*Xh"
LINESTYLES = ("-", "--", "-.", ":")


def weight_label(search: Any) -> str:
    """The weight axis' name for the run's search (the `mode` of its last round)."""
    if not len(search):
        return "mean weight over the queried batch"
    last = search[search["round"] == search["round"].max()]
    if last["mode"].iloc[0] == "paper":
        return "SearchNet weight\n(mean over the pool's rows)"
    if last["reward"].notna().any():
        return "candidate weight\n(softmax of estimated gain)"
    return "candidate weight\n(fitted on held-out loss ranks)"


def weights_figure(search: Any, weights: Any) -> Any:
    """autoal_weights.png's figure from the search and weights tables (pandas): one panel of
    weights per round and, below, what they were fitted on (the simulated gains, or the soft
    count against its target); a panel whose data is all NaN is left out. Columns inactive in
    every round (the loss column below `loss_head_min_rows`) are left out and named in the
    title; the lines are told apart by marker, line style and a small offset per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = search if len(search) else weights
    if "active" in rows:
        rows = rows.assign(weight=rows["weight"].where(rows["active"]))  # inactive: no point
    names = list(dict.fromkeys(rows["strategy"]))
    shown = [n for n in names if rows.loc[rows["strategy"] == n, "weight"].notna().any()]
    hidden = [n for n in names if n not in shown]
    span = max(float(rows["round"].max() - rows["round"].min()), 1.0) if len(rows) else 1.0
    style = {n: (plt.get_cmap("tab10")(i % 10), MARKERS[i % len(MARKERS)],
                 LINESTYLES[i % len(LINESTYLES)], 0.02 * span * (i - (len(shown) - 1) / 2))
             for i, n in enumerate(shown)}  # the offset: a marker's width, whatever the rounds
    gains = len(search) and search["reward"].notna().any()
    counts = len(search) and not gains and search["soft_count"].notna().any()
    panels = 2 if gains or counts else 1
    fig, axes = plt.subplots(panels, 1, figsize=(8.5, 3.6 + 2.9 * (panels - 1)), sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    for name in shown:
        color, marker, ls, dx = style[name]
        part = rows[rows["strategy"] == name]
        ax.plot(part["round"] + dx, part["weight"], marker=marker, ls=ls, color=color, ms=6,
                label=name)
    if gains:  # combine best: ring the candidate whose whole batch was taken
        taken = weights[weights["share"] >= 1.0].merge(search[["round", "strategy", "weight"]],
                                                       on=["round", "strategy"],
                                                       suffixes=("_batch", ""))
        taken = taken[taken["strategy"].isin(shown)]
        ax.plot(taken["round"] + [style[n][3] for n in taken["strategy"]], taken["weight"],
                "o", ms=13, mfc="none", mec="k", label="its batch\nwas taken")
    title = "How much AutoAL trusts each candidate" + (
        " and the loss column (loss_head)" if "loss_head" in shown else "") + ", per round"
    if hidden:
        title += f"\n(not shown: {', '.join(hidden)}, inactive in every round)"
    ax.set_title(title, fontsize="medium")
    ax.set_ylabel(weight_label(search))
    ax.margins(y=0.12)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if gains:
        ax2 = axes[1, 0]
        for name, part in search.groupby("strategy", sort=False):
            if name not in style or part["reward"].isna().all():
                continue
            color, marker, ls, dx = style[name]
            ax2.errorbar(part["round"] + dx, part["reward"], yerr=part["reward_se"],
                         marker=marker, ls=ls, color=color, ms=5, capsize=2, label=name)
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_title("What the weights follow: each candidate's estimated gain (reward eer: "
                      "in a head's confidence on U;\ngain: simulated on L, over random "
                      "picks) ± standard error", fontsize="medium")
        ax2.set_ylabel("estimated gain")
        ax2.grid(alpha=0.3)
    elif counts:
        per_round = search.groupby("round").first()
        ax2 = axes[1, 0]
        ax2.plot(per_round.index, per_round["target_count"], "k--", lw=1, label="target q")
        ax2.plot(per_round.index, per_round["soft_count"], "o-", ms=5, alpha=0.85,
                 label="soft count")
        ax2.fill_between(per_round.index, 0.8 * per_round["target_count"],
                         1.2 * per_round["target_count"], color="k", alpha=0.08,
                         label="target ±20%")
        ax2.set_title("Did the search fit? Search rows its relaxed selection takes (soft "
                      "count)\nagainst the number it should take (target q)", fontsize="medium")
        ax2.set_ylabel("search rows selected")
        ax2.margins(y=0.12)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for a in axes[:, 0]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("round (journal round of the queried batch)")
    fig.tight_layout()
    return fig


def plot_autoal_weights(run: Run) -> str:
    """Draw `weights_figure` of the run's tables into autoal_weights.png; returns its name."""
    import matplotlib.pyplot as plt

    search = read_rounds(run, SEARCH_FILE, SEARCH_SCHEMA).to_pandas()
    weights = read_rounds(run, WEIGHTS_FILE, WEIGHTS_SCHEMA).to_pandas()
    fig = weights_figure(search, weights)
    run.write_with(PLOT_FILE, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return run.where(PLOT_FILE)
