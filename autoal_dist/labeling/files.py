"""Reading the file people hand to `autoal-dist import`: a label CSV or Label Studio's JSON export.

Both become the same rows (where in the file, pool id, class), so the run-side checks in
`labeling.import_labels` are one piece of code whatever tool people labeled with. The format
is told from the content, not the file name: a JSON export starts with `[`, a CSV never does.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from autoal_dist.errors import UserError
from autoal_dist.labeling import label_studio
from autoal_dist.labeling.label_studio import ExportError, ExportSummary

_INT = re.compile(r"[+-]?\d+")


class LabelError(UserError):
    """A label file or labeling step that cannot be used; `str(err)` is one line for the user."""


@dataclass(frozen=True)
class LabelRow:
    """One label the file gives: where it is (for messages), the pool id and the class."""

    at: str  # "line 3" (CSV) or "task 17" (Label Studio)
    id: int
    label: int
    round: int | None = None  # the round the file says the id belongs to (tasks carry it)


@dataclass(frozen=True)
class LabelFile:
    rows: list[LabelRow]
    export: ExportSummary | None  # what a Label Studio export held; None for a CSV
    # (where, id, round) of each sample the file names without a label: checked all the same
    unlabeled: list[tuple[str, int, int | None]] = field(default_factory=list)


def read_label_file(path: Path, num_classes: int) -> LabelFile:
    """Rows of a UTF-8 label CSV or of a Label Studio JSON export, checked for form only."""
    path = Path(path)
    where = f"--labels: {path}"
    if not path.is_file():
        raise LabelError(f"--labels: no such file: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as e:
        raise LabelError(f"{where} is not UTF-8 text (byte {e.start}); save it as CSV "
                             "UTF-8 or export JSON from Label Studio") from None
    if not text.strip():
        raise LabelError(f"{where} is empty; expected a header line id,label and one row "
                             "per labeled sample, or a Label Studio JSON export")
    if not label_studio.looks_like_json(text):
        return LabelFile(read_label_csv(text, where), None)
    try:
        export = label_studio.read_export(text, where, num_classes)
    except ExportError as e:
        raise LabelError(str(e)) from None
    rows = [LabelRow(f"task {c.task}", c.id, c.label, c.round) for c in export.choices]
    return LabelFile(rows, export, [(f"task {t}", i, r) for t, i, r in export.unlabeled])


def read_label_csv(text: str, where: str) -> list[LabelRow]:
    """Each labeled row of a CSV with the columns id and label, each id once.

    Other columns are ignored and rows with an empty label are skipped (not labeled yet), so a
    partly filled-in batch.csv imports as it is.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[LabelRow] = []
    first_line: dict[int, int] = {}
    try:
        header = [h.strip() for h in next(reader)]
        if header.count("id") != 1 or header.count("label") != 1:
            raise LabelError(f"{where}: header {','.join(header)!r} must name the columns "
                                 "id and label once each (other columns are ignored)")
        if {"annotation_id", "annotator"} <= set(header):
            raise LabelError(f"{where} is Label Studio's CSV export, whose id column holds Label "
                             "Studio's task ids, not pool ids; use the project's Export > JSON")
        i_id, i_label = header.index("id"), header.index("label")
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise LabelError(f"{where} line {line}: {len(fields)} fields, the header "
                                     f"has {len(header)}")
            if not fields[i_label].strip():
                continue
            id_ = _int(fields[i_id], "id", where, line)
            if id_ in first_line:
                raise LabelError(f"{where} line {line}: id {id_} repeats line "
                                     f"{first_line[id_]}; give each id one row")
            first_line[id_] = line
            rows.append(LabelRow(f"line {line}", id_, _int(fields[i_label], "label", where, line)))
    except csv.Error as e:
        raise LabelError(f"{where} line {reader.line_num}: not valid CSV: {e}") from None
    if not rows:
        raise LabelError(f"{where} holds no labels (no row has a label)")
    return rows


def _int(text: str, column: str, where: str, line: int) -> int:
    if not _INT.fullmatch(text.strip()):
        raise LabelError(f"{where} line {line}: {column} {text!r} is not an integer")
    return int(text)
