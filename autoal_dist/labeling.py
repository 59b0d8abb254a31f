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
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from autoal_dist import store
from autoal_dist.data import Dataset
from autoal_dist.remote import is_uri, location_of

LABELS_DIR = "labels"
LABELS_SCHEMA = pa.schema([("id", pa.int64()), ("label", pa.int64())])
UNLABELED = -1  # train_y of a pool sample nobody labeled: loud if it ever reaches a loss
LS_LOCAL_FILES = "/data/local-files/?d="  # Label Studio's URL prefix for served local files
_INT = re.compile(r"[+-]?\d+")


class LabelError(ValueError):
    """A label file or labeling step that cannot be used; `str(err)` is one line for the user."""


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
    """What `run` prints when it stops for labels: the state and the exact commands."""
    p = next(p for p in progress(run_dir) if p.round == round_)
    out = default_export_dir(run_dir, round_)
    run, csv_path = _where(run_dir), shlex.quote(str(out / "batch.csv"))
    return "\n".join([
        f"round {round_} awaits labels: {p.labeled} of {p.batch} queried samples are labeled.",
        "Next:",
        f"  autoal-dist export {run} --round {round_} --to {shlex.quote(str(out))}",
        f"  # fill the label column of {csv_path}\n"
        "  #   (or label in Label Studio: README, 'Labeling with people')",
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

    Images: `images/<id>.png`, `batch.csv` (id,image,label), `label_studio_tasks.json` with
    image URLs under `ls_root` (default: out's parent), and `label_studio_config.xml`. Flat
    features have nothing to look at in an image tool: `batch.csv` is then id,label,f0,f1,...
    Labels already imported are filled in; the rest are empty.
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
            written = _write_images(tmp, out, root, ids, labels, data)
        else:
            written = _write_features(tmp, ids, labels, data)
        os.replace(tmp, out)  # POSIX: replaces `out` if it is an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return (f"exported round {round_}: {len(ids)} samples to {out} ({', '.join(written)})\n"
            f"label them, then: autoal-dist import {_where(run_dir)} "
            f"--labels {shlex.quote(str(out / 'batch.csv'))}")


def _span(rounds: list[int]) -> str:
    return f"{rounds[0]}..{rounds[-1]}" if rounds else "none"


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _write_images(tmp: Path, out: Path, root: Path, ids: np.ndarray, labels: list[str],
                  data: Dataset) -> list[str]:
    (tmp / "images").mkdir()
    tasks, rows = [], []
    for i, label in zip(ids.tolist(), labels):
        img = data.train_x[i]
        rel = f"images/{i}.png"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp / rel)
        rows.append([i, rel, label])
        url = LS_LOCAL_FILES + quote((out / rel).relative_to(root).as_posix())
        tasks.append({"data": {"image": url, "id": i}})
    _write_csv(tmp / "batch.csv", ["id", "image", "label"], rows)
    (tmp / "label_studio_tasks.json").write_text(json.dumps(tasks, indent=1) + "\n",
                                                 encoding="utf-8")
    choices = "\n".join(f'    <Choice value="{c}"/>' for c in range(data.num_classes))
    (tmp / "label_studio_config.xml").write_text(
        '<View>\n  <Image name="image" value="$image"/>\n'
        '  <Choices name="label" toName="image" choice="single" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n", encoding="utf-8")
    return ["images/", "batch.csv", "label_studio_tasks.json", "label_studio_config.xml"]


def _write_features(tmp: Path, ids: np.ndarray, labels: list[str], data: Dataset) -> list[str]:
    n_features = data.train_x.shape[1]
    rows = [[i, label, *data.train_x[i].tolist()] for i, label in zip(ids.tolist(), labels)]
    _write_csv(tmp / "batch.csv", ["id", "label", *(f"f{k}" for k in range(n_features))], rows)
    return ["batch.csv with the features (no images: the dataset holds flat features)"]


# ---- import ---------------------------------------------------------------------------

def read_label_csv(path: Path) -> list[tuple[int, int, int]]:
    """(line, id, label) for each labeled row of a UTF-8 CSV with the columns id and label.

    Other columns are ignored and rows with an empty label are skipped (not labeled yet), so a
    partly filled-in batch.csv imports as it is.
    """
    path = Path(path)
    where = f"--labels: {path}"
    if not path.is_file():
        raise LabelError(f"--labels: no such file: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as e:
        raise LabelError(f"{where} is not UTF-8 text (byte {e.start}); save it as CSV UTF-8") \
            from None
    if not text.strip():
        raise LabelError(f"{where} is empty; expected a header line id,label and one row per "
                         "labeled sample")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    try:
        header = [h.strip() for h in next(reader)]
        if header.count("id") != 1 or header.count("label") != 1:
            raise LabelError(f"{where}: header {','.join(header)!r} must name the columns id and "
                             "label once each (other columns are ignored)")
        i_id, i_label = header.index("id"), header.index("label")
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise LabelError(f"{where} line {line}: {len(fields)} fields, the header has "
                                 f"{len(header)}")
            if fields[i_label].strip():
                rows.append((line, _int(fields[i_id], "id", where, line),
                             _int(fields[i_label], "label", where, line)))
    except csv.Error as e:
        raise LabelError(f"{where} line {reader.line_num}: not valid CSV: {e}") from None
    if not rows:
        raise LabelError(f"{where} holds no labels (no row has a label)")
    return rows


def _int(text: str, column: str, where: str, line: int) -> int:
    if not _INT.fullmatch(text.strip()):
        raise LabelError(f"{where} line {line}: {column} {text!r} is not an integer")
    return int(text)


def import_labels(run_dir: Path, path: Path, num_classes: int) -> str:
    """Validate the whole label file against the run, then record its new labels atomically.

    Each id must be a queried pool sample (in a journaled batch), appear once, carry a label
    in [0, num_classes), and agree with any label it already has. Returns a summary.
    """
    run_dir = Path(run_dir)
    if not store.journal_rounds(run_dir):
        raise LabelError(f"import: {location_of(run_dir)} has queried no batch yet; run "
                         f"`autoal-dist run --resume --out {_where(run_dir)}` first")
    rows = read_label_csv(path)
    where = f"--labels: {path}"
    split = store.read_pool(run_dir).column("split").to_numpy(zero_copy_only=False)
    journal = store.read_journal(run_dir)
    round_of = dict(zip(journal.column("id").to_pylist(), journal.column("round").to_pylist()))
    old = read_labels(run_dir)
    known = dict(zip(old.column("id").to_pylist(), old.column("label").to_pylist()))
    first_line: dict[int, int] = {}
    new: dict[int, dict[int, int]] = {}  # round -> {id: label}
    for line, id_, label in rows:
        at = f"{where} line {line}"
        if id_ in first_line:
            raise LabelError(f"{at}: id {id_} repeats line {first_line[id_]}; give each id one row")
        first_line[id_] = line
        if not 0 <= id_ < len(split):
            raise LabelError(f"{at}: id {id_} is not a sample of this campaign (pool ids are "
                             f"0..{(split == 'train').sum() - 1})")
        if split[id_] != "train":
            raise LabelError(f"{at}: id {id_} is in the {split[id_]} split; only queried pool "
                             "samples take labels")
        if id_ not in round_of:
            raise LabelError(f"{at}: id {id_} was not queried (it is in no exported batch); "
                             "labels are only taken for journaled batches")
        if not 0 <= label < num_classes:
            raise LabelError(f"{at}: label {label} for id {id_} is out of range; allowed "
                             f"0..{num_classes - 1}")
        if id_ in known:
            if known[id_] != label:
                raise LabelError(f"{at}: id {id_} already has label {known[id_]}, the file says "
                                 f"{label}; recorded labels cannot be changed")
            continue
        new.setdefault(round_of[id_], {})[id_] = label
    for r, labels in sorted(new.items()):
        labels |= {i: y for i, y in known.items() if round_of[i] == r}
        ids = np.array(sorted(labels), np.int64)
        store.write_table(store.round_path(run_dir / LABELS_DIR, r), pa.table(
            {"id": ids, "label": np.array([labels[i] for i in ids], np.int64)},
            schema=LABELS_SCHEMA))
    n_new = sum(map(len, new.values()))
    lines = [f"imported {n_new} new labels ({len(rows) - n_new} were already recorded)"]
    lines += [f"round {p.round}: {p.labeled} of {p.batch} labeled"
              + ("" if p.complete else f"; {p.batch - p.labeled} still missing")
              for p in progress(run_dir) if p.round in new or not p.complete]
    if awaiting_round(run_dir) is None:
        lines.append(f"every queried sample is labeled; continue: autoal-dist run --resume "
                     f"--out {_where(run_dir)}")
    return "\n".join(lines)
