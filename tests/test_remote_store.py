"""Run directories on URIs: `--out s3://...` (a real S3 API: moto's server) and `file://`.

The protocol (autoal_dist/remote.py): the campaign works in a staging copy; every committed
file is uploaded as one object, in commit order; a process opening a remote run starts from a
fresh download. So a remote run must equal a local one, and a crash anywhere must leave a
remote state that --resume continues to the uninterrupted campaign.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoal_dist import faults, remote, store
from autoal_dist.cli import main
from autoal_dist.run import Run

CAMPAIGN = ["--quiet", "--dataset", "digits", "--strategy", "margin", "--init", "20",
            "--budget", "10", "--rounds", "2", "--epochs", "1", "--seed", "5"]
FAST = "train: {min_steps: 5}\nscore: {mc_samples: 2}\n"


@pytest.fixture
def fast(tmp_path) -> list[str]:
    path = tmp_path / "fast.yaml"
    path.write_text(FAST)
    return [*CAMPAIGN, "--config", str(path)]


def pulled(uri: str, dest: Path) -> Path:
    """A local copy of the remote directory (what the next process would see)."""
    dest.mkdir(parents=True)
    remote.RemoteDir.open(uri).download(dest, skip=())
    return dest


def assert_same_campaign(got: Path, want: Path) -> None:
    assert Run.at(got).journal_rounds() == Run.at(want).journal_rounds()
    a, b = Run.at(got).journal().to_pandas(), Run.at(want).journal().to_pandas()
    assert a.id.tolist() == b.id.tolist() and a.strategy.tolist() == b.strategy.tolist()
    assert np.array_equal(a.score, b.score, equal_nan=True)
    ma = pq.read_table(got / "metrics.parquet").to_pylist()
    mb = pq.read_table(want / "metrics.parquet").to_pylist()
    assert [(r["round"], r["n_labeled"], r["accuracy"]) for r in ma] == \
        [(r["round"], r["n_labeled"], r["accuracy"]) for r in mb]


# ---- the pieces ----------------------------------------------------------------------

@pytest.mark.parametrize("location, problem", [
    ("runs/x", None), ("/abs/path", None), ("s3://bucket/run", None), ("gs://b/r/", None),
    ("file:///tmp/r", None), ("s3://bucket?region=eu-west-1", None),
    ("ftp://host/x", "unsupported scheme 'ftp'"), ("s3://", "names no bucket"),
    ("gs:///", "names no bucket"),
])
def test_check_uri(location, problem):
    got = remote.check_uri(location)
    assert got is None if problem is None else problem in got


def test_join_keeps_query_parameters_last():
    assert remote.join("s3://b/run/", "train") == "s3://b/run/train"
    assert remote.join("s3://b/run?region=x", "train", "r1") == "s3://b/run/train/r1?region=x"
    assert remote.join("runs/a", "train") == str(Path("runs/a/train"))


def test_staging_a_dead_process_left_is_swept_and_no_other(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = socket.gethostname()
    owners = {"dead": f"{host} {dead_pid} 1",  # gone (or its pid reused: another start)
              "alive": remote._owner(),
              "other-host": f"elsewhere {dead_pid} 1"}
    for name, owner in owners.items():
        d = tmp_path / f"{remote.STAGING_PREFIX}{name}"
        (d / "run").mkdir(parents=True)
        (d / remote.OWNER).write_text(owner)
    (tmp_path / f"{remote.STAGING_PREFIX}no-owner" / "run").mkdir(parents=True)  # being made
    assert remote.sweep_stale_staging(tmp_path) == 1
    assert sorted(p.name.removeprefix(remote.STAGING_PREFIX)
                  for p in tmp_path.iterdir()) == ["alive", "no-owner", "other-host"]


def test_file_uri_upload_is_a_rename_and_listing_skips_hidden_and_train(tmp_path):
    uri = (tmp_path / "remote" / "run").as_uri()
    with remote.opened(uri, download=False) as staged:
        staging = staged.local
        store.write_json(staging / "config.json", {"a": 1}, staged.commit)
        store.write_text(staging / "journal" / "note.txt", "x", staged.commit)
        (staging / "train").mkdir()
        (staging / "train" / "ckpt").write_text("not staged")  # Train's own: never uploaded
        assert staged.where(staging / "journal") == f"{uri}/journal"
    assert not staging.exists()  # the staging copy is private to the process
    d = remote.RemoteDir.open(uri)
    assert d.files() == ["config.json", "journal/note.txt"]
    (tmp_path / "remote" / "run" / ".x.tmp").write_text("a killed upload's temp")
    (tmp_path / "remote" / "run" / "train").mkdir()
    (tmp_path / "remote" / "run" / "train" / "ckpt").write_text("...")
    assert d.files() == ["config.json", "journal/note.txt", "train/ckpt"]
    assert d.files(skip=("train",)) == ["config.json", "journal/note.txt"]
    with remote.opened(uri) as staged:
        staging = staged.local
        assert json.loads((staging / "config.json").read_text()) == {"a": 1}
        assert not (staging / "train").exists() and not (staging / ".x.tmp").exists()


def test_s3_each_commit_is_uploaded_before_the_next(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/runs/r1"
    d = remote.RemoteDir.open(uri)
    assert d.fs.type_name == "s3" and d.is_empty()
    with remote.opened(uri, download=False) as staged:
        run = Run(staged)
        run.write_json("config.json", {"round": 0})
        assert d.files() == ["config.json"]  # synchronous: visible before the next write
        run.write_json("config.json", {"round": 1})  # an overwrite is one PUT
        with d.fs.open_input_stream(f"{d.root}/config.json") as f:
            assert json.loads(f.read()) == {"round": 1}
    assert not remote.is_empty(uri) and remote.is_empty(f"{s3_bucket}/runs/other")
    remote.remove_tree(uri)
    assert d.is_empty()


# ---- campaigns -------------------------------------------------------------------------

def test_run_on_s3_equals_a_local_run_and_report_works_there(s3_bucket, fast, tmp_path,
                                                               capsys):
    uri = f"{s3_bucket}/campaigns/margin"
    assert main(["run", "--local", *fast, "--out", str(tmp_path / "local")]) == 0
    assert main(["run", "--local", *fast, "--out", uri]) == 0
    out = capsys.readouterr()
    assert f"outputs: {uri}/" in out.out and f"run directory: {uri}" in out.err
    files = remote.RemoteDir.open(uri).files()
    for name in ("config.json", "pool.parquet", "metrics.parquet", "curves.png", "summary.md",
                 "journal/round_000.parquet", "journal/round_002.parquet"):
        assert name in files
    got = pulled(uri, tmp_path / "pulled")
    assert_same_campaign(got, tmp_path / "local")
    assert "Campaign `margin`" in (got / "summary.md").read_text()

    # report rebuilds curves.png and summary.md in place; a second fresh run there is refused
    assert main(["report", uri]) == 0
    assert main(["run", "--local", *fast, "--out", uri]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    # --resume with more rounds continues from the objects alone
    assert main(["run", "--local", "--resume", "--quiet", "--rounds", "3", "--out", uri]) == 0
    assert Run.at(pulled(uri, tmp_path / "again")).journal_rounds() == [0, 1, 2, 3]


def test_run_on_s3_with_ray_scorer_actors(ray_cluster, s3_bucket, fast, tmp_path):
    uri = f"{s3_bucket}/ray"
    assert main(["run", *fast, "--shards", "2", "--out", uri]) == 0
    assert main(["run", "--local", *fast, "--out", str(tmp_path / "local")]) == 0
    assert_same_campaign(pulled(uri, tmp_path / "pulled"), tmp_path / "local")


def cli(*args: str, crash: str | None = None,
        tmp: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI in a child process; `tmp` as its TMPDIR (a killed child's staging stays there
    until the next open, not in the machine's /tmp)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env.pop(faults.ENV, None)
    if crash:
        env[faults.ENV] = crash
    if tmp is not None:
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
    return subprocess.run([sys.executable, "-m", "autoal_dist", "run", *args], env=env,
                          capture_output=True, text=True, timeout=300)


# Kill points around the upload: committed locally but not uploaded (post_rename), and
# uploaded objects next to a missing one (pre_rename of the next file).
CHAIN = [
    ("post_rename:config.json", "fresh"),          # staged, never uploaded: not a run remotely
    ("post_rename:round_000.parquet", "fresh"),    # config + pool uploaded, seed set not
    ("selected:0", "resume"),
    ("post_rename:round_001.parquet", "resume"),   # the batch staged, not uploaded: redone
    ("post_rename:metrics.parquet:1", "resume"),
    ("pre_rename:round_002.parquet", "resume"),
    ("post_rename:summary.md", "resume"),          # done but for the report's upload
]


@pytest.mark.slow
def test_sigkill_around_uploads_then_resume_gives_the_uninterrupted_campaign(
        s3_bucket, fast, tmp_path):
    ref = tmp_path / "ref"
    assert cli("--local", *fast, "--out", str(ref)).returncode == 0
    uri = f"{s3_bucket}/crashy"
    tmp = tmp_path / "tmp"
    for point, start in CHAIN:
        args = ([*fast] if start == "fresh" else ["--resume", "--quiet"])
        r = cli("--local", *args, "--out", uri, crash=point, tmp=tmp)
        assert r.returncode == -signal.SIGKILL, f"{point}: never reached\n{r.stderr[-2000:]}"
        if point == "post_rename:config.json":
            assert remote.is_empty(uri)  # the staging copy died with the process
        if point == "post_rename:round_001.parquet":
            assert "journal/round_001.parquet" not in remote.RemoteDir.open(uri).files()
    r = cli("--local", "--resume", "--quiet", "--out", uri, tmp=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    # each open removed the staging its killed predecessor left; the last removed its own
    assert not list(tmp.glob("autoal-dist-staging-*"))
    got = pulled(uri, tmp_path / "pulled")
    assert_same_campaign(got, ref)
    assert (got / "summary.md").is_file()


def test_labeling_with_people_on_s3(s3_bucket, fast, tmp_path, capsys):
    """export and import read and write a remote run like a local one."""
    from autoal_dist.campaign import prepare_data
    from autoal_dist.registry import load_config

    uri = f"{s3_bucket}/people"
    assert main(["run", "--local", *fast, "--oracle", "files", "--out", uri]) == 0
    printed = capsys.readouterr().out
    assert f"autoal-dist import {uri} --labels" in printed and f"--out {uri}" in printed
    truth = prepare_data(load_config({"dataset": "digits"})).train_y
    for round_ in range(3):
        out = tmp_path / f"export{round_}"
        assert main(["export", uri, "--to", str(out)]) == 0
        with open(out / "batch.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
            f.write("id,label\n" + "".join(f"{r['id']},{truth[int(r['id'])]}\n" for r in rows))
        assert main(["import", uri, "--labels", str(out / "labels.csv")]) == 0
        assert f"labels/round_{round_:03d}.parquet" in remote.RemoteDir.open(uri).files()
        assert main(["run", "--local", "--resume", "--quiet", "--out", uri]) == 0
    assert main(["run", "--local", *fast, "--out", str(tmp_path / "simulated")]) == 0
    assert_same_campaign(pulled(uri, tmp_path / "pulled"), tmp_path / "simulated")


@pytest.mark.parametrize("argv, message", [
    (["run", "--out", "ftp://host/run"], "out: unsupported scheme 'ftp'"),
    (["run", "--out", "s3://"], "out: 's3://' names no bucket or directory"),
    (["run", "--resume", "--out", "gs:///"], "--out: 'gs:///' names no bucket"),
    (["report", "ftp://h/x"], "report: unsupported scheme 'ftp'"),
    (["export", "s3://b/r", "--to", "s3://b/exp"], "--to: s3://b/exp is a URI"),
])
def test_bad_storage_uris_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_resume_of_an_empty_remote_directory_is_refused(s3_bucket, capsys):
    assert main(["run", "--resume", "--out", f"{s3_bucket}/nothing"]) == 2
    err = capsys.readouterr().err
    assert f"--out: {s3_bucket}/nothing holds no config.json" in err


def test_unreachable_bucket_is_a_one_line_error(s3_endpoint, capsys):
    assert main(["run", "--local", "--out", "s3://no-such-bucket-here/run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("autoal-dist: error: --out:")
