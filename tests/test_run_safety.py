"""What keeps a run directory safe beyond the lock (#18): files follow the umask, a killed
round's Ray Train directory is removed on resume, a moved dataset resumes, the flags of a
resume are compared value by value, a resume of an unlabeled batch stops before Ray, and the
labeling loop's printed next steps can be followed literally. No Ray, no real training past
a few steps."""
from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest

from autoal_dist import cli, labeling, store
from autoal_dist.cli import main
from autoal_dist.run import Run, layout, run_lock
from conftest import fails_cleanly, snapshot

FAST = "train: {min_steps: 2, epochs: 1}\nscore: {mc_samples: 2}\n"
FILES = ["run", "--local", "--quiet", "--init", "20", "--budget", "10", "--rounds", "2",
         "--oracle", "files"]


def fast(tmp_path: Path) -> str:
    path = tmp_path / "fast.yaml"
    path.write_text(FAST)
    return str(path)


def npz(path: Path, flip: bool = False) -> str:
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 2
    np.savez(path, train_images=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8),
             train_labels=(1 - labels) if flip else labels,
             test_images=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
             test_labels=np.arange(20) % 2)
    return f"npz:{path}"


def label(run: Path, ids) -> Path:
    truth = Run.at(run).pool().column("label").to_numpy()
    path = run.parent / f"labels-{len(list(run.parent.glob('labels-*')))}.csv"
    path.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    return path


# ---- files follow the umask -----------------------------------------------------------

@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_atomic_writes_follow_the_umask(tmp_path, umask_027):
    assert store.current_umask() == 0o027
    store.write_text(tmp_path / "a.txt", "x")
    store.write_json(tmp_path / "sub" / "b.json", {"a": 1})
    Run.at(tmp_path).write_round(0, [1, 2], "init")
    for p in (tmp_path / "a.txt", tmp_path / "sub" / "b.json", Run.at(tmp_path).round_path(0)):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p  # not mkstemp's 0600
    os.umask(0o002)
    store.write_text(tmp_path / "a.txt", "y")  # a rewrite takes the umask of now
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664


def test_a_run_and_its_export_follow_the_umask(tmp_path, capsys, umask_027):
    run = tmp_path / "run"
    assert main([*FILES, "--out", str(run)]) == 0
    for p in run.rglob("*"):  # .lock too: a group member must be able to lock the run
        want = 0o750 if p.is_dir() else 0o640
        assert stat.S_IMODE(p.stat().st_mode) == want, p
    out = tmp_path / "export" / "round_000"
    assert main(["export", str(run), "--to", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # not mkdtemp's 0700
    assert stat.S_IMODE((out / "batch.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "images").stat().st_mode) == 0o750


def test_a_group_member_can_lock_a_run_under_umask_002(tmp_path):
    old = os.umask(0o002)
    try:
        with run_lock(str(tmp_path / "run"), "a group's run"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "run" / ".lock").stat().st_mode) == 0o664


# ---- a killed round's Ray Train directory ---------------------------------------------------

def test_resume_removes_a_killed_rounds_train_directory(tmp_path, capsys):
    run = tmp_path / "run"
    sim = ["run", "--local", "--quiet", "--init", "20", "--budget", "10", "--config",
           fast(tmp_path)]
    assert main([*sim, "--rounds", "1", "--out", str(run)]) == 0
    train = run / layout.TRAIN
    for name in ("round002/checkpoint_000000", "round002-3f2a/local", "notes"):
        (train / name).mkdir(parents=True)
        (train / name / "state.pt").write_bytes(b"x" * 10)
    assert main(["run", "--resume", "--out", str(run), "--rounds", "2", "--quiet"]) == 0
    assert sorted(p.name for p in train.iterdir()) == ["notes"]  # only Train's run names go
    assert [r["round"] for r in Run.at(run).metrics()] == [0, 1, 2]


def test_remove_stale_training_on_an_object_store(s3_bucket, tmp_path):
    from autoal_dist import remote

    uri = f"{s3_bucket}/run"
    d = remote.RemoteDir.open(uri)
    for rel in ("train/round004/checkpoint_000001/s.pt", "train/round004-x/a", "train/keep/b",
                "config.json"):
        with d.fs.open_output_stream(f"{d.root}/{rel}") as f:
            f.write(b"x")
    with remote.opened(uri) as staged:
        removed = Run(staged).remove_stale_training()
    assert sorted(removed) == [f"{uri}/train/round004", f"{uri}/train/round004-x"]
    assert d.files() == ["config.json", "train/keep/b"]


# ---- resume: flags, moved data ----------------------------------------------------------

def test_resume_flags_equal_to_stored_values_are_accepted(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*FILES, "--epochs", "40", "--candidates", "margin,entropy", "--out",
                 str(run)]) == 0
    before = snapshot(run)
    assert main(["run", "--resume", "--out", str(run), "--local", "--quiet", "--epochs", "40",
                 "--candidates", "margin,entropy", "--init", "20", "--strategy", "entropy",
                 "--oracle", "files", "--seed", "0"]) == 0
    assert "batch incomplete" in capsys.readouterr().out
    assert snapshot(run) == before
    err = fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--epochs", "5"],
                         "--epochs: 5 differs from the campaign's stored value 40")
    assert "--train" not in err
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--candidates", "margin"],
                   "--candidates")
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--name", "other"], "--name")
    assert snapshot(run) == before


def test_resume_of_an_unlabeled_batch_stops_before_ray(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main([*FILES, "--out", str(run)]) == 0
    assert main(["import", str(run), "--labels",
                 str(label(run, Run.at(run).journal().column("id").to_numpy()[:5]))]) == 0

    from autoal_dist.execution import OnRay

    def no_ray(*a, **k):
        raise AssertionError("Ray started for a batch that cannot train")

    for step in ("start", "scorer", "jobs"):  # whatever starts Ray in the ray mode
        monkeypatch.setattr(OnRay, step, no_ray, raising=False)
    capsys.readouterr()
    assert main(["run", "--resume", "--out", str(run), "--ray"]) == 0  # --ray: would start Ray
    out = capsys.readouterr().out
    assert "round 0 awaits labels: 5 of 20" in out and "batch incomplete" in out
    assert not (run / layout.METRICS_FILE).exists()


def test_resume_and_export_accept_a_moved_dataset_with_the_same_data(tmp_path, capsys):
    old, new, other = tmp_path / "old.npz", tmp_path / "moved.npz", tmp_path / "other.npz"
    run = tmp_path / "run"
    assert main([*FILES, "--dataset", npz(old), "--out", str(run)]) == 0
    old.rename(new)
    npz(other, flip=True)
    before = snapshot(run)
    err = fails_cleanly(capsys, ["run", "--resume", "--out", str(run)], "old.npz")  # gone
    assert "if the data moved, give its new place with --dataset" in err
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--dataset", f"npz:{other}"],
                   "is not the campaign's")
    fails_cleanly(capsys, ["export", str(run), "--to", str(tmp_path / "x")], "old.npz")
    assert snapshot(run) == before and not (tmp_path / "x").exists()
    # export reads the moved data without touching the run directory
    assert main(["export", str(run), "--to", str(tmp_path / "x"), "--dataset",
                 f"npz:{new}"]) == 0
    assert snapshot(run) == before
    # resume accepts it and records where the data is now
    assert main(["run", "--resume", "--out", str(run), "--dataset", f"npz:{new}"]) == 0
    assert Run.at(run).meta("t")["config"]["dataset"] == f"npz:{new}"
    assert main(["export", str(run), "--to", str(tmp_path / "y")]) == 0  # the stored spec


def _fake_medmnist(root: Path, flip: bool = False) -> None:
    """pathmnist.npz in MedMNIST's layout (9 classes, 28x28x3), small."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    y = (np.arange(60) % 9)[:, None]
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
              for s, n in (("train", 60), ("val", 10), ("test", 20))}
    arrays |= {"train_labels": (8 - y) if flip else y, "val_labels": (np.arange(10) % 9)[:, None],
               "test_labels": (np.arange(20) % 9)[:, None]}
    np.savez(root / "pathmnist.npz", **arrays)


def test_resume_accepts_a_moved_data_root(tmp_path, capsys):
    pytest.importorskip("medmnist")
    old, new, other = tmp_path / "data", tmp_path / "data-moved", tmp_path / "data-other"
    _fake_medmnist(old)
    _fake_medmnist(other, flip=True)
    run = tmp_path / "run"
    assert main([*FILES, "--dataset", "medmnist:pathmnist", "--data-root", str(old), "--out",
                 str(run)]) == 0
    old.rename(new)
    before = snapshot(run)
    fails_cleanly(capsys, ["run", "--resume", "--out", str(run), "--data-root", str(other)],
                   "is not the campaign's")
    assert snapshot(run) == before
    assert main(["run", "--resume", "--out", str(run), "--data-root", str(new)]) == 0
    assert Run.at(run).meta("t")["config"]["data_root"] == str(new)


# ---- the labeling loop ---------------------------------------------------------------------

def test_partial_imports_count_and_the_next_steps_work_literally(tmp_path, capsys,
                                                                 monkeypatch):
    """Follow what `run` prints, word for word, from the directory it ran in."""
    monkeypatch.chdir(tmp_path)
    assert main([*FILES, "--out", "cells"]) == 0
    printed = capsys.readouterr().out
    export = next(ln.strip() for ln in printed.splitlines() if "autoal-dist export" in ln)
    assert main(shlex.split(export)[1:]) == 0  # the export command, as printed
    batch = tmp_path / "cells-export" / "round_000" / "batch.csv"
    rows = batch.read_text().splitlines()
    truth = Run.at(Path("cells")).pool().column("label").to_numpy()

    def fill(n: int) -> None:  # an annotator fills the first n rows of batch.csv
        head, body = rows[0], rows[1:]
        batch.write_text("\n".join([head, *(f"{r.split(',')[0]},{r.split(',')[1]},"
                                            f"{truth[int(r.split(',')[0])] if k < n else ''}"
                                            for k, r in enumerate(body))]) + "\n")

    fill(5)
    capsys.readouterr()
    assert main(["import", "cells", "--labels", str(batch)]) == 0
    out = capsys.readouterr().out
    assert "imported 5 new labels (0 were already recorded)" in out, out
    assert "round 0: 5 of 20 labeled; 15 still missing" in out
    # resume: batch incomplete; the printed steps no longer export into the existing folder
    assert main(["run", "--resume", "--out", "cells"]) == 0
    printed = capsys.readouterr().out
    assert "5 of 20" in printed and "batch incomplete" in printed
    assert "autoal-dist export" not in printed and "round_000" in printed
    imp = next(ln.strip() for ln in printed.splitlines() if "autoal-dist import" in ln)
    fill(12)
    assert main(shlex.split(imp)[1:]) == 0
    out = capsys.readouterr().out
    assert "imported 7 new labels (5 were already recorded)" in out, out
    fill(20)
    assert main(shlex.split(imp)[1:]) == 0
    out = capsys.readouterr().out
    assert "imported 8 new labels (12 were already recorded)" in out, out
    assert "every queried sample is labeled" in out
    resume = out.strip().splitlines()[-1].split("continue: ", 1)[1]
    assert shlex.split(resume)[:4] == ["autoal-dist", "run", "--resume", "--out"]


def test_next_steps_of_a_run_in_the_working_directory_are_not_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "-odd"
    Run.at(run).write_round(0, [1, 2], "init")
    steps = labeling.next_steps(Run.at(Path("-odd")), 0)
    assert "--to ./-odd-export/round_000" in steps and "import ./-odd " in steps
    assert labeling.default_export_dir(Run.at(Path(".")), 0) == tmp_path.parent / \
        f"{tmp_path.name}-export" / "round_000"


def test_run_help_shows_the_config_defaults_and_what_local_moves(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 20)", "(default: 8)", "default: entropy", "(default: 40)",
                    "default: simulated", "default: auto"):
        assert default in text, default
    assert "scoring AND training" in text
    assert cli.parser().parse_args(["run"]).init is None  # flags stay None: config precedence


def test_label_studio_empty_choices_and_cancelled_choices_are_no_label(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert main([*FILES, "--out", str(run)]) == 0
    ids = Run.at(run).journal().column("id").to_numpy()[:4].tolist()
    truth = Run.at(run).pool().column("label").to_numpy()

    def ann(k: int, choices, cancelled=False, when="2025-01-01T00:00:00Z") -> dict:
        result = [{"from_name": "label", "to_name": "image", "type": "choices",
                   "value": {"choices": choices}}]
        return {"id": k, "result": result, "was_cancelled": cancelled, "updated_at": when}

    tasks = [
        {"id": 1, "data": {"id": ids[0], "round": 0},
         "annotations": [ann(1, [str(truth[ids[0]])])]},
        {"id": 2, "data": {"id": ids[1], "round": 0}, "annotations": [ann(2, [])]},  # cleared
        {"id": 3, "data": {"id": ids[2], "round": 0},  # chose, then skipped: not a label
         "annotations": [ann(3, [str(truth[ids[2]])], cancelled=True)]},
        {"id": 4, "data": {"id": ids[3], "round": 0},  # a choice, then a newer empty one
         "annotations": [ann(4, ["1"]), ann(5, [], when="2025-01-02T00:00:00Z")]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    capsys.readouterr()
    assert main(["import", str(run), "--labels", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 tasks, 1 labeled, 1 skipped, 2 without a choice" in out, out
    assert "imported 1 new labels" in out
    labels = labeling.read_labels(Run.at(run))
    assert labels.column("id").to_pylist() == [ids[0]]


@pytest.mark.slow
def test_a_run_stored_before_a_reward_change_resumes_with_its_own_search(tmp_path):
    """#25 made `autoal.reward: gain` the default, then `eer`; a config.json written before the
    key existed ran the loss-rank search, one written while `gain` was the default stores it,
    and resuming either must not switch searches mid-campaign."""
    import json

    run = tmp_path / "old"
    assert main(["run", "--strategy", "autoal", "--init", "20", "--budget", "10", "--rounds", "1",
                 "--epochs", "1", "--local", "--quiet", "--out", str(run)]) == 0
    path = run / layout.CONFIG_FILE
    meta = json.loads(path.read_text())
    assert meta["config"]["autoal"]["reward"] == "eer"  # a new run stores the new default
    meta["config"]["autoal"]["reward"] = "gain"
    path.write_text(json.dumps(meta))
    assert Run.at(run).meta("--out")["config"]["autoal"]["reward"] == "gain"
    del meta["config"]["autoal"]["reward"]
    path.write_text(json.dumps(meta))
    assert Run.at(run).meta("--out")["config"]["autoal"]["reward"] == "loss_rank"
    assert meta["config"]["autoal"]["cold_per_class"] == 5.0  # stored by the new run
    del meta["config"]["autoal"]["cold_per_class"]
    path.write_text(json.dumps(meta))
    assert Run.at(run).meta("--out")["config"]["autoal"]["cold_per_class"] == 0.0
    assert meta["config"]["autoal"]["cold_evidence"] is False
    del meta["config"]["autoal"]["cold_evidence"]
    path.write_text(json.dumps(meta))
    assert Run.at(run).meta("--out")["config"]["autoal"]["cold_evidence"] is True


# ---- a SIGKILLed Ray-mode driver ------------------------------------------------------------

def _orphan_agents() -> list[int]:
    from autoal_dist.ray_cluster import orphaned_agents

    return [pid for pid, _, _ in orphaned_agents()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_next_run_stops_what_a_killed_ray_run_left_behind(tmp_path):
    """SIGKILL of a Ray-mode driver leaves its node's dashboard and runtime-env agents behind
    (re-parented to init, deaf to SIGTERM); the next run with a private Ray stops them and
    says so."""
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = [sys.executable, "-m", "autoal_dist", "run", "--ray", "--dataset", "digits",
           "--epochs", "2"]
    before = set(_orphan_agents())
    p = subprocess.Popen([*run, "--rounds", "3", "--out", str(tmp_path / "a")], env=env,
                         stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    for line in p.stderr:  # killed mid-round, with its Ray up
        if "training on" in line:
            break
    time.sleep(2)
    p.kill()
    p.wait()
    time.sleep(2)
    left = set(_orphan_agents()) - before
    done = subprocess.run([*run, "--rounds", "0", "--quiet", "--out", str(tmp_path / "b")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if left:
        assert "a killed run left behind" in done.stderr
    assert not left & set(_orphan_agents())
