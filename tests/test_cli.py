"""The CLI contract: run writes the run directory; bad input = one line + exit 2, nothing lost."""
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoal_dist.cli import main
from autoal_dist.run import Run

pytestmark = pytest.mark.usefixtures("ray_cluster")  # `run` scores on Ray actors

FAST = ["--init", "10", "--budget", "10", "--rounds", "2", "--epochs", "1", "--quiet",
        "--candidates", "entropy,margin"]


def run_cli(*args):
    return main(["run", *FAST, *args])


def snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_run_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("--out", str(out), "--strategy", "entropy") == 0
    for name in ("config.json", "pool.parquet", "metrics.parquet", "curves.png", "summary.md"):
        assert (out / name).is_file(), name
    assert Run.at(out).journal_rounds() == [0, 1, 2]
    m = pq.read_table(out / "metrics.parquet").to_pylist()
    assert [r["round"] for r in m] == [0, 1, 2]
    assert [r["n_labeled"] for r in m] == [10, 20, 30]
    assert all(0 <= r["accuracy"] <= 1 for r in m)
    assert {"round", "n_labeled", "accuracy", "strategy", "train_s", "score_s"} <= set(m[0])
    printed = capsys.readouterr().out
    assert "accuracy" in printed and printed.count("\n") >= 5
    assert json.loads((out / "config.json").read_text())["config"]["strategy"] == "entropy"
    assert not (out / "train").exists()  # a finished run keeps no empty train/

    # resumed when finished: it says so and prints the table, without torch or Ray
    code = ("import sys\nfrom autoal_dist.cli import main\n"
            f"assert main(['run', '--resume', '--out', {str(out)!r}]) == 0\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "the campaign is complete: rounds 0..2 are evaluated" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]" and "ray:" not in r.stderr
    summary = (out / "summary.md").read_text()
    assert "final accuracy" in summary and "not complete" not in summary


@pytest.mark.slow
def test_same_seed_same_journal(tmp_path):
    for name in ("a", "b"):
        assert run_cli("--out", str(tmp_path / name), "--strategy", "margin", "--seed", "3") == 0
    a, b = (Run.at(tmp_path / n).journal().to_pandas() for n in "ab")
    assert np.array_equal(a.id, b.id) and np.array_equal(a.score, b.score, equal_nan=True)


@pytest.mark.parametrize("args, field", [
    (["--dataset", "imagenet21k"], "dataset"),
    (["--strategy", "psychic"], "strategy"),
    (["--budget", "5000"], "budget"),
    (["--init", "3"], "init"),
    (["--rounds", "-2"], "rounds"),
    (["--dataset", "cifar10"], "cifar10"),  # needs --data-root
    (["--dataset", "npz:/nonexistent/x.npz"], "/nonexistent/x.npz"),
    (["--candidates", "entropy,nonsense"], "candidates"),
    (["--config", "/nonexistent.yaml"], "--config"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, field):
    out = tmp_path / "run"
    assert run_cli("--out", str(out), *args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoal-dist: error:") and "\n" not in err and field in err
    assert not out.exists()


@pytest.mark.slow
def test_out_holding_a_run_needs_resume_and_stays_unchanged(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("--out", str(out)) == 0
    before = snapshot(out)
    assert run_cli("--out", str(out)) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_cli("--out", str(out), "--resume", "--seed", "9") == 2  # config may not change
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_extends_a_finished_campaign(tmp_path):
    out = tmp_path / "run"
    assert run_cli("--out", str(out), "--strategy", "entropy") == 0
    assert main(["run", "--out", str(out), "--resume", "--rounds", "3", "--quiet"]) == 0
    assert Run.at(out).journal_rounds() == [0, 1, 2, 3]
    ref = tmp_path / "ref"
    assert main(["run", *FAST[:4], "--rounds", "3", *FAST[6:], "--out", str(ref),
                 "--strategy", "entropy"]) == 0
    assert np.array_equal(Run.at(out).labeled_ids(), Run.at(ref).labeled_ids())


def test_the_summary_of_an_unfinished_campaign_says_so(tmp_path):
    out = tmp_path / "run"
    assert run_cli("--out", str(out), "--strategy", "entropy") == 0
    run = Run.at(out)
    run.write_metrics(run.metrics()[:2])  # as if stopped after round 1 of 2
    assert main(["report", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "**not complete**: rounds 0..1 of 0..2 evaluated" in summary
    assert "last accuracy" in summary


def test_console_script_runs_and_errors_cleanly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "autoal_dist", "strategies"], capture_output=True,
                       text=True, check=True)
    assert "entropy" in r.stdout and "bald" in r.stdout
    r = subprocess.run([sys.executable, "-m", "autoal_dist", "tune", "--config", "x"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "autoal-dist: error: --config: no such file: x" in r.stderr


def test_bench_lists_runs_and_rejects_unknown(capsys):
    assert main(["bench", "--list"]) == 0
    assert "scoring" in capsys.readouterr().out
    assert main(["bench", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoal-dist: error: bench: unknown benchmark") and "\n" not in err


QUICK_COMMANDS = [["--help"], ["strategies"], ["bench", "--list"], ["run", "--help"]]


@pytest.mark.parametrize("argv", QUICK_COMMANDS, ids=" ".join)
def test_quick_commands_import_neither_torch_nor_ray(argv):
    """`--help`, `strategies`, `bench --list` answer without torch and Ray (2-6 s to import):
    what they print needs names and docstrings only (lazy registries, lazy.py)."""
    code = (f"import sys\nfrom autoal_dist.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-500:]
