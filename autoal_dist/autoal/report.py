"""AutoAL's per-round strategy weights: `autoal_weights.parquet` and `autoal_weights.png`.

The paper's Fig. 5 view: which candidates SearchNet trusts on the batch it queried,
and how that moves over rounds.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autoal_dist import store

WEIGHTS_FILE = "autoal_weights.parquet"
PLOT_FILE = "autoal_weights.png"
WEIGHTS_SCHEMA = pa.schema([
    ("round", pa.int32()), ("strategy", pa.string()), ("weight", pa.float64()),
    ("share", pa.float64()),
])


def weights_table(round_: int, names: list[str], weights: np.ndarray,
                  memberships: np.ndarray) -> pa.Table:
    """One row per column of the aggregate, over the queried batch's rows:
    weight = mean w_m(x), share = fraction of the batch that column also picked."""
    return pa.table({
        "round": np.full(len(names), round_, np.int32), "strategy": names,
        "weight": weights.mean(axis=0).astype(np.float64),
        "share": memberships.mean(axis=0).astype(np.float64),
    }, schema=WEIGHTS_SCHEMA)


def record_weights(run_dir: Path, table: pa.Table) -> Path:
    """Replace this round's rows in the run's table (a resumed round adds no duplicates)."""
    path = Path(run_dir) / WEIGHTS_FILE
    round_ = table.column("round")[0]
    old = pq.read_table(path, schema=WEIGHTS_SCHEMA) if path.exists() else WEIGHTS_SCHEMA.empty_table()
    kept = old.filter(pc.not_equal(old.column("round"), round_))
    store.write_table(path, pa.concat_tables([kept, table]).sort_by("round"))
    return path


def plot_autoal_weights(run_dir: Path) -> Path:
    """Mean SearchNet weight of each strategy per round, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pq.read_table(Path(run_dir) / WEIGHTS_FILE, schema=WEIGHTS_SCHEMA).to_pandas()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, part in rows.groupby("strategy", sort=False):
        ax.plot(part["round"], part["weight"], "o-", label=name)
    ax.set_xlabel("round (journal round of the queried batch)")
    ax.set_ylabel("mean SearchNet weight on the batch")
    ax.set_title("AutoAL strategy weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(run_dir) / PLOT_FILE
    store.write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path
