"""Label Studio's formats: the project config and tasks `export` writes, the JSON export it reads.

A campaign uses one Label Studio project for every round: each task's data holds the pool id,
the journal round and an image URL that one local-files storage serves (see `storage_path`).
The class a person chose is the `<Choice value>` of the config, i.e. the class index as text,
so reading an export needs nothing but the file and the class count.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from autoal_dist.errors import UserError

LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's URL prefix for served local files
IMAGE = "image"  # the <Image name> (and task data key) of the config export writes
CHOICES = "label"  # the <Choices name>: results of this from_name carry the class
_CONFIG_HINT = (f'a <Choices name="{CHOICES}"> on <Image name="{IMAGE}">, from the '
                "label_studio_config.xml that autoal-dist export wrote")


class ExportError(UserError):
    """A file that is not a usable Label Studio export of this campaign (one line, for the user)."""


def labeling_config(num_classes: int) -> str:
    """The project's labeling interface: the image and one required choice per class."""
    choices = "\n".join(f'    <Choice value="{c}"/>' for c in range(num_classes))
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}"/>\n'
            f'  <Choices name="{CHOICES}" toName="{IMAGE}" choice="single" showInline="true" '
            f'required="true">\n{choices}\n  </Choices>\n</View>\n')


def task(image: Path, root: Path, id_: int, round_: int) -> dict:
    """One task: the image's URL relative to the document root `root`, its id and round."""
    url = LOCAL_FILES_URL + quote(Path(image).relative_to(root).as_posix())
    return {"data": {IMAGE: url, "id": id_, "round": round_}}


def storage_path(out: Path, root: Path) -> Path:
    """The local-files storage path that serves `out`'s images: `out`'s parent, shared by
    every round exported beside it, unless that is the document root itself (Label Studio
    wants a storage strictly below the root); then only `out`."""
    return out if out.parent == root else out.parent


# ---- reading a JSON export -------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """The class people gave one sample: its newest non-cancelled annotation."""

    task: int  # Label Studio's task id, to name it in messages
    id: int
    round: int | None  # None for tasks written before export added it
    label: int


@dataclass
class ExportSummary:
    """What an export holds, per sample: labeled ones become `choices`, the rest are counted."""

    tasks: int = 0
    choices: list[Choice] = field(default_factory=list)
    unlabeled: list[tuple[int, int, int | None]] = field(default_factory=list)  # task, id, round
    skipped: int = 0  # every annotation cancelled (Skip), choice or not
    unannotated: int = 0  # no annotation, or the newest kept one chose nothing


def looks_like_json(text: str) -> bool:
    """A label file is a JSON export when it starts like JSON; a CSV header never does."""
    return text.lstrip()[:1] in ("[", "{")


def read_export(text: str, where: str, num_classes: int) -> ExportSummary:
    """Parse Label Studio's JSON export (Export > JSON) of a project made from
    `labeling_config`. Every task and annotation is checked, so a wrong project, a foreign
    file or a choice outside the classes is refused before anything is used; tasks of one
    sample imported twice are merged, the newest annotation deciding."""
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExportError(f"{where} is not valid JSON (line {e.lineno} column {e.colno}: "
                          f"{e.msg}); export the project as JSON again") from None
    except RecursionError:
        raise ExportError(f"{where} is JSON nested too deeply to be a Label Studio export "
                          "(lists or objects inside each other thousands of levels down); use "
                          "the project's Export > JSON") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ExportError(f"{where} is JSON but not a Label Studio JSON export (expected a list "
                          "of tasks); use the project's Export > JSON")
    if not tasks:
        raise ExportError(f"{where} holds no tasks; import label_studio_tasks.json into the "
                          "project, label, and export again")
    if "annotation_id" in tasks[0] and "annotations" not in tasks[0]:
        raise ExportError(f"{where} is Label Studio's JSON-MIN export; use Export > JSON (with "
                          "annotation history), not JSON-MIN")
    samples: dict[int, _Sample] = {}
    for t in tasks:
        id_, round_, at = _task_data(t, where)
        annotations = t.get("annotations")
        if not isinstance(annotations, list):
            raise ExportError(f"{at} has no annotations list; not a Label Studio JSON export")
        sample = samples.setdefault(id_, _Sample(t["id"], round_))
        if sample.round != round_:
            raise ExportError(f"{at}: id {id_} has round {round_}, another task of it round "
                              f"{sample.round}; the project mixes campaigns")
        for a in annotations:  # cancelled ones too: a wrong config shows in any of them
            sample.annotations.append(_Annotation(_when(a, at), _cancelled(a, at),
                                                  _label(a, at, num_classes), t["id"]))
    summary = ExportSummary(tasks=len(tasks))
    for id_, sample in samples.items():
        kept = [a for a in sample.annotations if not a.cancelled]
        newest = max(kept, key=lambda a: a.when) if kept else None
        if newest is not None:
            tied = {a.label for a in kept if a.when[0] == newest.when[0]}
            if len(tied) > 1:  # the newest time decides; two choices at it decide nothing
                raise ExportError(
                    f"{where} task {newest.task}: id {id_} has annotations updated at the same "
                    f"time ({newest.when[0].isoformat()}) with different choices "
                    f"({', '.join(sorted('none' if x is None else str(x) for x in tied))}); "
                    "which one counts is ambiguous: remove or update one in Label Studio and "
                    "export again")
        if newest is not None and newest.label is not None:
            summary.choices.append(Choice(newest.task, id_, sample.round, newest.label))
            continue
        summary.unlabeled.append((sample.task, id_, sample.round))
        if sample.annotations and newest is None:
            summary.skipped += 1
        else:
            summary.unannotated += 1
    summary.choices.sort(key=lambda c: c.task)
    return summary


class _Annotation(NamedTuple):
    when: tuple[datetime, int]
    cancelled: bool
    label: int | None
    task: int


@dataclass
class _Sample:
    """One pool id's tasks in the export (more than one if its task was imported twice)."""

    task: int  # the first task, to name it in messages
    round: int | None
    annotations: list[_Annotation] = field(default_factory=list)


def _task_data(t: dict, where: str) -> tuple[int, int | None, str]:
    """(pool id, round or None, a name for messages) of one exported task."""
    data, tid = t.get("data"), t.get("id")
    if not isinstance(data, dict) or not _is_int(tid):
        raise ExportError(f"{where}: an entry has no task id and data; not a Label Studio JSON "
                          "export (use the project's Export > JSON)")
    at = f"{where} task {tid}"
    if not _is_int(data.get("id")):
        raise ExportError(f"{at}: data.id {data.get('id')!r} is not a pool id; its tasks were "
                          "not written by autoal-dist export (label_studio_tasks.json)")
    round_ = data.get("round")
    if round_ is not None and not _is_int(round_):
        raise ExportError(f"{at}: data.round {round_!r} is not a round number")
    return data["id"], round_, at


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _cancelled(a: object, at: str) -> bool:
    if not isinstance(a, dict) or not isinstance(a.get("result"), list):
        raise ExportError(f"{at}: an annotation has no result list; not a Label Studio JSON "
                          "export")
    return bool(a.get("was_cancelled"))


def _label(a: dict, at: str, num_classes: int) -> int | None:
    """The class an annotation chose, None if it chose nothing (no result, or an empty
    `choices` list); its results must all come from the config `labeling_config` wrote.
    A cancelled annotation's choice is read (to check it) but never used: `read_export`
    keeps only non-cancelled annotations."""
    found = None
    for r in a["result"]:
        if not isinstance(r, dict) or (r.get("from_name"), r.get("to_name"), r.get("type")) \
                != (CHOICES, IMAGE, "choices"):
            name = (r.get("from_name"), r.get("type")) if isinstance(r, dict) else r
            raise ExportError(f"{at}: annotation {a.get('id')} holds a result {name!r} that is "
                              f"not a class choice; the project must use {_CONFIG_HINT}")
        picked = r.get("value", {}).get("choices") if isinstance(r.get("value"), dict) else None
        if picked == []:  # a choice cleared before submitting (or a skip): no class
            continue
        if not isinstance(picked, list) or len(picked) != 1 or found is not None:
            raise ExportError(f"{at}: annotation {a.get('id')} chose {picked!r}; exactly one "
                              "class per sample is allowed")
        text = picked[0]
        if not (isinstance(text, str) and text.isascii() and text.isdigit()
                and int(text) < num_classes):
            raise ExportError(f"{at}: annotation {a.get('id')} chose {text!r}, not a class of "
                              f"this campaign (allowed 0..{num_classes - 1}); the project must "
                              f"use {_CONFIG_HINT}")
        found = int(text)
    return found


def _when(a: dict, at: str) -> tuple[datetime, int]:
    """Sort key of an annotation: last update (a corrected choice is an update), then id."""
    text = a.get("updated_at") or a.get("created_at")
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"{at}: annotation {a.get('id')} has no valid updated_at / "
                          f"created_at ({text!r}); not a Label Studio JSON export") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    id_ = a.get("id")
    return when, id_ if isinstance(id_, int) and not isinstance(id_, bool) else -1
