"""`Run`: one campaign's run directory, the only code that reads or writes its files.

Every file is written atomically (store.py) and, when the run is staged for a URI, uploaded
once committed (`remote.Staged.commit`), explicitly, by the method that wrote it. The
labeled set, the completed rounds and whether the campaign is finished are derived from
the files on each call: nothing is cached that a file could contradict.

A `Run` is opened by `open_run` (run/lifecycle.py), which takes the run lock first; `Run.at`
opens a local directory without the lock, for readers (report, tests).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist import remote, store
from autoal_dist.errors import UserError
from autoal_dist.run.layout import (
    CONFIG_FILE,
    CURVES_FILE,
    JOURNAL_DIR,
    JOURNAL_SCHEMA,
    METRICS_FILE,
    METRICS_SCHEMA,
    POOL_FILE,
    SUMMARY_FILE,
    TRAIN,
    pool_table,
    round_file,
)

_TRAIN_RUN = re.compile(r"^round\d{3,}")  # training.ray_job's run names: round003, round003-...


class RunDirError(UserError):
    """A run directory that cannot be used as asked; the message is one line."""


class Run:
    """One run directory, local or staged for a URI (`remote.Staged`)."""

    def __init__(self, staged: remote.Staged):
        self.staged = staged
        self.dir = Path(staged.local)

    @classmethod
    def at(cls, directory: str | Path) -> Run:
        """A local run directory, opened without the lock (readers, tests)."""
        return cls(remote.Staged(Path(directory), str(directory)))

    def __repr__(self) -> str:
        return f"Run({self.location!r})"

    # ---- names -------------------------------------------------------------------------------
    @property
    def location(self) -> str:
        """What a user (or another node) calls the run directory: its path or URI."""
        return self.staged.location

    @property
    def is_remote(self) -> bool:
        return self.staged.mirror is not None

    def path(self, rel: str) -> Path:
        """The local file `rel` (in the staging copy of a remote run)."""
        return self.dir / rel

    def where(self, rel: str = "") -> str:
        """What a user calls the file `rel`: below the run's URI when staged."""
        return self.staged.where(self.dir / rel) if rel else self.location

    def exists(self, rel: str) -> bool:
        return (self.dir / rel).exists()

    # ---- files -------------------------------------------------------------------------------
    def read_table(self, rel: str, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(self.dir / rel, schema=schema)

    def read_json(self, rel: str) -> Any:
        return json.loads((self.dir / rel).read_text(encoding="utf-8"))

    def write_table(self, rel: str, table: pa.Table) -> None:
        store.write_table(self.dir / rel, table, self.staged.commit)

    def write_json(self, rel: str, obj: Any) -> None:
        store.write_json(self.dir / rel, obj, self.staged.commit)

    def write_text(self, rel: str, text: str) -> None:
        store.write_text(self.dir / rel, text, self.staged.commit)

    def write_with(self, rel: str, write: Callable[[str], object]) -> None:
        """A file another library writes (a figure: `fig.savefig(tmp, format=...)`)."""
        store.write_atomic(self.dir / rel, write, self.staged.commit)

    def rounds_in(self, sub: str) -> list[int]:
        """Rounds with a `sub/round_XXX.parquet`, ascending; temp files ignored."""
        return store.rounds_in(self.dir / sub)

    # ---- config.json -------------------------------------------------------------------------
    def meta(self, flag: str = "--out") -> dict[str, Any]:
        """config.json: stored config, dataset fingerprint, class count, mode. A missing,
        unreadable or damaged one is a RunDirError naming `flag`."""
        path = self.dir / CONFIG_FILE
        if not path.is_file():
            raise RunDirError(f"{flag}: {self.location} holds no {CONFIG_FILE}; not a campaign "
                              "run directory")
        where = self.where(CONFIG_FILE)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as e:  # truncated, overwritten, nested too deep
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RunDirError(f"{flag}: {where} is not readable JSON ({reason}); the run "
                              "directory is damaged") from None
        for key, typ in (("config", dict), ("dataset_fingerprint", str), ("num_classes", int)):
            if not isinstance(meta, dict) or not isinstance(meta.get(key), typ):
                raise RunDirError(f"{flag}: {where} has no valid {key!r}; not the config.json "
                                  "autoal-dist writes (damaged or replaced)")
        keep_stored_defaults(meta["config"])
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.write_json(CONFIG_FILE, meta)

    def create(self, meta: dict[str, Any], data: Any) -> None:
        """A new run: config.json first (it makes the directory resumable), then
        pool.parquet (rewritten by `ensure_pool` if a crash came in between)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write_meta(meta)
        self.ensure_pool(data)

    # ---- pool.parquet ------------------------------------------------------------------------
    def ensure_pool(self, data: Any) -> None:
        if not (self.dir / POOL_FILE).is_file():
            self.write_table(POOL_FILE, pool_table(data.train_y, data.test_y))

    def pool(self) -> pa.Table:
        return self.read_table(POOL_FILE)

    def check_data(self, data: Any, flag: str = "--dataset") -> None:
        """The data is the pool this run journaled: pool.parquet's labels and splits against
        the data's (16 bytes a row: ~20 ms at 1M rows), then, for a stored pool, the labeled
        set's rows read (their row groups' digests checked; training reads them next, from
        the driver's row cache). A mismatch is a RunDirError naming `flag`, before anything is
        written."""
        recorded_classes = self.meta(flag).get("num_classes")
        if data.num_classes != recorded_classes:
            raise RunDirError(f"{flag}: the data has {data.num_classes} classes, the campaign "
                              f"{recorded_classes} ({self.where(CONFIG_FILE)}'s num_classes); "
                              "the campaign needs the pool it started with")
        if not self.exists(POOL_FILE):  # a crash right after config.json: ensure_pool writes it
            return
        pool = self.pool()
        split = pool.column("split").to_numpy(zero_copy_only=False)
        recorded = pool.column("label").to_numpy()
        for name, y in (("train", data.train_y), ("test", data.test_y)):
            mine = recorded[split == name]
            if len(mine) != len(y):
                raise RunDirError(f"{flag}: the data's {name} split holds {len(y)} samples, the "
                                  f"campaign's {self.where(POOL_FILE)} {len(mine)}; the "
                                  "campaign needs the pool it started with")
            differ = np.flatnonzero(mine != np.asarray(y))
            if len(differ):
                i = int(differ[0])
                raise RunDirError(f"{flag}: the data's {name} label of sample {i} is {y[i]}, the "
                                  f"campaign recorded {mine[i]} ({len(differ)} differ) in "
                                  f"{self.where(POOL_FILE)}; the campaign needs the pool it "
                                  "started with")
        if getattr(data, "is_stored", False):
            data.train_x[self.labeled_ids()]  # a changed row group is a DataError, here

    # ---- journal -----------------------------------------------------------------------------
    def journal_rounds(self) -> list[int]:
        """Journaled rounds, ascending. Temp files of an interrupted write are ignored."""
        return self.rounds_in(JOURNAL_DIR)

    def journal(self) -> pa.Table:
        rounds = self.journal_rounds()
        if not rounds:
            return JOURNAL_SCHEMA.empty_table()
        return pa.concat_tables([self.round_table(r) for r in rounds])

    def round_path(self, round_: int) -> Path:
        """The local file of journal round `round_`."""
        return self.dir / round_file(JOURNAL_DIR, round_)

    def round_table(self, round_: int) -> pa.Table:
        return self.read_table(round_file(JOURNAL_DIR, round_), schema=JOURNAL_SCHEMA)

    def round_ids(self, round_: int) -> np.ndarray:
        return self.round_table(round_).column("id").to_numpy()

    def labeled_ids(self) -> np.ndarray:
        """The labeled set, derived from the journal; a repeated id means corruption."""
        ids = self.journal().column("id").to_numpy()
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"{self.location}: journal labels some ids twice")
        return np.sort(ids)

    def labeled_through(self, round_: int) -> np.ndarray:
        """Sorted ids journaled in rounds 0..round_: what round `round_` trains on."""
        journal = self.journal()
        rounds = journal.column("round").to_numpy()
        return np.sort(journal.column("id").to_numpy()[rounds <= round_])

    def write_round(self, round_: int, ids: np.ndarray, strategy: str,
                    scores: np.ndarray | None = None) -> None:
        """Record the batch queried in `round_` (round 0 = the initial labeled set)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(np.unique(ids)) != len(ids):
            raise ValueError(f"round {round_}: duplicate ids in the batch")
        scores = np.full(len(ids), np.nan) if scores is None else np.asarray(scores, np.float64)
        self.write_table(round_file(JOURNAL_DIR, round_), pa.table({
            "id": ids, "round": np.full(len(ids), round_, np.int32),
            "strategy": [strategy] * len(ids), "score": scores,
        }, schema=JOURNAL_SCHEMA))

    # ---- metrics.parquet ---------------------------------------------------------------------
    def metrics(self) -> list[dict[str, Any]]:
        path = self.dir / METRICS_FILE
        return pq.read_table(path).to_pylist() if path.exists() else []

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        self.write_table(METRICS_FILE, pa.Table.from_pylist(rows, schema=METRICS_SCHEMA))

    def completed_rows(self, rounds: int) -> list[dict[str, Any]]:
        """Metrics of rounds that need no more work in a campaign of `rounds` rounds:
        evaluated and, unless last, queried. A round evaluated as the last of a shorter
        campaign has not queried yet, so raising --rounds on resume redoes it (same seed,
        same result)."""
        queried = set(self.journal_rounds())
        done: list[dict[str, Any]] = []
        for r in self.metrics():
            if r["round"] != len(done) or r["round"] > rounds:
                break
            if r["round"] < rounds and r["round"] + 1 not in queried:
                break
            done.append(r)
        return done

    def report_is_stale(self) -> bool:
        """curves.png or summary.md missing, or older than metrics.parquet (a run killed
        between its last metrics row and its report)."""
        metrics = self.dir / METRICS_FILE
        if not metrics.is_file():
            return False
        reports = [self.dir / CURVES_FILE, self.dir / SUMMARY_FILE]
        return any(not p.is_file() or p.stat().st_mtime_ns < metrics.stat().st_mtime_ns
                   for p in reports)

    def is_complete(self, rounds: int) -> bool:
        """Every round 0..rounds evaluated: a resume has nothing to do."""
        return len(self.completed_rows(rounds)) == rounds + 1

    # ---- Ray Train's storage (train/) ------------------------------------------------------------
    def train_location(self, workers: int) -> str:
        """Ray Train's storage for the run: its URI when staged and Train runs worker
        processes (they may sit on other nodes), else the local `train/` directory."""
        local = self.dir / TRAIN
        return self.staged.where(local) if workers > 0 else str(local)

    def remove_stale_training(self) -> list[str]:
        """Delete the Ray Train runs a killed process left in `train/` (a finished fit deletes
        its own; under the run lock nothing else is training), here and, for a staged run, in
        the remote copy's `train/`; then `train/` itself if that leaves it empty. Returns what
        was removed. A resumed round starts its fit afresh (same seed, same result)."""
        import shutil

        removed = []
        local = self.dir / TRAIN
        if local.is_dir():
            for p in sorted(local.iterdir()):
                if _TRAIN_RUN.match(p.name):
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(self.staged.where(p))
        if self.is_remote:
            from pyarrow import fs as pafs

            uri = self.where(TRAIN)
            d = remote.RemoteDir.open(uri)
            for info in d.fs.get_file_info(pafs.FileSelector(d.root, allow_not_found=True)):
                if info.type == pafs.FileType.Directory and _TRAIN_RUN.match(info.base_name):
                    d.fs.delete_dir(info.path)
                    removed.append(remote.join(uri, info.base_name))
        self.tidy()
        return removed

    def tidy(self) -> None:
        """Remove `train/` when nothing is in it (a finished run keeps no empty folder)."""
        local = self.dir / TRAIN
        if local.is_dir() and not any(local.iterdir()):
            local.rmdir()

    # ---- checks ------------------------------------------------------------------------------
    def check(self, pool_size: int | None = None) -> None:
        """JournalError (one line) if the journal is damaged or disagrees with metrics,
        labels or a policy's files (run/checks.py)."""
        from autoal_dist.run.checks import check_run

        check_run(self, pool_size)


def keep_stored_defaults(config: dict[str, Any]) -> None:
    """A run keeps the behaviour it started with when a default changes later: a config
    stored before `autoal.reward` existed ran the loss-rank search (the gain reward became the
    default in #25), one stored before `autoal.cold_per_class` kept the prior candidate
    in the cold start too, and one stored before `autoal.cold_evidence` let the estimates
    count there, so a resumed campaign goes on as it began instead of switching."""
    autoal = config.get("autoal")
    if isinstance(autoal, dict):
        autoal.setdefault("reward", "loss_rank")
        autoal.setdefault("cold_per_class", 0.0)
        autoal.setdefault("cold_evidence", True)
