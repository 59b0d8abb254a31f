"""Atomic file writes: every file of a run directory is written through here.

A file is written to a temp file in the same directory, fsynced, renamed over the
target and the directory fsynced, so a crash leaves either the old file or the new one,
never half of one; `on_commit` then sees the committed file (a staged directory uploads it
as one object: `remote.Staged.commit`). What the files are is the run object's business
(`run/`).
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist.errors import first_line
from autoal_dist.faults import crashpoint

_ROUND_FILE = re.compile(r"^round_(\d{3,})\.parquet$")


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path (a directory's entry list: a rename is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask sets it, briefly giving every
    other thread's new files the wrong mode): /proc/self/status on Linux, else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary `open(..., "w")` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode `mkdir` would give a new directory: 0o777 less the umask."""
    return 0o777 & ~current_umask()


OnCommit = Callable[[Path], None]


def write_atomic(path: Path, write: Callable[[str], object],
                 on_commit: OnCommit | None = None) -> None:
    """Call write(tmp_path), fsync it, rename it over `path`, then `on_commit(path)`.

    The file gets the mode the umask gives new files (mkstemp's temp file is 0600: a run
    directory shared by a group must stay readable by it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from None
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crashpoint("pre_rename", path.name)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    crashpoint("post_rename", path.name)
    fsync_path(path.parent)
    if on_commit is not None:
        on_commit(path)


class WriteError(OSError):
    """A write the filesystem refused without an errno (pyarrow's); the message names the
    file, in one line."""


def _naming(e: OSError, path: Path) -> OSError:
    """`e` about `path` itself, not the temp file (errors from pyarrow carry no errno: their
    message is kept, with ENOSPC recognised in it)."""
    code = e.errno
    if code is None and "No space left on device" in str(e):
        code = errno.ENOSPC
    if code is None:
        return WriteError(f"{path}: {first_line(e)}")
    return OSError(code, os.strerror(code), str(path))  # the subclass, e.g. PermissionError


def is_temp(path: Path) -> bool:
    """A temp file of write_atomic (one a killed process left behind is never read)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def write_table(path: Path, table: pa.Table, on_commit: OnCommit | None = None) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp), on_commit)


def write_text(path: Path, text: str, on_commit: OnCommit | None = None) -> None:
    write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), on_commit)


def write_json(path: Path, obj: Any, on_commit: OnCommit | None = None) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n", on_commit)


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
