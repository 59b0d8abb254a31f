"""The run directory: every file it holds, how it is created, and its metrics rows.

    config.json                the campaign's config, dataset fingerprint, class count, mode
    pool.parquet               id, label, split of every sample (immutable)
    journal/round_XXX.parquet  the batch queried in round XXX (round 0: the initial set)
    metrics.parquet            one row per evaluated round (METRICS_SCHEMA)
    curves.png, summary.md     the report (report.py)
    labels/                    oracle files: the labels people gave (labeling/)
    albl_state.json            ALBL's bandit state
    autoal_*.parquet/.png      AutoAL's weights, search diagnostics and evidence
    train/                     Ray Train checkpoints of the round being trained

The labeled set is *derived* from the journal: nothing else holds it, so nothing can get
out of sync with it. Every file is written atomically (store.py).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist import remote, store

CONFIG_FILE = "config.json"
POOL_FILE = "pool.parquet"
JOURNAL_DIR = "journal"
METRICS_FILE = "metrics.parquet"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.md"
LABELS_DIR = "labels"
LABEL_HISTORY_FILE = "history.parquet"  # in labels/: each recorded label a correction replaced
ALBL_STATE_FILE = "albl_state.json"
AUTOAL_WEIGHTS_FILE = "autoal_weights.parquet"
AUTOAL_SEARCH_FILE = "autoal_search.parquet"
AUTOAL_EVIDENCE_FILE = "autoal_evidence.parquet"
AUTOAL_PLOT_FILE = "autoal_weights.png"
TRAIN_DIR = remote.TRAIN_DIR  # written by Ray Train itself, never staged (remote.py)

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


class RunDirError(ValueError):
    """A run directory that cannot be used as asked; the message is one line."""


# ---- creation and config.json ----------------------------------------------------------

def create(run_dir: Path, meta: dict[str, Any], data: Any) -> None:
    """A new run directory: config.json first (it makes the directory resumable), then
    pool.parquet (rewritten by `ensure_pool` if a crash came in between)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_json(run_dir / CONFIG_FILE, meta)
    ensure_pool(run_dir, data)


def ensure_pool(run_dir: Path, data: Any) -> None:
    if not (run_dir / POOL_FILE).is_file():
        store.write_table(run_dir / POOL_FILE, pool_table(data.train_y, data.test_y))


def new_meta(config: dict[str, Any], data: Any, version: str,
             mode: str | None = None) -> dict[str, Any]:
    """config.json's content: the config, what proves the data is the same, the mode."""
    meta = {"config": config, "dataset_fingerprint": dataset_fingerprint(data),
            "num_classes": data.num_classes, "autoal_dist_version": version}
    if mode is not None:
        meta[MODE_KEY] = mode
    return meta


def read_meta(run_dir: Path, flag: str) -> dict[str, Any]:
    """The run directory's config.json: stored config, dataset fingerprint, class count.
    A missing, unreadable or damaged one is a RunDirError (one line naming it)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{flag}: {remote.location_of(run_dir)} holds no {CONFIG_FILE}; not a "
                          "campaign run directory")
    where = remote.location_of(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: truncated or overwritten
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunDirError(f"{flag}: {where} is not readable JSON ({reason}); the run "
                          "directory is damaged") from None
    for key, typ in (("config", dict), ("dataset_fingerprint", str), ("num_classes", int)):
        if not isinstance(meta, dict) or not isinstance(meta.get(key), typ):
            raise RunDirError(f"{flag}: {where} has no valid {key!r}; not the config.json "
                              "autoal-dist writes (damaged or replaced)")
    keep_stored_defaults(meta["config"])
    return meta


def keep_stored_defaults(config: dict[str, Any]) -> None:
    """A run keeps the behaviour it started with when a default changes later: a config
    stored before `autoal.reward` existed ran the loss-rank search (the gain reward became the
    default in #25), so a resumed campaign goes on with it instead of switching mid-way."""
    autoal = config.get("autoal")
    if isinstance(autoal, dict) and "reward" not in autoal:
        autoal["reward"] = "loss_rank"


def require_run(location: str, flag: str) -> None:
    """RunDirError unless `location` (a path or URI) holds a config.json, checked without
    writing anything: before a command locks a directory (the lock creates `.lock`), a
    directory that is no run at all is refused as it is."""
    if remote.is_uri(location):
        from pyarrow import fs as pafs

        try:
            d = remote.RemoteDir.open(location)
            found = d.fs.get_file_info(f"{d.root}/{CONFIG_FILE}").type == pafs.FileType.File
        except remote.RemoteError as e:
            raise remote.RemoteError(f"{flag}: {e}") from None
        except OSError as e:
            text = str(e).strip()
            raise RunDirError(f"{flag}: cannot read {location}: "
                              f"{text.splitlines()[0] if text else type(e).__name__}") from None
    else:
        found = (Path(location) / CONFIG_FILE).is_file()
    if not found:
        raise RunDirError(f"{flag}: {location} holds no {CONFIG_FILE}; not a campaign run "
                          "directory")


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    store.write_json(Path(run_dir) / CONFIG_FILE, meta)


def dataset_fingerprint(data) -> str:
    """A hash of the dataset's arrays: a resumed campaign must see the same data.
    `Dataset.fingerprint()`: the same hash as before it moved there, and a stored pool's
    is the one recorded when it was written (no pass over the pool)."""
    return data.fingerprint()


_TRAIN_RUN = re.compile(r"^round\d{3,}")  # training.ray_job's run names: round003, round003-...


def remove_stale_training(run_dir: Path) -> list[str]:
    """Delete the Ray Train runs a killed process left in `train/` (a finished fit deletes its
    own; under the run lock nothing else is training), here and, for a staged run, in the
    remote copy's `train/`. Returns what was removed. A resumed round starts its fit afresh
    (same seed, same result); a stale checkpoint directory would only take space, or be
    mistaken by Ray Train for the new run's."""
    import shutil

    removed = []
    local = Path(run_dir) / TRAIN_DIR
    if local.is_dir():
        for p in sorted(local.iterdir()):
            if _TRAIN_RUN.match(p.name):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(remote.location_of(p))
    uri = remote.location_of(local)
    if remote.is_uri(uri):
        from pyarrow import fs as pafs

        d = remote.RemoteDir.open(uri)
        for info in d.fs.get_file_info(pafs.FileSelector(d.root, allow_not_found=True)):
            if info.type == pafs.FileType.Directory and _TRAIN_RUN.match(info.base_name):
                d.fs.delete_dir(info.path)
                removed.append(remote.join(uri, info.base_name))
    return removed


def train_location(run_dir: Path, workers: int) -> str:
    """Ray Train's storage for a run: its URI when staged and Train runs worker processes
    (they may sit on other nodes), else the local `train/` directory (local mode trains
    in this process, and writes its checkpoints there directly)."""
    local = Path(run_dir) / TRAIN_DIR
    return remote.location_of(local) if workers > 0 else str(local)


# ---- metrics ----------------------------------------------------------------------------

def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    return pq.read_table(path).to_pylist() if path.exists() else []


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    store.write_table(Path(run_dir) / METRICS_FILE,
                      pa.Table.from_pylist(rows, schema=METRICS_SCHEMA))


def metrics_row(round_: int, n_labeled: int, accuracy: float, strategy: str,
                timings: dict[str, float]) -> dict[str, Any]:
    """One row of metrics.parquet; `timings` holds train_s, eval_s, score_s, search_s,
    select_s (absent ones are 0)."""
    return {"round": round_, "n_labeled": n_labeled, "accuracy": accuracy, "strategy": strategy,
            **{k: float(timings.get(k, 0.0))
               for k in ("train_s", "eval_s", "score_s", "search_s", "select_s")}}


def log_round(row: dict[str, Any], rounds: int) -> None:
    """The per-round line on stderr."""
    print(f"round {row['round']:>3}/{rounds}  labeled {row['n_labeled']:>6}  "
          f"acc {row['accuracy']:.4f}  train {row['train_s']:.1f}s  score {row['score_s']:.1f}s  "
          f"search {row['search_s']:.1f}s  select {row['select_s']:.2f}s",
          file=sys.stderr, flush=True)


# ---- pool -------------------------------------------------------------------

def pool_table(train_y: np.ndarray, test_y: np.ndarray) -> pa.Table:
    """ids 0..N-1 are the train pool, N..N+M-1 the test split."""
    n, m = len(train_y), len(test_y)
    return pa.table({
        "id": pa.array(np.arange(n + m, dtype=np.int64)),
        "label": pa.array(np.concatenate([train_y, test_y]).astype(np.int64)),
        "split": pa.array(["train"] * n + ["test"] * m),
    })


def read_pool(run_dir: Path) -> pa.Table:
    return pq.read_table(Path(run_dir) / POOL_FILE)


# ---- journal ----------------------------------------------------------------

def journal_path(run_dir: Path, round_: int) -> Path:
    return store.round_path(Path(run_dir) / JOURNAL_DIR, round_)


def write_round(run_dir: Path, round_: int, ids: np.ndarray, strategy: str,
                scores: np.ndarray | None = None) -> None:
    """Record the batch queried in `round_` (round 0 = the initial labeled set)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"round {round_}: duplicate ids in the batch")
    scores = np.full(len(ids), np.nan) if scores is None else np.asarray(scores, np.float64)
    table = pa.table({
        "id": ids, "round": np.full(len(ids), round_, np.int32),
        "strategy": [strategy] * len(ids), "score": scores,
    }, schema=JOURNAL_SCHEMA)
    store.write_table(journal_path(run_dir, round_), table)


def journal_rounds(run_dir: Path) -> list[int]:
    """Completed rounds, ascending. Temp files of an interrupted write are ignored."""
    return store.rounds_in(Path(run_dir) / JOURNAL_DIR)


def read_journal(run_dir: Path) -> pa.Table:
    rounds = journal_rounds(run_dir)
    if not rounds:
        return JOURNAL_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(journal_path(run_dir, r), schema=JOURNAL_SCHEMA)
                             for r in rounds])


def labeled_ids(run_dir: Path) -> np.ndarray:
    """The labeled set, derived from the journal; a repeated id means corruption."""
    ids = read_journal(run_dir).column("id").to_numpy()
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{run_dir}: journal labels some ids twice")
    return np.sort(ids)
