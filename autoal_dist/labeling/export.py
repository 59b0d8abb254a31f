"""Labeling with people (oracle `files`): export a queried batch, import the labels people give.

With `--oracle files` the campaign never trains on the dataset's pool labels: every journaled
batch, the initial set (round 0) included, is labeled by people, because a lab's pool is
unlabeled and its seed set needs annotators too. Only the test split's labels come from the
dataset (evaluation needs a labeled test set).

Labels store: `labels/round_XXX.parquet` (id int64, label int64) holds the labels imported so
far for the ids journaled in round XXX. An import validates the whole file before writing
anything, then rewrites the touched rounds' files atomically (through the run object): a bad file
or a crash changes nothing, importing the same labels twice is a no-op, and a batch may be
labeled over several imports. A round trains only once every id journaled up to it is labeled;
until then `run` stops and says what to do (`next_steps`).

Importing a label file is `label_import.py`; corrections are recorded there too.
"""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from autoal_dist import store
from autoal_dist.data import Dataset
from autoal_dist.labeling import label_studio
from autoal_dist.labeling.files import LabelError
from autoal_dist.labeling.labels import UNLABELED, awaiting_round, progress, revealed_labels

if TYPE_CHECKING:
    from autoal_dist.run import Run


def shell_arg(path: str | Path) -> str:
    """A path as one shell word that no command line takes for an option (`./-x`, not `-x`)."""
    text = str(path)
    return shlex.quote("./" + text if text.startswith("-") else text)


def shown_location(run: Run) -> str:
    """The run directory as the user named it (its URI when staged), shell-quoted."""
    return shell_arg(run.location)


def default_export_dir(run: Run, round_: int) -> Path:
    """Where the printed next steps export to: beside the run (in the working directory for a
    run on a URI: people label local files), one folder per round."""
    directory = run.dir
    if directory.name in ("", ".", ".."):  # `--out .`: name the folder beside it, not in it
        directory = directory.resolve()
    base = Path() if run.is_remote else directory.parent
    return base / f"{directory.name}-export" / f"round_{round_:03d}"


def next_steps(run: Run, round_: int) -> str:
    """What `run` prints when it stops for labels: the state and the exact commands, which
    work when followed literally (in the venv the README activates, from the directory `run`
    ran in). The export names Label Studio's document root (the folder above `<run>-export/`),
    so one local-files storage, `<run>-export/`, serves every round of the campaign. When the
    round was exported there already (a partial import), the export would be refused: the
    next step is then to finish labeling that export."""
    p = next(p for p in progress(run) if p.round == round_)
    out = default_export_dir(run, round_)
    where, csv_path = shown_location(run), shell_arg(out / "batch.csv")
    head = [f"round {round_} awaits labels: {p.labeled} of {p.batch} queried samples are "
            "labeled (batch incomplete: nothing trains until every one is).", "Next:"]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        todo = [f"  # round {round_} is exported in {shell_arg(out)}: label the "
                f"{p.batch - p.labeled} samples still missing there\n"
                f"  #   (the label column of {csv_path}, or in Label Studio and export the "
                "project as JSON: docs/labeling.md)"]
    else:
        todo = [f"  autoal-dist export {where} --round {round_} --to {shell_arg(out)} "
                f"--ls-root {shell_arg(out.parent.parent)}",
                f"  # fill the label column of {csv_path}\n"
                "  #   (or label in Label Studio and export the project as JSON: "
                "docs/labeling.md)"]
    return "\n".join([*head, *todo, f"  autoal-dist import {where} --labels {csv_path}",
                      f"  autoal-dist run --resume --out {where}"])


# ---- export ---------------------------------------------------------------------------

def export_batch(run: Run, round_: int | None, load_data: Callable[[], Dataset],
                 out: Path, ls_root: Path | None = None, importable: bool = True) -> str:
    """Write round `round_`'s batch (default: the round awaiting labels) to the new directory
    `out`; returns what was written. Arguments are checked before `load_data()` runs, and the
    files appear all at once (written to a temp folder, then renamed), so a failed export
    leaves nothing behind.

    Images: `images/<id>.png`, `batch.csv` (id,image,label), `label_studio_tasks.json` (image
    URL relative to `ls_root`, default: out's parent; id; round) and `label_studio_config.xml`.
    Flat features have nothing to look at in an image tool: `batch.csv` is then
    id,label,f0,f1,... Labels already imported are filled in; the rest are empty. `importable`:
    the campaign takes people's labels (oracle files), so the next step is `import`.
    """
    rounds = run.journal_rounds()
    if round_ is None:
        round_ = awaiting_round(run)
        if round_ is None:
            raise LabelError(f"--round: no batch of {run.location} awaits labels; pass "
                             f"--round R (journaled rounds: {_span(rounds)})")
    if round_ not in rounds:
        raise LabelError(f"--round: round {round_} has no batch in {run.location}'s "
                         f"journal; journaled rounds: {_span(rounds)}")
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelError(f"--to: {out} already exists and is not an empty directory; "
                         "choose a new one")
    root = Path(ls_root).absolute() if ls_root else out.parent
    if not out.is_relative_to(root):
        raise LabelError(f"--ls-root: {out} is not under {root}; Label Studio serves local files "
                         "only below its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    data = load_data()
    ids = run.round_ids(round_)  # in selection order (most wanted first)
    known = revealed_labels(run, len(data.train_y))[ids]
    labels = ["" if y == UNLABELED else str(y) for y in known]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if data.is_image:
            written = _write_images(tmp, out, root, round_, ids, labels, data)
        else:
            written = _write_features(tmp, ids, labels, data)
        os.chmod(tmp, store.dir_mode())  # mkdtemp's 0700 would hide the folder from others
        os.replace(tmp, out)  # POSIX: replaces `out` if it is an empty directory
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lines = [f"exported round {round_}: {len(ids)} samples to {out} ({', '.join(written)})"]
    if data.is_image:
        lines.append(_storage_note(out, root))
    if importable:
        lines.append(f"label them, then: autoal-dist import {shown_location(run)} --labels "
                     f"{shlex.quote(str(out / 'batch.csv'))}"
                     + (" (or the Label Studio project's JSON export)" if data.is_image else ""))
    else:
        lines.append("this campaign takes its labels from the dataset (oracle simulated): the "
                     "export shows its batch; `import` takes labels only for a campaign started "
                     "with --oracle files")
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


SHOWN_MIN_SIDE = 128  # pixels: an 8x8 digit is a speck on a screen; people need to see it


def scale_for(shape: tuple[int, ...]) -> int:
    """The integer factor that brings an image's short side to at least SHOWN_MIN_SIDE: each
    pixel becomes a k x k block (nearest neighbour), so the exact pixels are every k-th one."""
    return max(1, -(-SHOWN_MIN_SIDE // max(1, min(shape[0], shape[1]))))


def _write_images(tmp: Path, out: Path, root: Path, round_: int, ids: np.ndarray,
                  labels: list[str], data: Dataset) -> list[str]:
    (tmp / "images").mkdir()
    tasks, rows = [], []
    images = data.train_x[ids]  # one read (a stored pool: each row group once)
    k = scale_for(data.input_shape)
    for i, img, label in zip(ids.tolist(), images, labels):
        rel = f"images/{i}.png"
        picture = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        if k > 1:
            picture = picture.resize((picture.width * k, picture.height * k),
                                     Image.Resampling.NEAREST)
        picture.save(tmp / rel)
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
    features = data.train_x[ids]
    rows = [[i, label, *f.tolist()] for i, f, label in zip(ids.tolist(), features, labels)]
    _write_csv(tmp / "batch.csv", ["id", "label", *(f"f{k}" for k in range(n_features))], rows)
    return ["batch.csv with the features (no images: the dataset holds flat features)"]
