"""`autoal-dist import`: check a label file against the run, then record its labels.

The whole file is validated before anything is written, so a refused import leaves the run
directory byte-identical. Corrections (`--relabel`) replace a recorded label and append the
label they replace to `labels/history.parquet` (when, from which file, and the rounds that
trained with it), so the metrics of rounds that already trained stay explained. Past rounds
are never retrained: their models chose the batches people have since labeled. Only a final
round (one that chose no batch) loses its metrics row, so `run --resume` retrains and
re-evaluates it with the corrected labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from autoal_dist.labeling.export import shown_location
from autoal_dist.labeling.files import LabelError, read_label_file
from autoal_dist.labeling.label_studio import ExportSummary
from autoal_dist.labeling.labels import (
    HISTORY_FILE,
    LABELS_DIR,
    LABELS_SCHEMA,
    awaiting_round,
    labels_file,
    progress,
    read_labels,
)

if TYPE_CHECKING:
    from autoal_dist.run import Run

HISTORY = f"{LABELS_DIR}/{HISTORY_FILE}"

HISTORY_SCHEMA = pa.schema([
    ("id", pa.int64()), ("round", pa.int32()), ("old_label", pa.int64()),
    ("new_label", pa.int64()), ("trained_through", pa.int32()), ("changed_at", pa.string()),
    ("source", pa.string()), ("kept_through", pa.int32()),
])


def read_history(run: Run) -> pa.Table:
    """Every recorded label a correction replaced, oldest first (HISTORY_SCHEMA). A file
    written before `kept_through` existed reads it as `trained_through` (what was known)."""
    if not run.exists(HISTORY):
        return HISTORY_SCHEMA.empty_table()
    table = run.read_table(HISTORY)
    if "kept_through" not in table.column_names:
        table = table.append_column("kept_through", table.column("trained_through"))
    return table.select(HISTORY_SCHEMA.names).cast(HISTORY_SCHEMA)


@dataclass
class _Plan:
    """What an import will record, decided before anything is written."""

    new: dict[int, dict[int, int]] = field(default_factory=dict)  # round -> {id: label}
    added: int = 0  # ids that had no label
    same: int = 0  # labels already recorded
    changes: list[tuple[int, int, int]] = field(default_factory=list)  # (id, recorded, new)
    ignored: int = 0  # Label Studio tasks of rounds already labeled (without --relabel)
    ignored_differ: int = 0  # ... whose choice differs from the recorded label


def import_labels(run: Run, path: Path, num_classes: int, relabel: bool = False) -> str:
    """Validate the whole label file (CSV or Label Studio JSON export) against the run, then
    record its labels atomically; returns a summary.

    Each id must be a queried pool sample (in a journaled batch), carry a label in
    [0, num_classes), and agree with any label it already has unless `relabel` (a correction).
    A Label Studio export covers every round of its project: without `relabel`, its tasks of
    rounds whose batch is fully labeled are ignored (and counted), so the export of a long
    campaign imports as it is.
    """
    if not run.journal_rounds():
        raise LabelError(f"import: {run.location} has queried no batch yet; run "
                         f"`autoal-dist run --resume --out {shown_location(run)}` first")
    file = read_label_file(path, num_classes)
    where = f"--labels: {path}"
    split = run.pool().column("split").to_numpy(zero_copy_only=False)
    journal = run.journal()
    round_of = dict(zip(journal.column("id").to_pylist(), journal.column("round").to_pylist()))
    old = read_labels(run)
    known = dict(zip(old.column("id").to_pylist(), old.column("label").to_pylist()))
    open_rounds = {p.round for p in progress(run) if not p.complete}
    for at, id_, round_ in file.unlabeled:  # a foreign task is refused even if unlabeled
        _check_id(id_, round_, f"{where} {at}", split, round_of)
    plan = _Plan()
    for row in file.rows:
        at = f"{where} {row.at}"
        _check_id(row.id, row.round, at, split, round_of)
        if not 0 <= row.label < num_classes:
            raise LabelError(f"{at}: label {row.label} for id {row.id} is out of range; allowed "
                             f"0..{num_classes - 1}")
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
    retrained = _record(run, plan, known, round_of, path)
    return _summary(run, file.export, plan, retrained)


def _check_id(id_: int, round_: int | None, at: str, split: np.ndarray,
              round_of: dict[int, int]) -> None:
    """A queried pool id, of the round the file says (when it says one)."""
    if not 0 <= id_ < len(split):
        raise LabelError(f"{at}: id {id_} is not a sample of this campaign (pool ids are "
                         f"0..{(split == 'train').sum() - 1})")
    if split[id_] != "train":
        raise LabelError(f"{at}: id {id_} is in the {split[id_]} split; only queried pool "
                         "samples take labels")
    if id_ not in round_of:
        raise LabelError(f"{at}: id {id_} was not queried (it is in no exported batch); "
                         "labels are only taken for journaled batches")
    if round_ is not None and round_ != round_of[id_]:
        raise LabelError(f"{at}: id {id_} is a task of round {round_}, but this campaign "
                         f"queried it in round {round_of[id_]}; the export belongs to another "
                         "campaign")


def _record(run: Run, plan: _Plan, known: dict[int, int], round_of: dict[int, int],
            path: Path) -> int | None:
    """Write the plan; returns the round whose metrics were dropped for retraining, if any.

    Order makes a crash at any point safe to repeat the import after: the final round's
    metrics row goes first (retraining it with the old labels changes nothing), then the
    history (a repeated correction is not appended twice), then the labels.
    """
    retrained = None
    if plan.changes:
        trained = _trained_rounds(run)
        retrained = _drop_unqueried_round(run)
        kept = max((t for t in trained if t != retrained), default=-1)
        _append_history(run, plan.changes, round_of, trained, kept, path)
    for r, labels in sorted(plan.new.items()):
        labels = {i: y for i, y in known.items() if round_of[i] == r} | labels
        ids = np.array(sorted(labels), np.int64)
        run.write_table(labels_file(r), pa.table(
            {"id": ids, "label": np.array([labels[i] for i in ids], np.int64)},
            schema=LABELS_SCHEMA))
    return retrained


def _trained_rounds(run: Run) -> list[int]:
    """Rounds with a metrics row: their models trained on the labels recorded so far."""
    return [r["round"] for r in run.metrics()]


def _drop_unqueried_round(run: Run) -> int | None:
    """Drop the last metrics row if its round chose no batch (a finished campaign's final
    round), so resume retrains it with the corrected labels; returns that round."""
    rows = run.metrics()
    if not rows or rows[-1]["round"] + 1 in run.journal_rounds():
        return None
    run.write_metrics(rows[:-1])
    return rows[-1]["round"]


def _append_history(run: Run, changes: list[tuple[int, int, int]], round_of: dict[int, int],
                    trained: list[int], kept: int, path: Path) -> None:
    """Append the corrections. `trained`: the rounds with a metrics row before this import;
    `kept`: the last one it left in place (later rounds train with the new labels)."""
    history = read_history(run)
    columns = ("id", "old_label", "new_label", "kept_through")
    earlier: dict[int, list[tuple[int, int, int]]] = {}  # id -> (old, new, kept) in order
    for i, o, n, k in zip(*(history.column(c).to_pylist() for c in columns)):
        earlier.setdefault(i, []).append((o, n, k))
    rows = [(i, o, n) for i, o, n in changes  # not after a crash: the same change again
            if not earlier.get(i) or earlier[i][-1][:2] != (o, n)]
    if not rows:
        return
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    source = str(Path(path).absolute())
    added = pa.table({
        "id": [i for i, _, _ in rows], "round": [round_of[i] for i, _, _ in rows],
        "old_label": [o for _, o, _ in rows], "new_label": [n for _, _, n in rows],
        "trained_through": [trained_through(trained, round_of[i], o, earlier.get(i, []))
                            for i, o, _ in rows],
        "changed_at": [at] * len(rows), "source": [source] * len(rows),
        "kept_through": [kept] * len(rows)}, schema=HISTORY_SCHEMA)
    run.write_table(HISTORY, pa.concat_tables([history, added]))


def trained_through(trained: list[int], round_: int, old: int,
                    earlier: list[tuple[int, int, int]]) -> int:
    """The last trained round whose model used label `old` for a sample queried in `round_`
    (-1: none), given its earlier corrections (old, new, kept_through), oldest first.

    Round t (t >= round_) trained with the label the last correction that kept only rounds
    before t had set (rounds after a correction's kept_through trained after it), or with the
    first label when no correction came before it, however many corrections there were."""
    def label_at(t: int) -> int:
        label = earlier[0][0] if earlier else old
        for _, new, kept in earlier:
            if kept < t:
                label = new
        return label

    return max((t for t in trained if t >= round_ and label_at(t) == old), default=-1)


def _summary(run: Run, export: ExportSummary | None, plan: _Plan,
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
              for p in progress(run) if p.round in plan.new or not p.complete]
    if awaiting_round(run) is None:
        lines.append(f"every queried sample is labeled; continue: autoal-dist run --resume "
                     f"--out {shown_location(run)}")
    return "\n".join(lines)
