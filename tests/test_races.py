"""Two real processes on one run directory (#18): the run lock makes the second writer fail in
one line naming the holder, so no label is silently lost and two campaigns never interleave.

Each process imports the CLI first and then waits at a barrier (a file), so both reach the
contested step together rather than a process start-up apart.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from autoal_dist.cli import main
from autoal_dist.labeling import read_labels
from autoal_dist.run import Run, layout

# Says it is ready (the package imported), waits for the barrier file, then runs the CLI.
AT_BARRIER = """
import sys, time
from pathlib import Path
from autoal_dist.cli import main
Path(sys.argv[1]).touch()
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
sys.exit(main(sys.argv[3:]))
"""


def start(barrier: Path, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
    start.count = getattr(start, "count", 0) + 1
    ready = barrier.with_name(f"{barrier.name}.ready{start.count}")
    return subprocess.Popen([sys.executable, "-c", AT_BARRIER, str(ready), str(barrier), *argv],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def release(barrier: Path, procs: list[subprocess.Popen]) -> None:
    """Open the barrier once every process has imported the package (or one has died)."""
    deadline = time.monotonic() + 180
    while len(list(barrier.parent.glob(f"{barrier.name}.ready*"))) < len(procs):
        assert time.monotonic() < deadline, "processes did not start"
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    barrier.touch()


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        out.append((p.returncode, stdout, stderr))
    return out


def lock_error(stderr: str) -> bool:
    """The one line the second writer gets: the holder named (command and pid)."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    return (stderr.count("autoal-dist: error:") == 1 and last.startswith("autoal-dist: error:")
            and "in use by 'autoal-dist" in last and "pid " in last)


def test_two_imports_at_once_lose_no_label(tmp_path):
    run = tmp_path / "run"
    assert main(["run", "--local", "--quiet", "--oracle", "files", "--init", "20", "--budget",
                 "10", "--rounds", "2", "--out", str(run)]) == 0
    ids = Run.at(run).journal().column("id").to_numpy()
    truth = Run.at(run).pool().column("label").to_numpy()
    files = []
    for k, half in enumerate((ids[:10], ids[10:])):
        path = tmp_path / f"half{k}.csv"
        path.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in half))
        files.append(path)
    barrier = tmp_path / "go"
    procs = [start(barrier, ["import", str(run), "--labels", str(f)]) for f in files]
    release(barrier, procs)
    results = finish(procs)
    for (code, stdout, stderr), f in zip(results, files):
        if code == 0:
            assert "imported 10 new labels" in stdout, stdout
            continue
        assert code == 2 and lock_error(stderr), (code, stderr)
        assert main(["import", str(run), "--labels", str(f)]) == 0  # retrying succeeds
    labels = read_labels(Run.at(run))
    got = dict(zip(labels.column("id").to_pylist(), labels.column("label").to_pylist()))
    assert got == {int(i): int(truth[i]) for i in ids}  # all 20, none lost


# Imports each label file in turn; a lock refusal (exit 2) is retried until it succeeds.
IMPORT_EACH = """
import contextlib, io, sys, time
from pathlib import Path
from autoal_dist.cli import main
Path(sys.argv[1]).touch()
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.002)
refused = 0
for f in sys.argv[4:]:
    while True:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["import", sys.argv[3], "--labels", f])
        if code == 0:
            break
        assert code == 2 and "in use by 'autoal-dist import'" in err.getvalue(), err.getvalue()
        refused += 1
        time.sleep(0.001)
print(refused)
"""


def test_two_processes_importing_label_by_label_lose_no_label(tmp_path):
    """Twenty one-row imports from each of two processes, interleaved: every read-merge-write
    of the labels store runs under the lock, so all 20 labels are recorded."""
    run = tmp_path / "run"
    assert main(["run", "--local", "--quiet", "--oracle", "files", "--init", "20", "--budget",
                 "10", "--rounds", "2", "--out", str(run)]) == 0
    ids = Run.at(run).journal().column("id").to_numpy()
    truth = Run.at(run).pool().column("label").to_numpy()
    barrier = tmp_path / "go"
    procs = []
    for k, half in enumerate((ids[:10], ids[10:])):
        files = []
        for i in half:
            path = tmp_path / f"p{k}-{i}.csv"
            path.write_text(f"id,label\n{i},{truth[i]}\n")
            files.append(str(path))
        ready = barrier.with_name(f"{barrier.name}.ready-each{k}")
        procs.append(subprocess.Popen([sys.executable, "-c", IMPORT_EACH, str(ready),
                                       str(barrier), str(run), *files],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    release(barrier, procs)
    for code, _, stderr in finish(procs):
        assert code == 0, stderr
    labels = read_labels(Run.at(run))
    got = dict(zip(labels.column("id").to_pylist(), labels.column("label").to_pylist()))
    assert got == {int(i): int(truth[i]) for i in ids}  # all 20, none lost


@pytest.mark.slow
def test_two_fresh_runs_on_one_out_one_runs_the_other_is_refused(tmp_path):
    out = tmp_path / "run"
    fast = tmp_path / "fast.yaml"
    fast.write_text("train: {min_steps: 30, epochs: 1}\nscore: {mc_samples: 2}\n")
    common = ["run", "--local", "--quiet", "--init", "20", "--budget", "10", "--rounds", "3",
              "--config", str(fast), "--out", str(out)]
    barrier = tmp_path / "go"
    procs = [start(barrier, [*common, "--strategy", s]) for s in ("entropy", "margin")]
    release(barrier, procs)
    results = finish(procs)
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = next(k for k, (code, _, _) in enumerate(results) if code == 0)
    loser = results[1 - winner]
    assert lock_error(loser[2]), loser[2]
    strategy = ("entropy", "margin")[winner]
    config = json.loads((out / layout.CONFIG_FILE).read_text())["config"]
    assert config["strategy"] == strategy
    journal = Run.at(out).journal()
    rounds = journal.column("round").to_numpy()
    assert set(journal.column("strategy").to_numpy(zero_copy_only=False)[rounds > 0]) == \
        {strategy}
    assert Run.at(out).journal_rounds() == [0, 1, 2, 3]
    assert len(np.unique(journal.column("id").to_numpy())) == len(journal)


@pytest.mark.slow
def test_two_fresh_runs_on_the_default_path_take_name_and_name_2(tmp_path):
    fast = tmp_path / "fast.yaml"
    fast.write_text("train: {min_steps: 30, epochs: 1}\nscore: {mc_samples: 2}\n")
    common = ["run", "--local", "--quiet", "--init", "20", "--budget", "10", "--rounds", "1",
              "--config", str(fast), "--name", "same"]
    barrier = tmp_path / "go"
    procs = [start(barrier, common, cwd=tmp_path) for _ in range(2)]
    release(barrier, procs)
    results = finish(procs)
    assert [code for code, _, _ in results] == [0, 0], results
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["same", "same-2"]
    for d in runs.iterdir():
        assert Run.at(d).journal_rounds() == [0, 1] and len(Run.at(d).metrics()) == 2


def test_two_pool_writes_to_one_target_one_writes_the_other_is_refused(tmp_path):
    """Two `pool write` at once on one target: one writes the pool, the other is refused in
    one line (the first holds the target's lock, or has already filled it); never a mix."""
    target = tmp_path / "pool"
    cmd = [sys.executable, "-m", "autoal_dist", "pool", "write", "--dataset",
           "synthetic:n=6000,test=100,hw=16,c=3", "--rows-per-group", "100", "--to", str(target)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(e for code, e in results if code == 2).strip().splitlines()[-1]
    assert err.startswith("autoal-dist: error: ") and (
        "in use by 'autoal-dist pool write'" in err or "is not empty" in err), err
    assert main(["pool", "verify", str(target)]) == 0
