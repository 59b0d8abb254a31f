"""Which Ray a run uses, requests the cluster cannot meet, Ctrl-C, progress on Ray.

Fast tests use the session cluster (4 CPUs); the 2-CPU cluster tests are in
test_cluster.py (they need a `ray start` head node of their own).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from autoal_dist import ray_cluster
from autoal_dist.cli import main
from autoal_dist.run import Run

CAMPAIGN = ["run", "--dataset", "digits", "--init", "20", "--budget", "10", "--rounds", "1",
            "--epochs", "1", "--quiet"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*CAMPAIGN, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("flags, named", [
    (["--shards", "5"], "--shards 5"),
    (["--workers", "9"], "--workers 9"),
])
def test_a_request_the_cluster_cannot_meet_is_one_line_and_writes_nothing(
        ray_cluster, tmp_path, capsys, flags, named):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "--ray", *flags, "--out", str(out))
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("autoal-dist: error: ") and named in line and "cannot grow" in line
    assert not out.exists()


@pytest.mark.slow
def test_the_first_line_says_which_ray(ray_cluster, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--ray", "--shards", "2", "--out", str(tmp_path / "a"))
    assert code == 0
    assert err.splitlines()[0].startswith("ray: joined ")  # the test process's own cluster
    code, _, err = run_cli(capsys, "--local", "--out", str(tmp_path / "b"))
    assert code == 0 and err.splitlines()[0].startswith("mode local: ")
    assert "Token authentication is enabled" not in err


@pytest.mark.slow
def test_ray_mode_says_what_each_step_does_unless_quiet(ray_cluster, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*CAMPAIGN[:-1], "--ray", "--shards", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "round 0: training on 20 labeled samples" in err and "round 0: trained" in err
    assert "round 0: choosing 10 of" in err
    assert main([*CAMPAIGN, "--ray", "--shards", "2", "--out", str(tmp_path / "q")]) == 0
    assert "round 0: training" not in capsys.readouterr().err


def test_an_autoscaling_cluster_is_waited_for_and_said_so(monkeypatch, capsys):
    """Autoscaling: the request goes to the autoscaler and the wait is reported, not an error."""
    sizes = iter([1, 1, 1, 1, 4])
    asked = []
    monkeypatch.setenv(ray_cluster.AUTOSCALING_ENV, "1")
    monkeypatch.setattr(ray_cluster, "_resources", lambda: {"CPU": float(next(sizes, 4))})
    monkeypatch.setattr(ray_cluster, "ensure_ray",
                        lambda: ray_cluster.RaySession("10.0.0.1:6379", True))
    monkeypatch.setattr(ray_cluster, "WAIT_REPORT_S", 0.01)
    import ray.autoscaler.sdk as sdk

    monkeypatch.setattr(sdk, "request_resources", lambda **kw: asked.append(kw))
    ray_cluster.require(3, 0, "--shards 3", "lower --shards")
    assert asked == [{"bundles": [{"CPU": 3}]}]
    assert "waiting for the autoscaler: --shards 3 needs 2 more CPUs" in capsys.readouterr().err


def test_a_fixed_cluster_refuses_in_one_line(monkeypatch):
    monkeypatch.setattr(ray_cluster, "_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray_cluster, "ensure_ray", lambda: ray_cluster.RaySession(None, False))
    with pytest.raises(ray_cluster.ResourceError) as e:
        ray_cluster.require(3, 1, "--shards 3", "lower --shards")
    assert "\n" not in str(e.value) and "has 2 CPUs and 0 GPUs" in str(e.value)


def _cfg(**kw):
    from autoal_dist.registry import load_config

    return load_config({}, {"dataset": "digits", **kw})


@pytest.mark.parametrize("kw, cluster, shards, cpus, gpus", [
    ({"workers": 1}, {"CPU": 2.0}, 1, 2, 0),  # a 2-CPU machine: one actor beside one worker
    ({"workers": 1, "shards": 1}, {"CPU": 2.0}, 1, 2, 0),
    ({}, {"CPU": 4.0}, 4, 4, 0),  # no Train workers: one actor per CPU
    ({"workers": 3}, {"CPU": 4.0}, 1, 4, 0),
    ({"workers": 8}, {"CPU": 2.0}, 1, 9, 0),  # at least one actor, however many workers
    ({"workers": 2, "gpu": True}, {"CPU": 16.0, "GPU": 4.0}, 2, 2, 4),  # whole GPUs each
    ({"workers": 2, "shards": 3, "gpu": True}, {"CPU": 16.0, "GPU": 4.0}, 3, 3, 5),
    ({"gpu": True}, {"CPU": 16.0, "GPU": 4.0}, 4, 4, 4),  # no workers: one per GPU
    ({"shards": 8, "gpu": True}, {"CPU": 16.0, "GPU": 4.0}, 8, 8, 4),  # half a GPU each
])
def test_scorer_actors_and_train_workers_are_counted_together(kw, cluster, shards, cpus, gpus):
    """The scorer actors stay for the campaign, beside every fit's Train workers: the
    cluster must hold both at once, and --shards 0 takes what --workers leaves."""
    from autoal_dist.execution import reservation

    r = reservation(_cfg(**kw), cluster)
    assert (r.shards, r.total("CPU"), r.total("GPU")) == (shards, cpus, gpus)


@pytest.mark.parametrize("kw, named, needs", [
    ({"workers": 2}, "--workers 2 (one Ray Train worker per CPU) beside 1 scorer actor "
                     "(--shards 0; a CPU each, for the whole campaign)", "3 CPUs and 0 GPUs"),
    ({"workers": 1, "shards": 2}, "--workers 1 (one Ray Train worker per CPU) beside --shards 2 "
                                  "(a CPU per scorer actor, for the whole campaign)",
     "3 CPUs and 0 GPUs"),
    ({"shards": 3}, "--shards 3 (one scorer actor per CPU)", "3 CPUs and 0 GPUs"),
])
def test_actors_and_workers_a_fixed_cluster_cannot_hold_are_refused_in_one_line(
        monkeypatch, kw, named, needs):
    from autoal_dist.execution import OnRay

    monkeypatch.setattr(ray_cluster, "_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray_cluster, "ensure_ray", lambda *a: ray_cluster.RaySession(None, False))
    monkeypatch.setattr(ray_cluster, "announce", lambda *a: "ray: a 2-CPU cluster")
    with pytest.raises(ray_cluster.ResourceError) as e:
        OnRay().start(_cfg(**kw))
    line = str(e.value)
    assert "\n" not in line and line.startswith(named), line
    assert f"needs {needs} at once, but the Ray cluster has 2 CPUs and 0 GPUs" in line
    if "workers" in kw:
        assert "lower --workers or --shards" in line
    for ok in ({"workers": 1}, {"workers": 1, "shards": 1}, {"shards": 2}, {}):
        assert OnRay().start(_cfg(**ok)) == "ray: a 2-CPU cluster"


FOREGROUND = ("import runpy, signal, sys; "
              "signal.signal(signal.SIGINT, signal.default_int_handler); "
              "sys.argv[0] = 'autoal-dist'; runpy.run_module('autoal_dist', run_name='__main__')")


def _interrupt(args: list[str], after: Path | Callable[[], bool],
               timeout: float = 300) -> tuple[int, float, str]:
    """Start `autoal-dist ARGS` as a user would, SIGINT it once `after` exists (or returns
    True); (exit code, seconds from the signal to the exit, stderr)."""
    ready = after if callable(after) else after.exists
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    # A terminal's foreground command: Ctrl-C raises KeyboardInterrupt. A child inherits an
    # ignored SIGINT (a test run started in the background, `cmd &`, ignores it, as POSIX
    # shells do for background jobs), so the child restores Python's handler first.
    proc = subprocess.Popen([sys.executable, "-c", FOREGROUND, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{after} never appeared"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, time.monotonic() - sent, err


@pytest.mark.slow
def test_ctrl_c_ends_a_ray_run_promptly_and_resume_is_exact(tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    args = ["run", "--dataset", "digits", "--rounds", "4", "--budget", "10", "--epochs", "3",
            "--quiet", "--ray", "--shards", "2"]
    # interrupted inside round 1's work: its batch is journaled once round 1 is done
    code, seconds, err = _interrupt([*args, "--out", str(out)],
                                    Run.at(out).round_path(1))
    assert code == 130, err
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    assert err.strip().splitlines()[-1].startswith("autoal-dist: interrupted; ")
    assert main(["run", "--resume", "--out", str(out), "--quiet"]) == 0
    assert main([*args, "--out", str(ref)]) == 0
    a, b = (Run.at(d).journal().to_pandas() for d in (out, ref))
    assert a.equals(b)


@pytest.mark.slow
def test_ctrl_c_on_tune_writes_the_finished_trials_and_resume_finishes_the_sweep(tmp_path):
    out = tmp_path / "sweep"
    sweep = Path(__file__).resolve().parents[1] / "cluster" / "tune" / "digits.yaml"

    def one_trial_done() -> bool:
        return any(pq.read_metadata(p).num_rows == 4  # rounds 0..3 of a 3-round campaign
                   for p in out.glob("trials/*/metrics.parquet"))

    code, seconds, err = _interrupt(["tune", "--config", str(sweep), "--out", str(out),
                                     "--quiet"], one_trial_done)
    assert code == 130, err
    rows = pq.read_table(out / "tune_results.parquet").to_pylist()
    assert len(rows) >= 1 and any(r["status"] == "complete" for r in rows)
    assert "tune --resume --out" in err
    assert "Tuner.restore" not in err and "Failed to fetch metrics" not in err  # one hint
    assert main(["tune", "--resume", "--out", str(out), "--quiet"]) == 0
    rows = pq.read_table(out / "tune_results.parquet").to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"complete", "stopped"}
    assert (out / "best_config.yaml").is_file()


@contextmanager
def node_lost_after_round_0(tmp_path: Path, head_cpus: int, *flags: str):
    """A fixed two-node cluster (a head of `head_cpus` CPUs, a node of 1) and a 2-round digits
    run with `flags` whose node is removed once round 0 is logged. The run must stop, exit 2,
    within 60 s of the removal; yields (env, run directory, its last stderr line) and shuts
    the cluster down after the caller's checks."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_ADDRESS": cluster.address}
        out = tmp_path / "run"
        cmd = [sys.executable, "-m", "autoal_dist", "run", "--ray", "--dataset", "digits",
               "--rounds", "2", "--epochs", "1", *flags, "--out", str(out)]
        p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        lines, removed_at = [], None
        for line in p.stderr:
            lines.append(line)
            if line.startswith("round   0/") and removed_at is None:
                cluster.remove_node(worker)
                removed_at = time.monotonic()
        assert p.wait(timeout=120) == 2, "".join(lines[-20:])
        assert removed_at is not None and time.monotonic() - removed_at < 60
        yield env, out, lines[-1].strip()
    finally:
        cluster.shutdown()


def resume_finishes(env: dict, out: Path, *flags: str) -> None:
    """`run --resume` with `flags` runs the rounds left (not just "the campaign is complete")."""
    done = subprocess.run([sys.executable, "-m", "autoal_dist", "run", "--resume", "--out",
                           str(out), *flags, "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the campaign is complete" not in done.stdout  # it ran the rounds left


@pytest.mark.slow
def test_a_scorer_that_lost_its_node_is_named_and_the_run_stops(tmp_path):
    """Two nodes of 1 CPU, --shards 2 (one scorer per node); the second node is removed after
    round 0: its scorer restarts with nowhere to go (the head's CPU holds the other). The run
    names it within ~25 s and stops (a fixed cluster cannot grow), exit 2; `--resume --shards
    1` finishes the campaign on what is left."""
    with node_lost_after_round_0(tmp_path, 1, "--shards", "2") as (env, out, last):
        assert last.startswith("autoal-dist: error: scorer actor ") and "waits for 1 CPU" in last
        assert "--shards 1" in last
        resume_finishes(env, out, "--shards", "1")


ALIVE_DETACHED = """
import ray, ray._private.state as gcs
ray.init(log_to_driver=False)
print(sorted(a["ActorClassName"] for a in gcs.actors(actor_state_name="ALIVE").values()
             if a["IsDetached"]))
"""


@pytest.mark.slow
def test_train_workers_that_lost_their_node_are_named_and_the_run_stops(tmp_path):
    """A head of 2 CPUs (the scorer actor, which stays for the campaign, and a Train worker)
    and a node of 1 CPU, --workers 2 --shards 1; the node is removed after round 0: round 1's
    worker group (2 x 1 CPU) has one CPU to go to. The run names the Train job within ~30 s
    and stops (a fixed cluster cannot grow), exit 2, through Train's own shutdown (its
    detached placement-group cleaner is not left behind); `--resume --workers 1` finishes the
    campaign on what is left."""
    with node_lost_after_round_0(tmp_path, 2, "--workers", "2", "--shards", "1") as (
            env, out, last):
        assert last.startswith("autoal-dist: error: training round 1's classifier on 2 Ray "
                               "Train workers cannot place its workers"), last
        assert "it waits for 2 workers x 1 CPU, and the cluster has 1 CPU free on 1 node" in last
        assert "add a node" in last and "--resume --out DIR --workers 1" in last
        left = subprocess.run([sys.executable, "-c", ALIVE_DETACHED], env=env,
                              capture_output=True, text=True, timeout=60)
        assert "PlacementGroupCleaner" not in left.stdout, left.stdout + left.stderr[-2000:]
        resume_finishes(env, out, "--workers", "1")
