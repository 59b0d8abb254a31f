"""Atomic file writes: every file of a run directory is written through here.

A file is written to a temp file in the same directory, fsynced, renamed over the
target and the directory fsynced, so a crash leaves either the old file or the new one,
never half of one; in a run staged for a remote URI the committed file is then uploaded
as one object (`remote.py`). What the files are is `rundir.py`'s business.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist import remote
from autoal_dist.faults import crashpoint

_ROUND_FILE = re.compile(r"^round_(\d{3,})\.parquet$")


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


# ---- per-round files (journal/, labels/) ------------------------------------

def round_path(directory: Path, round_: int) -> Path:
    """`directory/round_XXX.parquet`: the per-round file of the journal (and of labels/)."""
    return Path(directory) / f"round_{round_:03d}.parquet"


def rounds_in(directory: Path) -> list[int]:
    """Rounds with a round_XXX.parquet in `directory`, ascending; temp files are ignored."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _ROUND_FILE.match(p.name)))
