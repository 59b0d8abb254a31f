"""Check a run directory's journal before anything builds on it: one line on what is wrong.

The labeled set is derived from `journal/round_XXX.parquet` alone (run/directory.py), so a journal
that is damaged (a truncated file, a round file under a second name, a lost round, an id
journaled twice) silently changes what a resumed campaign trains on, and a label import
checked against it accepts or refuses the wrong ids. `check_run(run)` (`Run.check`) reads the
footers and id columns (fast: 100 rounds take a few tens of milliseconds) and raises
JournalError, one line naming the file or round, when:

  * a name in journal/ is not the canonical `round_{r:03d}.parquet` (e.g. round_0001.parquet,
    also when it sits beside round_001.parquet: two files for one round), or is no round file;
  * the rounds are not 0..R without a gap;
  * a file is not readable parquet (truncated, corrupt), its schema is not the journal's,
    or its `round` column disagrees with its name;
  * an id is journaled twice in one round, or in two rounds, or is not a pool id;
  * metrics.parquet disagrees with the journal: its rounds must be 0..k in order, each row's
    n_labeled must be the number of ids journaled in rounds 0..r, k <= R, and k >= R - 2
    (see below);
  * labels/ (oracle `files`): a label file is not canonical or readable, is not of a journaled
    round, holds an id twice or an id that round did not journal;
  * config.json or pool.parquet is unreadable;
  * a round policy's file is damaged, as the policy's own check says (`policies.POLICY_FILES`:
    albl_state.json must be ALBL's bandit state, AutoAL's parquet files readable).

How far metrics.parquet may lag the journal (campaign.py): round r trains on rounds 0..r,
evaluates, journals round r+1's batch and only then rewrites metrics.parquet with row r. A
crash between those two writes leaves the journal at r+1 and metrics at r-1; a campaign
stopped for labels (oracle files) or that finished leaves them at r+1 and r, or r and r;
`import --relabel` drops a finished campaign's final row (r and r-1). So R - k <= 2 in every
state the program leaves, interrupted or not; a larger gap means an older metrics.parquet
(e.g. written by a second, stale process) replaced a newer one. Temp files of an interrupted
write and other hidden files (NFS's .nfsXXXX) are ignored, as every reader ignores them.
"""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist.errors import UserError, first_line
from autoal_dist.labeling.labels import HISTORY_FILE, LABELS_DIR, LABELS_SCHEMA
from autoal_dist.run.layout import CONFIG_FILE, JOURNAL_DIR, JOURNAL_SCHEMA, METRICS_FILE, POOL_FILE

if TYPE_CHECKING:
    from autoal_dist.run.directory import Run

MAX_METRICS_LAG = 2  # journal rounds past the last metrics row in a state the program leaves
_ROUND_NAME = re.compile(r"^round_(\d+)\.parquet$")
_LOOSE_ROUND = re.compile(r"^round_?(\d+)", re.IGNORECASE)


class JournalError(UserError):
    """A run directory whose journal (or what must agree with it) is damaged."""



def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def read_checked(run: Run, rel: str, columns: list[str] | None = None,
                 schema: pa.Schema | None = None) -> pa.Table:
    """The parquet file `rel`, or JournalError naming it (unreadable, or not `schema`)."""
    try:
        f = pq.ParquetFile(run.path(rel))
        got = f.schema_arrow
        if schema is not None and not got.remove_metadata().equals(schema.remove_metadata()):
            raise JournalError(f"{run.where(rel)}: schema ({_schema_text(got)}) is not "
                               f"the expected ({_schema_text(schema)})")
        if columns is not None:
            missing = [c for c in columns if c not in got.names]
            if missing:
                raise JournalError(f"{run.where(rel)}: no column {missing[0]!r} "
                                   f"(columns: {', '.join(got.names)})")
        return f.read(columns=columns)
    except JournalError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt parquet raises by cause
        raise JournalError(f"{run.where(rel)}: not a readable parquet file "
                           f"({first_line(e)})") from None


def _round_files(run: Run, sub: str, allowed: tuple[str, ...] = ()) -> dict[int, str]:
    """{round: relative path} of the canonical round files in `sub`; JournalError on any other
    visible name (a second name for one round, a non-canonical name, a stray file)."""
    d = run.path(sub)
    if not d.exists():
        return {}
    if not d.is_dir():
        raise JournalError(f"{run.where(sub)}: is a file, not a directory")
    found: dict[int, str] = {}
    odd: list[tuple[str, int | None]] = []
    for p in sorted(d.iterdir()):
        name = p.name
        if name.startswith(".") or name in allowed:
            continue  # temp files of an interrupted write, NFS silly-renames, known extras
        m = _ROUND_NAME.match(name)
        if m and name == f"round_{int(m.group(1)):03d}.parquet" and p.is_file():
            found[int(m.group(1))] = f"{sub}/{name}"
            continue
        loose = _LOOSE_ROUND.match(name)
        odd.append((name, int(loose.group(1)) if loose else None))
    for name, r in odd:
        rel = f"{sub}/{name}"
        if r is None:
            raise JournalError(f"{run.where(rel)}: unexpected file in {sub}/ (only "
                               "round_XXX.parquet files belong there)")
        canonical = f"round_{r:03d}.parquet"
        if r in found:
            raise JournalError(f"{run.where(rel)}: a second file for round {r} beside "
                               f"{canonical}; which one is the round is ambiguous")
        raise JournalError(f"{run.where(rel)}: not a canonical round file name (round "
                           f"{r}'s file is {canonical})")
    return found


def _span(rounds) -> str:
    rounds = sorted(rounds)
    return f"{rounds[0]}..{rounds[-1]}" if rounds else "none"


def _train_pool_size(run: Run) -> int | None:
    if not run.path(POOL_FILE).is_file():
        return None
    split = read_checked(run, POOL_FILE, columns=["split"]).column("split").to_numpy(
        zero_copy_only=False)
    return int((split == "train").sum())


def check_run(run: Run, pool_size: int | None = None) -> None:
    """Raise JournalError (one line) if the run directory's journal is damaged or disagrees
    with metrics.parquet or labels/; return None when it is sound.

    `pool_size` is the number of pool (train split) samples, ids 0..pool_size-1; by default
    it is read from pool.parquet (no range check when neither is there).
    """
    config = run.path(CONFIG_FILE)
    if config.is_file():
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:
            raise JournalError(f"{run.where(CONFIG_FILE)}: not readable JSON "
                               f"({first_line(e)})") from None
    files = _round_files(run, JOURNAL_DIR)
    if pool_size is None:
        pool_size = _train_pool_size(run)
        if pool_size is None and files:
            raise JournalError(f"{run.where(POOL_FILE)}: missing, but the journal "
                               f"holds rounds {_span(files)}")
    rounds = sorted(files)
    if rounds and rounds != list(range(len(rounds))):
        gap = next(r for r in range(rounds[-1] + 1) if r not in files)
        raise JournalError(f"{run.where(JOURNAL_DIR)}: round {gap} is missing "
                           f"(round_{gap:03d}.parquet) but the journal reaches round "
                           f"{rounds[-1]}; rounds must be 0..R without a gap")

    ids_of: list[np.ndarray] = []
    for r in rounds:
        rel = files[r]
        t = read_checked(run, rel, columns=["id", "round"], schema=JOURNAL_SCHEMA)
        ids = t.column("id").to_numpy()
        rcol = t.column("round").to_numpy()
        if len(rcol) and not (rcol == r).all():
            bad = int(rcol[rcol != r][0])
            raise JournalError(f"{run.where(rel)}: holds rows of round {bad}, not {r}")
        outside = (ids < 0) | (ids >= pool_size) if pool_size is not None else ids < 0
        if outside.any():
            span = f"0..{pool_size - 1}" if pool_size is not None else "non-negative"
            raise JournalError(f"{run.where(rel)}: id {int(ids[outside][0])} is not a "
                               f"pool id (pool ids are {span})")
        ids_of.append(ids)

    if ids_of:
        all_ids = np.concatenate(ids_of)
        uniq, counts = np.unique(all_ids, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[counts > 1][0])
            where = [r for r, ids in zip(rounds, ids_of) for _ in range(int((ids == dup).sum()))]
            if len(set(where)) == 1:
                raise JournalError(f"{run.where(files[where[0]])}: id {dup} is journaled "
                                   f"{len(where)} times in round {where[0]}")
            raise JournalError(f"{run.where(files[where[1]])}: id {dup} is journaled in "
                               f"round {where[0]} and again in round {where[1]}")
    cumulative = np.cumsum([len(ids) for ids in ids_of])  # n_labeled of each round
    _check_metrics(run, rounds, cumulative)
    _check_labels(run, rounds, ids_of)
    _check_policy_files(run)


def _check_policy_files(run: Run) -> None:
    """The round policies' own files, which a resumed round reads, each by its policy's check
    (`policies.policy_files`): a ValueError it raises becomes a JournalError naming the file."""
    from autoal_dist.policies import policy_files

    for name, check in sorted(policy_files().items()):
        if run.path(name).is_file():
            try:
                check(run, name)
            except JournalError:
                raise
            except ValueError as e:
                raise JournalError(f"{run.where(name)}: {e}") from None


def _check_metrics(run: Run, rounds: list[int], cumulative: np.ndarray) -> None:
    if not run.path(METRICS_FILE).is_file():
        if len(rounds) > MAX_METRICS_LAG:
            raise JournalError(f"{run.where(METRICS_FILE)}: missing, but the journal "
                               f"reaches round {rounds[-1]}")
        return
    t = read_checked(run, METRICS_FILE, columns=["round", "n_labeled"])
    where = run.where(METRICS_FILE)
    m_rounds = t.column("round").to_numpy(zero_copy_only=False)
    n_labeled = t.column("n_labeled").to_numpy(zero_copy_only=False)
    if len(m_rounds) and not np.array_equal(m_rounds, np.arange(len(m_rounds))):
        at = int(np.nonzero(m_rounds != np.arange(len(m_rounds)))[0][0])
        raise JournalError(f"{where}: row {at} is round {m_rounds[at]}, expected {at}; its "
                           "rounds must be 0..k in order")
    last = len(m_rounds) - 1
    journal_last = len(rounds) - 1
    if last > journal_last:
        raise JournalError(f"{where}: has a row for round {last}, but the journal reaches only "
                           + (f"round {journal_last}" if rounds else "no round")
                           + f" (a lost round_{journal_last + 1:03d}.parquet?)")
    for r in range(len(m_rounds)):
        if int(n_labeled[r]) != int(cumulative[r]):
            raise JournalError(f"{where}: round {r} trained on {int(n_labeled[r])} labeled ids, "
                               f"but journal rounds 0..{r} hold {int(cumulative[r])}")
    if journal_last - last > MAX_METRICS_LAG:
        raise JournalError(f"{where}: ends at round {last} but the journal reaches round "
                           f"{journal_last}; a run leaves at most {MAX_METRICS_LAG} journaled "
                           "rounds without metrics (an older metrics.parquet replaced a newer "
                           "one?)")


def _check_labels(run: Run, rounds: list[int], ids_of: list[np.ndarray]) -> None:
    files = _round_files(run, LABELS_DIR, allowed=(HISTORY_FILE,))
    if run.path(f"{LABELS_DIR}/{HISTORY_FILE}").is_file():
        read_checked(run, f"{LABELS_DIR}/{HISTORY_FILE}", columns=["id"])
    if not files:
        return
    journaled = set(rounds)
    for r, rel in sorted(files.items()):
        if r not in journaled:
            raise JournalError(f"{run.where(rel)}: labels for round {r}, which the "
                               f"journal does not hold (journaled rounds: {_span(rounds)})")
        ids = read_checked(run, rel, columns=["id"], schema=LABELS_SCHEMA).column("id").to_numpy()
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise JournalError(f"{run.where(rel)}: id {int(uniq[counts > 1][0])} is "
                               "labeled twice")
        foreign = np.setdiff1d(uniq, ids_of[r], assume_unique=False)
        if len(foreign):
            raise JournalError(f"{run.where(rel)}: id {int(foreign[0])} is labeled but "
                               f"was not journaled in round {r}")
