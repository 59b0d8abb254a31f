"""Campaign state on disk: pool.parquet (immutable), journal/round_XXX.parquet, metrics.

Every file is written atomically (temp file in the same directory, fsync,
rename, fsync the directory), so a crash leaves either the old file or the new
one, never half of one; in a run staged for a remote URI the committed file is
then uploaded as one object (`remote.py`). The labeled set is *derived* from
the journal: nothing else holds it, so there is nothing to get out of sync.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist import remote
from autoal_dist.faults import crashpoint

CONFIG_FILE = "config.json"  # the stored config, dataset fingerprint and class count
JOURNAL_DIR = "journal"
_ROUND_FILE = re.compile(r"^round_(\d{3,})\.parquet$")
JOURNAL_SCHEMA = pa.schema([
    ("id", pa.int64()), ("round", pa.int32()), ("strategy", pa.string()), ("score", pa.float64()),
])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: "callable[[str], None]") -> None:
    """Call write(tmp_path), fsync it, rename it over `path`; upload it if `path` is staged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crashpoint("pre_rename", path.name)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    crashpoint("post_rename", path.name)
    _fsync_dir(path.parent)
    remote.after_commit(path)


def is_temp(path: Path) -> bool:
    """A temp file of write_atomic (one a killed process left behind is never read)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def write_table(path: Path, table: pa.Table) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def dataset_fingerprint(data) -> str:
    """A hash of the dataset's arrays: a resumed campaign must see the same data."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (data.train_x, data.train_y, data.test_x, data.test_y):
        h.update(str(arr.shape).encode())
        for lo in range(0, len(arr), 16384):
            h.update(arr[lo:lo + 16384].tobytes())
    return h.hexdigest()


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
    return pq.read_table(Path(run_dir) / "pool.parquet")


# ---- journal ----------------------------------------------------------------

def round_path(directory: Path, round_: int) -> Path:
    """`directory/round_XXX.parquet`: the per-round file of the journal (and of labels/)."""
    return Path(directory) / f"round_{round_:03d}.parquet"


def rounds_in(directory: Path) -> list[int]:
    """Rounds with a round_XXX.parquet in `directory`, ascending; temp files are ignored."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _ROUND_FILE.match(p.name)))


def journal_path(run_dir: Path, round_: int) -> Path:
    return round_path(Path(run_dir) / JOURNAL_DIR, round_)


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
    write_table(journal_path(run_dir, round_), table)


def journal_rounds(run_dir: Path) -> list[int]:
    """Completed rounds, ascending. Temp files of an interrupted write are ignored."""
    return rounds_in(Path(run_dir) / JOURNAL_DIR)


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
