"""Labeling with people (oracle `files`): export a queried batch, import the labels people give.

With `--oracle files` the campaign never trains on the dataset's pool labels: every journaled
batch, the initial set (round 0) included, is labeled by people, because a lab's pool is
unlabeled and its seed set needs annotators too. Only the test split's labels come from the
dataset (evaluation needs a labeled test set).

Labels store: `labels/round_XXX.parquet` (id int64, label int64) holds the labels imported so
far for the ids journaled in round XXX. An import validates the whole file before writing
anything, then rewrites the touched rounds' files atomically (`store.write_table`): a bad file
or a crash changes nothing, importing the same labels twice is a no-op, and a batch may be
labeled over several imports. A round trains only once every id journaled up to it is labeled;
until then `run` stops and says what to do (`next_steps`).

Corrections (`import --relabel`) replace a recorded label and append the label they replace to
`labels/history.parquet` (when, from which file, and the rounds that trained with it), so the
metrics of rounds that already trained stay explained. Past rounds are never retrained: their
models chose the batches people have since labeled. Only a final round (one that chose no
batch) loses its metrics row, so `run --resume` retrains and re-evaluates it.
"""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from autoal_dist import label_studio, store
from autoal_dist.data import Dataset
from autoal_dist.label_files import LabelError, LabelRow, read_label_file
from autoal_dist.remote import is_uri, location_of

LABELS_DIR = "labels"
LABELS_SCHEMA = pa.schema([("id", pa.int64()), ("label", pa.int64())])
HISTORY_FILE = "history.parquet"  # in labels/: each recorded label a correction replaced
HISTORY_SCHEMA = pa.schema([
    ("id", pa.int64()), ("round", pa.int32()), ("old_label", pa.int64()),
    ("new_label", pa.int64()), ("trained_through", pa.int32()), ("changed_at", pa.string()),
    ("source", pa.string()),
])
UNLABELED = -1  # train_y of a pool sample nobody labeled: loud if it ever reaches a loss


@dataclass(frozen=True)
class RoundLabels:
    """How much of one journaled batch people have labeled."""

    round: int
    batch: int
    labeled: int

    @property
    def complete(self) -> bool:
        return self.labeled == self.batch


# ---- the labels store ---------------------------------------------------------------

def read_labels(run_dir: Path) -> pa.Table:
    """Every imported label (id, label), all rounds; temp files of a killed import are ignored."""
    d = Path(run_dir) / LABELS_DIR
    rounds = store.rounds_in(d)
    if not rounds:
        return LABELS_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(store.round_path(d, r), schema=LABELS_SCHEMA)
                             for r in rounds])


def revealed_labels(run_dir: Path, pool_size: int) -> np.ndarray:
    """Pool labels as people gave them: int64 [pool_size], UNLABELED where none was imported."""
    y = np.full(pool_size, UNLABELED, np.int64)
    t = read_labels(run_dir)
    y[t.column("id").to_numpy()] = t.column("label").to_numpy()
    return y


def progress(run_dir: Path) -> list[RoundLabels]:
    """Labeling progress of every journaled round, ascending."""
    journal = store.read_journal(run_dir)
    ids, rounds = journal.column("id").to_numpy(), journal.column("round").to_numpy()
    done = np.isin(ids, read_labels(run_dir).column("id").to_numpy())
    return [RoundLabels(int(r), int((rounds == r).sum()), int(done[rounds == r].sum()))
            for r in store.journal_rounds(run_dir)]


def awaiting_round(run_dir: Path) -> int | None:
    """The first journaled round whose batch is not fully labeled; None when all are."""
    return next((p.round for p in progress(run_dir) if not p.complete), None)


def _round_ids(run_dir: Path, round_: int) -> np.ndarray:
    """The batch journaled in `round_`, in selection order (most wanted first)."""
    t = pq.read_table(store.journal_path(run_dir, round_), schema=store.JOURNAL_SCHEMA)
    return t.column("id").to_numpy()


def _where(run_dir: Path) -> str:
    """The run directory as the user named it (its URI when staged), shell-quoted."""
    return shlex.quote(location_of(run_dir))


def default_export_dir(run_dir: Path, round_: int) -> Path:
    """Where the printed next steps export to: beside the run (in the working directory for a
    run on a URI: people label local files), one folder per round."""
    run_dir = Path(run_dir)
    base = Path() if is_uri(location_of(run_dir)) else run_dir.parent
    return base / f"{run_dir.name}-export" / f"round_{round_:03d}"


def next_steps(run_dir: Path, round_: int) -> str:
    """What `run` prints when it stops for labels: the state and the exact commands. The export
    names Label Studio's document root (the folder above `<run>-export/`), so one local-files
    storage, `<run>-export/`, serves every round of the campaign."""
    p = next(p for p in progress(run_dir) if p.round == round_)
    out = default_export_dir(run_dir, round_)
    run, csv_path = _where(run_dir), shlex.quote(str(out / "batch.csv"))
    return "\n".join([
        f"round {round_} awaits labels: {p.labeled} of {p.batch} queried samples are labeled.",
        "Next:",
        f"  autoal-dist export {run} --round {round_} --to {shlex.quote(str(out))} "
        f"--ls-root {shlex.quote(str(out.parent.parent))}",
        f"  # fill the label column of {csv_path}\n"
        "  #   (or label in Label Studio and export the project as JSON: docs/labeling.md)",
        f"  autoal-dist import {run} --labels {csv_path}",
        f"  autoal-dist run --resume --out {run}",
    ])


# ---- export ---------------------------------------------------------------------------

def export_batch(run_dir: Path, round_: int | None, load_data: Callable[[], Dataset],
                 out: Path, ls_root: Path | None = None) -> str:
    """Write round `round_`'s batch (default: the round awaiting labels) to the new directory
    `out`; returns what was written. Arguments are checked before `load_data()` runs, and the
    files appear all at once (written to a temp folder, then renamed), so a failed export
    leaves nothing behind.

    Images: `images/<id>.png`, `batch.csv` (id,image,label), `label_studio_tasks.json` (image
    URL relative to `ls_root`, default: out's parent; id; round) and `label_studio_config.xml`.
    Flat features have nothing to look at in an image tool: `batch.csv` is then
    id,label,f0,f1,... Labels already imported are filled in; the rest are empty.
    """
    rounds = store.journal_rounds(run_dir)
    if round_ is None:
        round_ = awaiting_round(run_dir)
        if round_ is None:
            raise LabelError(f"--round: no batch of {location_of(run_dir)} awaits labels; pass --round R "
                             f"(journaled rounds: {_span(rounds)})")
    if round_ not in rounds:
        raise LabelError(f"--round: round {round_} has no batch in {location_of(run_dir)}'s journal; "
                         f"journaled rounds: {_span(rounds)}")
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelError(f"--to: {out} already exists and is not an empty directory; "
                         "choose a new one")
    root = Path(ls_root).absolute() if ls_root else out.parent
    if not out.is_relative_to(root):
        raise LabelError(f"--ls-root: {out} is not under {root}; Label Studio serves local files "
                         "only below its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    data = load_data()
    ids = _round_ids(run_dir, round_)
    known = revealed_labels(run_dir, len(data.train_y))[ids]
    labels = ["" if y == UNLABELED else str(y) for y in known]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if data.is_image:
            written = _write_images(tmp, out, root, round_, ids, labels, data)
        else:
            written = _write_features(tmp, ids, labels, data)
        os.replace(tmp, out)  # POSIX: replaces `out` if it is an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lines = [f"exported round {round_}: {len(ids)} samples to {out} ({', '.join(written)})"]
    if data.is_image:
        lines.append(_storage_note(out, root))
    lines.append(f"label them, then: autoal-dist import {_where(run_dir)} --labels "
                 f"{shlex.quote(str(out / 'batch.csv'))}"
                 + (" (or the Label Studio project's JSON export)" if data.is_image else ""))
    return "\n".join(lines)


def _storage_note(out: Path, root: Path) -> str:
    """How Label Studio must be set up to show these images."""
    storage = label_studio.storage_path(out, root)
    note = (f"Label Studio: LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={shlex.quote(str(root))}, "
            f"local-files storage path {shlex.quote(str(storage))}")
    if storage == out:
        return note + (f" (this round only; export with --ls-root "
                       f"{shlex.quote(str(root.parent))} to serve every round from one storage)")
    return note + " (one storage serves every round exported beside this one)"


def _span(rounds: list[int]) -> str:
    return f"{rounds[0]}..{rounds[-1]}" if rounds else "none"


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _write_images(tmp: Path, out: Path, root: Path, round_: int, ids: np.ndarray,
                  labels: list[str], data: Dataset) -> list[str]:
    (tmp / "images").mkdir()
    tasks, rows = [], []
    for i, label in zip(ids.tolist(), labels):
        img = data.train_x[i]
        rel = f"images/{i}.png"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / rel)
        rows.append([i, rel, label])
        tasks.append(label_studio.task(out / rel, root, i, round_))
    _write_csv(tmp / "batch.csv", ["id", "image", "label"], rows)
    (tmp / "label_studio_tasks.json").write_text(json.dumps(tasks, indent=1) + "\n",
                                                 encoding="utf-8")
    (tmp / "label_studio_config.xml").write_text(label_studio.labeling_config(data.num_classes),
                                                 encoding="utf-8")
    return ["images/", "batch.csv", "label_studio_tasks.json", "label_studio_config.xml"]


def _write_features(tmp: Path, ids: np.ndarray, labels: list[str], data: Dataset) -> list[str]:
    n_features = data.train_x.shape[1]
    rows = [[i, label, *data.train_x[i].tolist()] for i, label in zip(ids.tolist(), labels)]
    _write_csv(tmp / "batch.csv", ["id", "label", *(f"f{k}" for k in range(n_features))], rows)
    return ["batch.csv with the features (no images: the dataset holds flat features)"]


# ---- import ---------------------------------------------------------------------------

def read_history(run_dir: Path) -> pa.Table:
    """Every recorded label a correction replaced, oldest first (HISTORY_SCHEMA)."""
    path = Path(run_dir) / LABELS_DIR / HISTORY_FILE
    return pq.read_table(path, schema=HISTORY_SCHEMA) if path.is_file() \
        else HISTORY_SCHEMA.empty_table()


@dataclass
class _Plan:
    """What an import will record, decided before anything is written."""

    new: dict[int, dict[int, int]] = field(default_factory=dict)  # round -> {id: label}
    added: int = 0  # ids that had no label
    same: int = 0  # labels already recorded
    changes: list[tuple[int, int, int]] = field(default_factory=list)  # (id, recorded, new)
    ignored: int = 0  # Label Studio tasks of rounds already labeled (without --relabel)
    ignored_differ: int = 0  # ... whose choice differs from the recorded label


def import_labels(run_dir: Path, path: Path, num_classes: int, relabel: bool = False) -> str:
    """Validate the whole label file (CSV or Label Studio JSON export) against the run, then
    record its labels atomically; returns a summary.

    Each id must be a queried pool sample (in a journaled batch), carry a label in
    [0, num_classes), and agree with any label it already has unless `relabel` (a correction).
    A Label Studio export covers every round of its project: without `relabel`, its tasks of
    rounds whose batch is fully labeled are ignored (and counted), so the export of a long
    campaign imports as it is.
    """
    run_dir = Path(run_dir)
    if not store.journal_rounds(run_dir):
        raise LabelError(f"import: {location_of(run_dir)} has queried no batch yet; run "
                         f"`autoal-dist run --resume --out {_where(run_dir)}` first")
    file = read_label_file(path, num_classes)
    where = f"--labels: {path}"
    split = store.read_pool(run_dir).column("split").to_numpy(zero_copy_only=False)
    journal = store.read_journal(run_dir)
    round_of = dict(zip(journal.column("id").to_pylist(), journal.column("round").to_pylist()))
    old = read_labels(run_dir)
    known = dict(zip(old.column("id").to_pylist(), old.column("label").to_pylist()))
    open_rounds = {p.round for p in progress(run_dir) if not p.complete}
    plan = _Plan()
    for row in file.rows:
        at = f"{where} {row.at}"
        _check_row(row, at, split, round_of, num_classes)
        r, recorded = round_of[row.id], known.get(row.id)
        if file.export is not None and not relabel and r not in open_rounds:
            plan.ignored += 1
            plan.ignored_differ += recorded != row.label
            continue
        if recorded == row.label:
            plan.same += 1
            continue
        if recorded is not None:
            if not relabel:
                raise LabelError(f"{at}: id {row.id} already has label {recorded}, the file says "
                                 f"{row.label}; to correct recorded labels pass --relabel")
            plan.changes.append((row.id, recorded, row.label))
        else:
            plan.added += 1
        plan.new.setdefault(r, {})[row.id] = row.label
    retrained = _record(run_dir, plan, known, round_of, path)
    return _summary(run_dir, file.export, plan, retrained)


def _check_row(row: LabelRow, at: str, split: np.ndarray, round_of: dict[int, int],
               num_classes: int) -> None:
    """One label against the run: a queried pool id (of the round the file says), a class."""
    if not 0 <= row.id < len(split):
        raise LabelError(f"{at}: id {row.id} is not a sample of this campaign (pool ids are "
                         f"0..{(split == 'train').sum() - 1})")
    if split[row.id] != "train":
        raise LabelError(f"{at}: id {row.id} is in the {split[row.id]} split; only queried pool "
                         "samples take labels")
    if row.id not in round_of:
        raise LabelError(f"{at}: id {row.id} was not queried (it is in no exported batch); "
                         "labels are only taken for journaled batches")
    if row.round is not None and row.round != round_of[row.id]:
        raise LabelError(f"{at}: id {row.id} is a task of round {row.round}, but this campaign "
                         f"queried it in round {round_of[row.id]}; the export belongs to another "
                         "campaign")
    if not 0 <= row.label < num_classes:
        raise LabelError(f"{at}: label {row.label} for id {row.id} is out of range; allowed "
                         f"0..{num_classes - 1}")


def _record(run_dir: Path, plan: _Plan, known: dict[int, int], round_of: dict[int, int],
            path: Path) -> int | None:
    """Write the plan; returns the round whose metrics were dropped for retraining, if any.

    Order makes a crash at any point safe to repeat the import after: the final round's
    metrics row goes first (retraining it with the old labels changes nothing), then the
    history (a repeated correction is not appended twice), then the labels.
    """
    retrained = None
    if plan.changes:
        trained = _trained_rounds(run_dir)
        retrained = _drop_unqueried_round(run_dir)
        _append_history(run_dir, plan.changes, round_of, trained, path)
    for r, labels in sorted(plan.new.items()):
        labels = {i: y for i, y in known.items() if round_of[i] == r} | labels
        ids = np.array(sorted(labels), np.int64)
        store.write_table(store.round_path(run_dir / LABELS_DIR, r), pa.table(
            {"id": ids, "label": np.array([labels[i] for i in ids], np.int64)},
            schema=LABELS_SCHEMA))
    return retrained


def _trained_rounds(run_dir: Path) -> list[int]:
    """Rounds with a metrics row: their models trained on the labels recorded so far."""
    path = Path(run_dir) / "metrics.parquet"
    return pq.read_table(path, columns=["round"]).column("round").to_pylist() \
        if path.is_file() else []


def _drop_unqueried_round(run_dir: Path) -> int | None:
    """Drop the last metrics row if its round chose no batch (a finished campaign's final
    round), so resume retrains it with the corrected labels; returns that round."""
    rounds = _trained_rounds(run_dir)
    if not rounds or rounds[-1] + 1 in store.journal_rounds(run_dir):
        return None
    path = Path(run_dir) / "metrics.parquet"
    table = pq.read_table(path)
    store.write_table(path, table.slice(0, len(table) - 1))
    return rounds[-1]


def _append_history(run_dir: Path, changes: list[tuple[int, int, int]],
                    round_of: dict[int, int], trained: list[int], path: Path) -> None:
    history = read_history(run_dir)
    last = {i: (o, n) for i, o, n in zip(*(history.column(c).to_pylist()
                                            for c in ("id", "old_label", "new_label")))}
    rows = [(i, o, n) for i, o, n in changes if last.get(i) != (o, n)]  # not after a crash
    if not rows:
        return
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = str(Path(path).absolute())
    added = pa.table({
        "id": [i for i, _, _ in rows], "round": [round_of[i] for i, _, _ in rows],
        "old_label": [o for _, o, _ in rows], "new_label": [n for _, _, n in rows],
        "trained_through": [max((t for t in trained if t >= round_of[i]), default=-1)
                            for i, _, _ in rows],
        "changed_at": [at] * len(rows), "source": [source] * len(rows)}, schema=HISTORY_SCHEMA)
    store.write_table(run_dir / LABELS_DIR / HISTORY_FILE, pa.concat_tables([history, added]))


def _summary(run_dir: Path, export: label_studio.ExportSummary | None, plan: _Plan,
             retrained: int | None) -> str:
    lines = []
    if export is not None:
        line = (f"Label Studio export: {export.tasks} tasks, {len(export.choices)} labeled, "
                f"{export.skipped} skipped, {export.unannotated} without a choice")
        if plan.ignored:
            line += (f"; {plan.ignored} of rounds already labeled ignored ({plan.ignored_differ} "
                     "differ from the recorded label: import --relabel applies them)")
        lines.append(line)
    lines.append(f"imported {plan.added} new labels ({plan.same} were already recorded)")
    if plan.changes:
        shown = ", ".join(f"id {i}: {o} -> {n}" for i, o, n in plan.changes[:5])
        more = f" and {len(plan.changes) - 5} more" if len(plan.changes) > 5 else ""
        lines.append(f"relabeled {len(plan.changes)} ({shown}{more}); the replaced labels are "
                     f"kept in {LABELS_DIR}/{HISTORY_FILE}. Rounds that already trained keep "
                     "their metrics; the next round trains with the corrected labels"
                     + (f", and run --resume retrains final round {retrained}"
                        if retrained is not None else ""))
    lines += [f"round {p.round}: {p.labeled} of {p.batch} labeled"
              + ("" if p.complete else f"; {p.batch - p.labeled} still missing")
              for p in progress(run_dir) if p.round in plan.new or not p.complete]
    if awaiting_round(run_dir) is None:
        lines.append(f"every queried sample is labeled; continue: autoal-dist run --resume "
                     f"--out {_where(run_dir)}")
    return "\n".join(lines)
