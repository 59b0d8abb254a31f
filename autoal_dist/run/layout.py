"""What a run directory holds: file names and schemas (the run object reads and writes them).

    config.json                the campaign's config, dataset fingerprint, class count, mode
    pool.parquet               id, label, split of every sample (immutable)
    journal/round_XXX.parquet  the batch queried in round XXX (round 0: the initial set)
    metrics.parquet            one row per evaluated round (METRICS_SCHEMA)
    curves.png, summary.md     the report (report.py)
    labels/                    oracle files: the labels people gave (labeling/labels.py)
    albl_state.json            ALBL's bandit state (albl/state.py)
    autoal_*.parquet/.png      AutoAL's weights, search diagnostics and evidence (autoal/report.py)
    train/                     Ray Train checkpoints of the round being trained
    .lock                      the run lock (dirlock.py)

The labeled set is *derived* from the journal: nothing else holds it, so nothing can get
out of sync with it. A round policy's own files are named by the policy, and checked by it
(`policies.POLICY_FILES`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from autoal_dist.remote import TRAIN_DIR

CONFIG_FILE = "config.json"
POOL_FILE = "pool.parquet"
JOURNAL_DIR = "journal"
METRICS_FILE = "metrics.parquet"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.md"
TRAIN = TRAIN_DIR  # written by Ray Train itself, never staged (remote.py)

# config.json's execution mode (execution.py); run directories from before it was kept ran
# on Ray unless --local was given.
MODE_KEY, DEFAULT_MODE = "mode", "ray"

JOURNAL_SCHEMA = pa.schema([
    ("id", pa.int64()), ("round", pa.int32()), ("strategy", pa.string()), ("score", pa.float64()),
])
METRICS_SCHEMA = pa.schema([
    ("round", pa.int32()), ("n_labeled", pa.int64()), ("accuracy", pa.float64()),
    ("strategy", pa.string()), ("train_s", pa.float64()), ("eval_s", pa.float64()),
    ("score_s", pa.float64()), ("search_s", pa.float64()), ("select_s", pa.float64()),
])
TIMINGS = ("train_s", "eval_s", "score_s", "search_s", "select_s")


def round_file(sub: str, round_: int) -> str:
    """`sub/round_XXX.parquet`: a per-round file (journal/, labels/)."""
    return f"{sub}/round_{round_:03d}.parquet"


def pool_table(train_y: np.ndarray, test_y: np.ndarray) -> pa.Table:
    """pool.parquet: ids 0..N-1 are the train pool, N..N+M-1 the test split."""
    n, m = len(train_y), len(test_y)
    return pa.table({
        "id": pa.array(np.arange(n + m, dtype=np.int64)),
        "label": pa.array(np.concatenate([train_y, test_y]).astype(np.int64)),
        "split": pa.array(["train"] * n + ["test"] * m),
    })


def metrics_row(round_: int, n_labeled: int, accuracy: float, strategy: str,
                timings: dict[str, float]) -> dict:
    """One row of metrics.parquet; `timings` holds TIMINGS (absent ones are 0)."""
    return {"round": round_, "n_labeled": n_labeled, "accuracy": accuracy, "strategy": strategy,
            **{k: float(timings.get(k, 0.0)) for k in TIMINGS}}
