"""Label Studio as a client, without Label Studio: exports written the way version 1.23 writes
them (see test_label_studio_live.py for the real server), corrections, resume's mode.

A campaign uses one Label Studio project for every round, so its export holds every round:
`import` takes the newest non-cancelled choice of the rounds awaiting labels, leaves skipped
and unannotated tasks out, and changes a recorded label only with --relabel.
"""
from __future__ import annotations

import json
import re
import shlex
from itertools import count
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from autoal_dist import labeling
from autoal_dist.cli import main, parser
from autoal_dist.labeling import importer as label_import
from autoal_dist.run import Run
from test_bad_inputs import fails_cleanly, snapshot, write

README = Path(__file__).resolve().parent.parent / "README.md"
DOC = README.parent / "docs" / "labeling.md"


def campaign(tmp_path: Path, *extra: str) -> list[str]:
    fast = write(tmp_path, "fast.yaml", "train: {min_steps: 5}\nscore: {mc_samples: 2}\n")
    return ["run", "--quiet", "--init", "10", "--budget", "4", "--rounds", "1", "--epochs", "1",
            "--strategy", "margin", "--seed", "3", "--config", fast, "--oracle", "files", *extra]


class FakeProject:
    """A Label Studio project as its JSON export shows it: tasks imported from
    label_studio_tasks.json, annotations with ids and timestamps in the order they happen."""

    def __init__(self) -> None:
        self.tasks: list[dict] = []
        self._ids, self._clock = count(1), count(1)

    def import_tasks(self, path: Path) -> None:
        for t in json.loads(path.read_text()):
            self.tasks.append({"id": next(self._ids), "annotations": [], "drafts": [],
                               "predictions": [], "data": t["data"], "meta": {}, "project": 1})

    def task(self, id_: int) -> dict:
        return next(t for t in self.tasks if t["data"]["id"] == id_)

    def annotate(self, id_: int, choice: str | None, cancelled: bool = False) -> dict:
        stamp = f"2025-05-01T10:00:{next(self._clock):02d}.000000Z"
        result = [] if choice is None else [{"from_name": "label", "to_name": "image",
                                             "type": "choices", "value": {"choices": [choice]}}]
        a = {"id": next(self._ids), "completed_by": 1, "result": result,
             "was_cancelled": cancelled, "created_at": stamp, "updated_at": stamp}
        self.task(id_)["annotations"].append(a)
        return a

    def update(self, annotation: dict, choice: str) -> None:
        annotation["result"][0]["value"]["choices"] = [choice]
        annotation["updated_at"] = f"2025-05-01T10:01:{next(self._clock):02d}.000000Z"

    def export(self, path: Path) -> str:
        path.write_text(json.dumps(self.tasks, indent=1))
        return str(path)


def export_round(run: Path, out: Path, root: Path) -> list[int]:
    assert main(["export", str(run), "--to", str(out), "--ls-root", str(root)]) == 0
    return [t["data"]["id"] for t in json.loads((out / "label_studio_tasks.json").read_text())]


def recorded(run: Path) -> dict[int, int]:
    t = labeling.read_labels(Run.at(run))
    return dict(zip(t.column("id").to_pylist(), t.column("label").to_pylist()))


def test_one_project_for_the_whole_campaign(tmp_path, capsys):
    root, run = tmp_path, tmp_path / "cells"
    assert main([*campaign(tmp_path, "--local"), "--out", str(run)]) == 0
    capsys.readouterr()
    ls = FakeProject()
    ids = export_round(run, root / "cells-export" / "round_000", root)
    assert "local-files storage path " + str(root / "cells-export") in capsys.readouterr().out
    ls.import_tasks(root / "cells-export" / "round_000" / "label_studio_tasks.json")
    a, b, fixed, skipped, cancelled, left_out, *rest = ids
    chosen = {a: 1, b: 2, fixed: 4} | {i: 3 for i in rest}
    ls.annotate(fixed, "9")  # then corrected by a second annotation: the newest one counts
    for i, y in chosen.items():
        ls.annotate(i, str(y))
    ls.annotate(skipped, None, cancelled=True)
    ls.annotate(cancelled, "7", cancelled=True)  # a choice, then Skip: not a label

    assert main(["import", str(run), "--labels", ls.export(tmp_path / "e1.json")]) == 0
    out = capsys.readouterr().out
    assert "10 tasks, 7 labeled, 2 skipped, 1 without a choice" in out
    assert "imported 7 new labels" in out and "3 still missing" in out
    assert recorded(run) == chosen
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0  # stays --local
    assert "round 0 awaits labels: 7 of 10" in capsys.readouterr().out

    ls.annotate(skipped, "0")  # people come back to what they skipped
    ls.annotate(cancelled, "5")
    ls.annotate(left_out, "6")
    chosen |= {skipped: 0, cancelled: 5, left_out: 6}
    assert main(["import", str(run), "--labels", ls.export(tmp_path / "e2.json")]) == 0
    assert "imported 3 new labels (7 were already recorded)" in capsys.readouterr().out
    assert recorded(run) == chosen
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "round 1 awaits labels: 0 of 4" in printed
    export_cmd = next(line for line in printed.splitlines() if "autoal-dist export" in line)
    assert main(shlex.split(export_cmd)[1:]) == 0  # the printed command: same root, same storage
    round1 = root / "cells-export" / "round_001"
    tasks = json.loads((round1 / "label_studio_tasks.json").read_text())
    assert tasks[0]["data"]["image"] == \
        f"/data/local-files/?d=cells-export/round_001/images/{tasks[0]['data']['id']}.png"
    assert {t["data"]["round"] for t in tasks} == {1}
    ls.import_tasks(round1 / "label_studio_tasks.json")
    for t in tasks:
        ls.annotate(t["data"]["id"], "3")
        chosen[t["data"]["id"]] = 3
    ls.update(ls.task(a)["annotations"][0], "8")  # a round-0 label corrected after training

    e3 = ls.export(tmp_path / "e3.json")
    assert main(["import", str(run), "--labels", e3]) == 0  # round 0's tasks are ignored
    out = capsys.readouterr().out
    assert "imported 4 new labels" in out
    assert "10 of rounds already labeled ignored (1 differ" in out
    assert recorded(run) == chosen and not label_import.read_history(Run.at(run)).num_rows
    before = (run / "metrics.parquet").read_bytes()
    assert main(["import", str(run), "--labels", e3, "--relabel"]) == 0
    assert f"id {a}: 1 -> 8" in capsys.readouterr().out
    chosen[a] = 8
    assert recorded(run) == chosen
    history = label_import.read_history(Run.at(run)).to_pylist()
    assert [(h["id"], h["round"], h["old_label"], h["new_label"], h["trained_through"],
             h["source"]) for h in history] == [(a, 0, 1, 8, 0, e3)]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", history[0]["changed_at"])
    assert (run / "metrics.parquet").read_bytes() == before  # round 0 chose round 1: kept

    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0  # trains the final round
    assert pq.read_table(run / "metrics.parquet").column("round").to_pylist() == [0, 1]
    ls.update(ls.task(b)["annotations"][0], "0")  # a correction after the campaign ended
    assert main(["import", str(run), "--labels", ls.export(tmp_path / "e4.json"),
                 "--relabel"]) == 0
    assert "run --resume retrains final round 1" in capsys.readouterr().out
    assert pq.read_table(run / "metrics.parquet").column("round").to_pylist() == [0]
    assert label_import.read_history(Run.at(run)).column("trained_through").to_pylist() == [0, 1]
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    assert pq.read_table(run / "metrics.parquet").column("round").to_pylist() == [0, 1]
    chosen[b] = 0
    assert recorded(run) == chosen
    assert sorted(chosen) == Run.at(run).labeled_ids().tolist()


def test_csv_relabel_is_recorded_and_repeats_as_a_no_op(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*campaign(tmp_path, "--local"), "--out", str(run)]) == 0
    ids = Run.at(run).journal().column("id").to_pylist()
    first = write(tmp_path, "a.csv", "id,label\n" + "".join(f"{i},1\n" for i in ids))
    assert main(["import", str(run), "--labels", first]) == 0
    fix = write(tmp_path, "fix.csv", f"id,label\n{ids[0]},2\n{ids[1]},1\n")
    before = snapshot(run)
    err = fails_cleanly(capsys, ["import", str(run), "--labels", fix], "already has label 1")
    assert "--relabel" in err and snapshot(run) == before
    for _ in range(2):  # the second time nothing differs: no new history row
        assert main(["import", str(run), "--labels", fix, "--relabel"]) == 0
    assert recorded(run)[ids[0]] == 2
    assert label_import.read_history(Run.at(run)).select(["id", "old_label", "new_label",
                                              "trained_through"]).to_pylist() == \
        [{"id": ids[0], "old_label": 1, "new_label": 2, "trained_through": -1}]


# ---- bad exports: one line, exit 2, nothing recorded ------------------------------------

@pytest.fixture(scope="module")
def awaiting(tmp_path_factory) -> tuple[Path, Path]:
    """A local oracle-files run awaiting round 0, and its exported tasks."""
    d = tmp_path_factory.mktemp("bad-exports")
    run = d / "run"
    assert main([*campaign(d, "--local"), "--out", str(run)]) == 0
    export_round(run, d / "export", d)
    return run, d / "export" / "label_studio_tasks.json"


def _export(tasks_file: Path, edit) -> list[dict]:
    """The export of a project where the first task got one annotation, changed by `edit`."""
    ls = FakeProject()
    ls.import_tasks(tasks_file)
    first = ls.tasks[0]["data"]["id"]
    ls.annotate(first, "1")
    return edit(ls.tasks) or ls.tasks


def _result(**changes):
    def edit(tasks):
        tasks[0]["annotations"][0]["result"][0].update(changes)
    return edit


def _tied(first: str, second: str):
    """Two annotations of the first task, updated at the same time, choosing `first` and
    `second` in file order: whichever order, the choice is ambiguous."""
    def edit(tasks):
        a = tasks[0]["annotations"][0]
        a["result"][0]["value"] = {"choices": [first]}
        b = json.loads(json.dumps(a))
        b["id"], b["result"][0]["value"] = a["id"] + 1000, {"choices": [second]}
        tasks[0]["annotations"].append(b)
    return edit


def _data(task: int = 0, **changes):
    def edit(tasks):
        tasks[task]["data"].update(changes)
    return edit


BAD_EXPORTS = [
    ("wrong-project-config", lambda f: _export(f, _result(from_name="sentiment")), "sentiment"),
    ("wrong-choice-values", lambda f: _export(f, _result(value={"choices": ["Cat"]})),
     "chose 'Cat', not a class of this campaign (allowed 0..9)"),
    ("choice-outside-classes", lambda f: _export(f, _result(value={"choices": ["10"]})),
     "chose '10'"),
    ("two-choices", lambda f: _export(f, _result(value={"choices": ["1", "2"]})),
     "exactly one class"),
    ("id-not-in-pool", lambda f: _export(f, _data(id=100_000)), "id 100000 is not a sample"),
    ("unannotated-task-not-in-pool", lambda f: _export(f, _data(1, id=100_000)),
     "id 100000 is not a sample"),
    ("task-without-pool-id", lambda f: _export(f, _data(id=None)), "data.id None"),
    ("round-of-another-campaign", lambda f: _export(f, _data(round=3)),
     "another campaign"),
    ("not-a-task-list", lambda f: {"tasks": []}, "not a Label Studio JSON export"),
    ("list-of-numbers", lambda f: [1, 2], "not a Label Studio JSON export"),
    ("json-min", lambda f: [{"image": "x", "id": 1, "label": "1", "annotation_id": 4}],
     "JSON-MIN"),
    ("no-tasks", lambda f: [], "holds no tasks"),
    ("no-annotations-key", lambda f: [{"id": 1, "data": {"id": 1}}], "no annotations list"),
    ("tied-choices", lambda f: _export(f, _tied("1", "2")),
     "with different choices (1, 2); which one counts is ambiguous"),
    ("tied-choices-other-order", lambda f: _export(f, _tied("2", "1")),
     "with different choices (1, 2); which one counts is ambiguous"),
]


@pytest.mark.parametrize("make, names", [c[1:] for c in BAD_EXPORTS],
                         ids=[c[0] for c in BAD_EXPORTS])
def test_bad_export(awaiting, tmp_path, capsys, make, names):
    run, tasks_file = awaiting
    path = write(tmp_path, "export.json", json.dumps(make(tasks_file)))
    before = snapshot(run)
    fails_cleanly(capsys, ["import", str(run), "--labels", path], names)
    assert snapshot(run) == before


def test_label_studio_csv_export_is_refused(awaiting, tmp_path, capsys):
    """Label Studio's CSV (like JSON-MIN) puts its own task id in the id column."""
    run, _ = awaiting
    path = write(tmp_path, "export.csv", "annotation_id,annotator,created_at,id,image,label,"
                 "lead_time,round,updated_at\n7,1,2025-05-01,3,x.png,1,2.5,0,2025-05-01\n")
    before = snapshot(run)
    fails_cleanly(capsys, ["import", str(run), "--labels", path], "Label Studio's CSV export")
    assert snapshot(run) == before


def test_deeply_nested_json_is_refused(awaiting, tmp_path, capsys):
    run, _ = awaiting
    path = write(tmp_path, "export.json", "[" * 200_000 + "]" * 200_000)
    before = snapshot(run)
    fails_cleanly(capsys, ["import", str(run), "--labels", path], "nested too deeply")
    assert snapshot(run) == before


def test_truncated_json_is_refused(awaiting, tmp_path, capsys):
    run, _ = awaiting
    path = write(tmp_path, "export.json", '[{"id": 1, "annotations": [')
    before = snapshot(run)
    fails_cleanly(capsys, ["import", str(run), "--labels", path], "not valid JSON (line 1")
    assert snapshot(run) == before


# ---- resume keeps the mode the run was started with ------------------------------------

def test_resume_keeps_local_mode_unless_told(tmp_path, monkeypatch, capsys):
    from autoal_dist.execution import OnRay

    run = tmp_path / "run"
    assert main([*campaign(tmp_path, "--local"), "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["mode"] == "local"

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(OnRay, "scorer", no_ray)
    assert main(["run", "--resume", "--out", str(run), "--quiet", "--rounds", "2"]) == 0
    # an explicit flag switches it (recorded; Ray itself waits: the batch awaits labels)
    assert main(["run", "--resume", "--out", str(run), "--quiet", "--ray"]) == 0
    assert json.loads((run / "config.json").read_text())["mode"] == "ray"
    with pytest.raises(SystemExit, match="2"):  # argparse: not both
        main(["run", "--resume", "--out", str(run), "--local", "--ray"])


# ---- README: every labeling command is copyable and parses -----------------------------

def _labeling_section(text: str) -> str:
    start = text.index("## Labeling with people")
    return text[start:text.index("\n## ", start + 1)]


@pytest.mark.parametrize("source", ["README", "docs/labeling.md"])
def test_labeling_commands_are_copyable(source):
    text = README.read_text() if source == "README" else DOC.read_text()
    if source == "README":
        text = _labeling_section(text)
    blocks = re.findall(r"^( *)```(?:bash|sh)\n(.*?)^\1```$", text, re.S | re.M)
    assert blocks
    for indent, body in blocks:
        assert indent == "", "an indented code block does not copy from the raw file"
        for line in body.replace("\\\n", " ").splitlines():
            if line.startswith("autoal-dist "):
                parser().parse_args(shlex.split(line)[1:])  # raises SystemExit if it is wrong


# ---- trained_through with several corrections of one id ----------------------------------

def test_trained_through_follows_every_correction_of_an_id(tmp_path):
    """#27's repro: round 0 trains with the true label; 3 -> 8, then 8 -> 3 with nothing trained
    in between (no model used 8: -1), then 3 -> 5 (round 0 did use 3), then, after round 1
    trained with 5, 5 -> 3."""
    run = tmp_path / "run"
    assert main([*campaign(tmp_path, "--local"), "--out", str(run)]) == 0
    truth = Run.at(run).pool().column("label").to_numpy()
    ids = Run.at(run).round_ids(0).tolist()
    right = write(tmp_path, "right.csv", "id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    assert main(["import", str(run), "--labels", right]) == 0
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0  # round 0 trains
    a, t = ids[0], int(truth[ids[0]])
    first, second = (t + 1) % 10, (t + 2) % 10

    def relabel(label: int, name: str) -> None:
        path = write(tmp_path, name, f"id,label\n{a},{label}\n")
        assert main(["import", str(run), "--labels", path, "--relabel"]) == 0

    relabel(first, "one.csv")
    relabel(t, "two.csv")
    relabel(second, "three.csv")
    batch = Run.at(run).round_ids(1).tolist()  # round 1's batch, labeled: round 1 trains
    rest = write(tmp_path, "rest.csv", "id,label\n" + "".join(f"{i},{truth[i]}\n" for i in batch))
    assert main(["import", str(run), "--labels", rest]) == 0
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    relabel(t, "four.csv")
    history = label_import.read_history(Run.at(run)).to_pylist()
    assert [(h["old_label"], h["new_label"], h["trained_through"]) for h in history] == [
        (t, first, 0), (first, t, -1), (t, second, 0), (second, t, 1)]


def test_trained_through_rule():
    tt = label_import.trained_through
    assert tt([0, 1, 2], 1, 3, []) == 2  # never corrected: every trained round from its own
    assert tt([0, 1, 2], 3, 3, []) == -1  # queried after the last trained round
    # 3 -> 8 kept rounds 0..2 (round 3 then trained with 8): 8 was used by round 3 only
    assert tt([0, 1, 2, 3], 0, 8, [(3, 8, 2)]) == 3
    assert tt([0, 1, 2, 3], 0, 3, [(3, 8, 2), (8, 5, 3)]) == 2  # 3 itself: rounds 0..2
