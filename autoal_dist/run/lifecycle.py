"""`open_run`: the one way into a run directory, for the CLI, Tune trials and benchmarks.

    with open_run(location, "new", command="autoal-dist run") as run:      # a fresh campaign
        run.create(new_meta(cfg.to_dict(), data, version, mode), data)
    with open_run(location, "resume", command="autoal-dist import") as run:  # an existing one
        meta = run.meta()

Both take the run lock (dirlock.py) before anything is read that decides what to write, and
stage a URI (remote.py) for the block's duration; a resumed run is checked (`Run.check`)
before it is handed out. `open_run(location, "read")` opens an existing run for a reader
(report, export) without the lock. `resume_config` is what a resume may change.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from autoal_dist import remote
from autoal_dist.config import Config, flat
from autoal_dist.dirlock import RunLocked, describe, lock_holder, run_lock
from autoal_dist.errors import first_line
from autoal_dist.run.directory import Run, RunDirError
from autoal_dist.run.layout import CONFIG_FILE, MODE_KEY

# Settings a resumed campaign may change: they alter how it runs, not what it selects.
RESUMABLE_OVERRIDES = {"rounds", "shards", "workers", "gpu"}
# ...and the data's location, as long as the data found there is the campaign's (fingerprint).
MOVABLE = {"dataset", "data_root"}
# Config keys whose flag is not `--<key>`.
FLAG_OF = {"train.epochs": "--epochs", "data_root": "--data-root"}

How = Literal["new", "resume", "read"]


@contextmanager
def open_run(location: str | None, how: How, *, command: str = "autoal-dist run",
             field: str = "--out", name: str | None = None) -> Iterator[Run]:
    """The run directory at `location` (a path or URI), locked and staged for the block.

    new: `location` must be new or empty (None: runs/<name>, suffixed -2, -3... if taken);
    the directory is locked *before* it is found empty, so of two fresh runs on one location
    one runs and the other is refused naming it. resume: `location` must hold a run (refused
    before the lock adds `.lock` to a non-run); it is locked, downloaded when a URI, and
    checked. read: neither locked nor checked: the reader checks what it reads (report, export,
    compare; report writes only files derived from the others).
    """
    if how == "new":
        with ExitStack() as held:
            where = _fresh_location(location, name, command, field, held)
            with remote.opened(where, download=False, field=field) as staged:
                yield Run(staged)
        return
    if location is None:
        raise RunDirError(f"{field}: needs the run directory")
    if how == "resume":
        require_run(location, field)
    with ExitStack() as held:
        if how == "resume":
            held.enter_context(run_lock(location, command, field=field, create=False))
        run = Run(held.enter_context(remote.opened(location, field=field)))
        if how == "resume":
            run.meta(field)
            run.check()
        yield run


def require_run(location: str, field: str) -> None:
    """RunDirError unless `location` (a path or URI) holds a config.json, checked without
    writing anything: before a command locks a directory (the lock creates `.lock`), a
    directory that is no run at all is refused as it is."""
    if remote.is_uri(location):
        from pyarrow import fs as pafs

        try:
            d = remote.RemoteDir.open(location)
            found = d.fs.get_file_info(f"{d.root}/{CONFIG_FILE}").type == pafs.FileType.File
        except remote.RemoteError as e:
            raise remote.RemoteError(f"{field}: {e}") from None
        except OSError as e:
            raise RunDirError(f"{field}: cannot read {location}: {first_line(e)}") from None
    else:
        if not Path(location).exists():
            raise RunDirError(f"{field}: {location} does not exist: no campaign was started "
                              f"there (start one with autoal-dist run --out {location})")
        found = (Path(location) / CONFIG_FILE).is_file()
    if not found:
        raise RunDirError(f"{field}: {location} holds no {CONFIG_FILE}; not a campaign run "
                          "directory")


def default_name(cfg: Config) -> str:
    """runs/<name>'s name: <dataset>-<strategy>-seed<S>, a stored pool named by its folder."""
    dataset = cfg.dataset
    if dataset.startswith("pool:"):
        dataset = "pool-" + (re.split(r"[/\\]", dataset[5:].split("?")[0].rstrip("/\\"))[-1]
                             or "pool")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset}-{cfg.strategy}-seed{cfg.seed}")


def _fresh_location(location: str | None, name: str | None, command: str, field: str,
                    held: ExitStack) -> str:
    """`location` as given (must be new or empty); else runs/<name>, suffixed -2, -3... if
    taken; locked until `held` closes. A default candidate that is locked or holds a run moves
    on to the next suffix. A directory that holds a run is refused before locking it: a
    refused run adds no lock file to it."""
    if location:
        check_out(location, field)
        held.enter_context(run_lock(location, command, field=field))
        check_out(location, field, locked=True)  # the check that counts: under the lock
        return location
    if not name:
        raise RunDirError(f"{field}: needs a run directory or a run name")
    base = Path("runs") / name
    for k in itertools.count(1):
        out = str(base if k == 1 else base.with_name(f"{base.name}-{k}"))
        if not remote.is_empty(out):
            continue
        with ExitStack() as attempt:
            try:
                attempt.enter_context(run_lock(out, command, field=field))
            except RunLocked:
                continue
            if remote.is_empty(out):
                held.enter_context(attempt.pop_all())
                return out
    raise AssertionError("unreachable")


def _holder(location: str) -> dict | None:
    """Who holds `location`'s run lock now (None: nobody, or it cannot be told)."""
    try:
        return lock_holder(location)
    except (OSError, ValueError):
        return None


def check_out(out: str, field: str = "--out", locked: bool = False) -> None:
    """A fresh run's location: a local one must be a directory or not exist, and not lie
    below a regular file; any must hold no run (when another process runs there, it is
    named). Checked before anything starts, and again once the run lock is held."""
    if not remote.is_uri(out):
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{field}: {out} is a file, not a directory")
        for parent in path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise RunDirError(f"{field}: {out} lies below {parent}, a file, not a "
                                      "directory")
                break
    if not remote.is_empty(out, field):
        holder = None if locked else _holder(out)
        if holder is not None:  # the run is going on: say who runs it
            raise RunDirError(f"{field}: {out} already holds a run, in use by "
                              f"{describe(holder)}; choose another directory (or --resume it "
                              "once that has finished)")
        raise RunDirError(f"{field}: {out} already holds a run; pass --resume to continue it "
                          "or choose another directory")


def new_meta(config: dict[str, Any], data: Any, version: str,
             mode: str | None = None) -> dict[str, Any]:
    """config.json's content: the config, what proves the data is the same, the mode."""
    meta = {"config": config, "dataset_fingerprint": data.fingerprint(),
            "num_classes": data.num_classes, "autoal_dist_version": version}
    if mode is not None:
        meta[MODE_KEY] = mode
    return meta



def resume_config(meta: dict[str, Any], overrides: dict[str, Any]) -> Config:
    """The stored config with the flags given on a resume: a flag equal to the stored value
    is fine; one that changes it is refused (naming the flag) unless it only changes how the
    campaign runs (RESUMABLE_OVERRIDES) or where its data lies (MOVABLE: the caller checks the
    data found there by fingerprint)."""
    from autoal_dist.registry import load_config

    stored = load_config(meta["config"])
    cfg = load_config(meta["config"], overrides)
    before, after = flat(stored.to_dict()), flat(cfg.to_dict())
    for key, value in after.items():
        if value != before.get(key) and key not in RESUMABLE_OVERRIDES | MOVABLE:
            flag = FLAG_OF.get(key, "--" + key.replace("_", "-"))
            raise RunDirError(f"{flag}: {value!r} differs from the campaign's stored value "
                              f"{before.get(key)!r}; on --resume only "
                              f"{', '.join('--' + k for k in sorted(RESUMABLE_OVERRIDES))}, "
                              "--local/--ray may change (and --dataset/--data-root, to where the "
                              "same data moved)")
    return cfg
