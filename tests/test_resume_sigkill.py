"""Nothing is lost: SIGKILL the driver at a dozen points, resume each time, get the same campaign.

Kill points are deterministic (`AUTOAL_DIST_CRASH_AT`, see autoal_dist/faults.py). One chain of
processes: each dies at its kill point and the next one (a resume, or a rerun of the original
command while the directory is not yet a run) picks up from whatever the files say. Before each
restart every stray temp file is overwritten with garbage: had anything read one, the run would
fail or differ from the uninterrupted reference.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoal_dist import faults, store
from autoal_dist.run import Run

ARGS = ["--local", "--quiet", "--dataset", "digits", "--strategy", "entropy", "--init", "20",
        "--budget", "10", "--rounds", "4", "--epochs", "1"]
FAST = "train: {min_steps: 5}\nscore: {mc_samples: 2}\n"

# (kill point, how the process starts): spread over setup, every phase of a round, the journal,
# the metrics and the report; "fresh" reruns the original command (no config.json yet).
CHAIN = [
    ("pre_rename:config.json", "fresh"),        # not a run yet: only a temp file exists
    ("pre_rename:pool.parquet", "fresh"),       # config.json written, pool.parquet not
    ("post_rename:round_000.parquet", "resume"),  # seed set journaled, directory not fsynced
    ("train_step:0:3", "resume"),               # mid-training
    ("selected:0", "resume"),                   # scored and selected, not journaled
    ("pre_rename:round_001.parquet", "resume"),  # journal temp written, not renamed
    ("post_rename:round_001.parquet", "resume"),  # batch journaled, round 0 metrics not written
    ("pre_rename:metrics.parquet:1", "resume"),  # metrics temp written, not renamed
    ("evaluated:2", "resume"),                  # round 1 done; round 2 about to score
    ("pre_rename:round_003.parquet", "resume"),
    ("post_rename:metrics.parquet:2", "resume"),  # rounds 2 and 3 done, directory not fsynced
    ("train_step:4:2", "resume"),               # the last round, mid-training
    ("pre_rename:summary.md", "resume"),        # campaign done, report half written
]


def cli(out, *extra, crash=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env.pop(faults.ENV, None)
    if crash:
        env[faults.ENV] = crash
    return subprocess.run([sys.executable, "-m", "autoal_dist", "run", "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def temps(run_dir):
    return [p for p in run_dir.rglob("*") if store.is_temp(p)]


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_campaign(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text(FAST)
    fresh = [*ARGS, "--config", str(config)]
    ref, out = tmp_path / "ref", tmp_path / "run"
    assert cli(ref, *fresh).returncode == 0

    seen_temps = 0
    for point, start in CHAIN:
        for t in temps(out) if out.exists() else []:
            t.write_bytes(b"not a parquet or json file")
        seen_temps += len(temps(out)) if out.exists() else 0
        r = cli(out, *(fresh if start == "fresh" else ["--resume", "--quiet", "--local"]),
                crash=point)
        assert r.returncode == -signal.SIGKILL, f"{point}: never reached\n{r.stderr[-2000:]}"
    for t in temps(out):
        t.write_bytes(b"garbage")
    r = cli(out, "--resume", "--quiet", "--local")
    assert r.returncode == 0, r.stderr[-2000:]
    assert seen_temps >= 4  # the pre_rename kills left temp files, and resumes ignored them

    assert Run.at(out).journal_rounds() == Run.at(ref).journal_rounds() == [0, 1, 2, 3, 4]
    got, want = Run.at(out).journal().to_pandas(), Run.at(ref).journal().to_pandas()
    for column in ("id", "round", "strategy"):
        assert got[column].tolist() == want[column].tolist()
    assert np.array_equal(got.score, want.score, equal_nan=True)  # NaN: the seed set's scores
    ids = Run.at(out).labeled_ids()  # raises on an id labeled twice
    assert len(np.unique(ids)) == len(ids) == 60
    assert np.array_equal(ids, Run.at(ref).labeled_ids())
    metrics = pq.read_table(out / "metrics.parquet").to_pylist()
    assert [m["round"] for m in metrics] == [0, 1, 2, 3, 4]
    ref_metrics = pq.read_table(ref / "metrics.parquet").to_pylist()
    assert [(m["n_labeled"], m["accuracy"]) for m in metrics] == \
        [(m["n_labeled"], m["accuracy"]) for m in ref_metrics]
    assert (out / "summary.md").is_file() and (out / "curves.png").is_file()
    assert pq.read_table(out / "pool.parquet").equals(pq.read_table(ref / "pool.parquet"))


def test_crashpoint_matches_phase_place_and_count(monkeypatch):
    kills = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setenv(faults.ENV, "selected:2:2")
    faults.crashpoint("selected", 1)
    faults.crashpoint("trained", 2)
    faults.crashpoint("selected", 2)
    assert kills == []
    faults.crashpoint("selected", 2)
    assert kills == [signal.SIGKILL]
    monkeypatch.setenv(faults.ENV, "pre_rename:*")
    faults.crashpoint("pre_rename", "metrics.parquet")
    assert kills == [signal.SIGKILL] * 2
    monkeypatch.setenv(faults.ENV, "selected")
    with pytest.raises(ValueError, match="PHASE:WHERE"):
        faults.crashpoint("selected", 0)
