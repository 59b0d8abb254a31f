"""cluster/: the launcher and KubeRay files are well-formed and keep token auth and a private
dashboard; the campaign configs load; and (slow) `ray job submit` of `autoal-dist run` to a real
loopback head node writes the same journal as a run in this process."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
import yaml

from autoal_dist import remote
from autoal_dist.cli import main
from autoal_dist.config import read_config_file
from autoal_dist.execution import reservation
from autoal_dist.registry import load_config
from autoal_dist.run import Run

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LOCAL_SH = CLUSTER / "local.sh"
KUBERAY = {name: CLUSTER / "kuberay" / name for name in ("raycluster.yaml", "rayjob.yaml")}
CAMPAIGNS = sorted((CLUSTER / "configs").glob("*.yaml"))
RAY_CLI = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected one YAML document, got {len(docs)}"
    return docs[0]


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def pod_specs(spec: dict):
    """(group name, pod spec) for the head group and every worker group."""
    yield "head", spec["headGroupSpec"]["template"]["spec"]
    for group in spec["workerGroupSpecs"]:
        yield group["groupName"], group["template"]["spec"]


def total_gpus(spec: dict) -> int:
    return sum(int(g["replicas"]) * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
               for g in spec["workerGroupSpecs"] for c in g["template"]["spec"]["containers"])


# ---- fast: the files ------------------------------------------------------------------

def test_launcher_config_validates_against_the_wheels_schema():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    jsonschema.validate(cfg, schema)
    # What `ray up` itself checks after filling in the provider's defaults.
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_launcher_keeps_token_auth_and_a_loopback_dashboard():
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in cfg["head_start_ray_commands"][-1]
    assert "~/.ray/auth_token" in cfg["file_mounts"]
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert any("pip install" in c and "autoal-dist" in c for c in cfg["setup_commands"])


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_manifest(name):
    m = load(KUBERAY[name])
    assert m["apiVersion"] == "ray.io/v1" and m["metadata"]["name"]
    assert m["kind"] == {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}[name]
    spec = cluster_spec(m)
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token" and spec["authOptions"]["secretName"]
    assert spec["workerGroupSpecs"] and total_gpus(spec) >= 1
    for group in spec["workerGroupSpecs"]:
        for c in group["template"]["spec"]["containers"]:
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1, group["groupName"]
    for group, pod in pod_specs(spec):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            assert c["image"].startswith(f"rayproject/ray:{ray.__version__}-"), (group, c["image"])
            shm = [v["name"] for v in c.get("volumeMounts", []) if v["mountPath"] == "/dev/shm"]
            assert shm, f"{group}: no /dev/shm mount (the object store needs it)"
            assert volumes[shm[0]]["emptyDir"]["medium"] == "Memory", group
            # The token comes from the Secret through authOptions, never as a literal value.
            assert not [e for e in c.get("env", [])
                        if e["name"] == "RAY_AUTH_TOKEN" and "value" in e]
    head = spec["headGroupSpec"]
    host = head["rayStartParams"].get("dashboard-host")
    # KubeRay binds to 0.0.0.0 when dashboard-host is absent, so it must be explicit. Exposing it
    # on the pod IP is intended only where the operator must reach the Jobs API (a RayJob), and
    # then only with token auth and a cluster-internal Service.
    assert host in ("127.0.0.1", "0.0.0.0"), host
    if host == "0.0.0.0":
        assert m["kind"] == "RayJob" and head.get("serviceType", "ClusterIP") == "ClusterIP"


def test_rayjob_runs_a_shipped_config_on_the_raycluster_spec():
    job = load(KUBERAY["rayjob.yaml"])["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    argv = job["entrypoint"].split()
    assert argv[:3] == ["autoal-dist", "run", "--config"]
    load_config(read_config_file(REPO / argv[3]))
    assert Path(argv[argv.index("--out") + 1]).is_absolute()  # a job's cwd is scratch space
    # The K8sJobMode submitter passes it through a shell in double quotes: `$...` would expand.
    assert "$" not in job["runtimeEnvYAML"]
    env = yaml.safe_load(job["runtimeEnvYAML"])
    assert env["working_dir"] and any("autoal-dist" in p for p in env["pip"])
    # "The same cluster spec inline": identical but for the dashboard binding the job needs.
    inline = copy.deepcopy(job["rayClusterSpec"])
    standalone = load(KUBERAY["raycluster.yaml"])["spec"]
    for s in (inline, standalone):
        s["headGroupSpec"]["rayStartParams"].pop("dashboard-host")
    assert inline == standalone


@pytest.mark.parametrize("path", CAMPAIGNS, ids=[p.stem for p in CAMPAIGNS])
def test_campaign_config_loads(path):
    cfg = load_config(read_config_file(path))
    assert cfg.strategy == "autoal" and cfg.gpu and Path(cfg.data_root).is_absolute()
    # The scorer actors hold a GPU each for the whole campaign, beside the Ray Train workers'
    # GPUs: the cluster holds both at once (execution.reservation).
    gpus = total_gpus(load(KUBERAY["raycluster.yaml"])["spec"])
    r = reservation(cfg, {"CPU": 64.0, "GPU": float(gpus)})
    assert cfg.workers > 0 and cfg.shards >= 1 and r.total("GPU") == cfg.shards + cfg.workers
    assert r.total("GPU") <= gpus


def test_campaign_configs_cover_the_three_datasets():
    assert [p.stem for p in CAMPAIGNS] == ["cifar10", "pathmnist", "tinyimagenet"]


def test_local_sh_is_executable_and_parses():
    assert os.access(LOCAL_SH, os.X_OK)
    subprocess.run(["bash", "-n", str(LOCAL_SH)], check=True)
    usage = subprocess.run([str(LOCAL_SH)], capture_output=True, text=True,
                           env={**os.environ, "RAY": RAY_CLI or "ray"}, timeout=30)
    assert usage.returncode == 2 and "start" in usage.stderr and "stop" in usage.stderr


# ---- slow: a real job on a real head node ---------------------------------------------

CAMPAIGN = ["--dataset", "digits", "--rounds", "2", "--init", "20", "--budget", "10",
            "--epochs", "1", "--quiet", "--seed", "3"]
START_TIMEOUT, JOB_TIMEOUT = 240, 300


def sh(*args: str, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


@contextmanager
def head_node():
    """cluster/local.sh start ... stop, in a state dir of its own; yields (address, client env)."""
    if RAY_CLI is None:
        pytest.fail(f"no `ray` executable next to {sys.executable} or on PATH")
    # A short path: Ray's Unix sockets live under it and must stay under ~107 characters.
    state = Path(tempfile.mkdtemp(prefix="alr-", dir="/tmp" if Path("/tmp").is_dir() else None))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN",
                        "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    env.update(AUTOAL_RAY_STATE=str(state), AUTOAL_RAY_NUM_CPUS="2", RAY=RAY_CLI,
               AUTOAL_RAY_START_TIMEOUT=str(START_TIMEOUT - 30))
    try:
        # A small object store: the digits pool is tiny and CI machines are small.
        start = sh(str(LOCAL_SH), "start", "--object-store-memory=200000000", env=env,
                   timeout=START_TIMEOUT)
        assert start.returncode == 0, f"local.sh start failed:\n{start.stdout}\n{start.stderr}"
        address = sh(str(LOCAL_SH), "address", env=env, timeout=30).stdout.strip()
        client_env = dict(env)
        for line in sh(str(LOCAL_SH), "env", env=env, timeout=30).stdout.splitlines():
            for assignment in line.removeprefix("export ").split():
                key, _, value = assignment.partition("=")
                client_env[key] = value
        assert address.startswith("http://127.0.0.1:") and client_env["RAY_AUTH_MODE"] == "token"
        yield address, client_env
    finally:
        stop = sh(str(LOCAL_SH), "stop", env=env, timeout=90)
        shutil.rmtree(state, ignore_errors=True)
    # Reached only when the body passed: a failed stop must not mask the body's own failure.
    assert stop.returncode == 0, f"local.sh stop failed:\n{stop.stdout}\n{stop.stderr}"


def wait_for_job(client, submission_id: str, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        status = client.get_job_status(submission_id)
        if status.is_terminal() or time.monotonic() > deadline:
            return status
        time.sleep(2)


def submit_job(address: str, client_env: dict, out: str, *extra: str,
               env_vars: dict | None = None) -> str:
    """The documented `ray job submit ... -- autoal-dist run ...`; returns the submission id.

    The working dir upload skips .git, .venv and .gitignore'd paths. Training in the driver
    is exact only at equal torch thread counts, so the job's is pinned (Ray's own default for
    a job driver is also 1, inherited from its JobSupervisor actor).
    """
    submission_id = f"autoal-e2e-{uuid.uuid4().hex[:8]}"
    runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1", **(env_vars or {})}}
    submit = sh(RAY_CLI, "job", "submit", "--address", address, "--submission-id",
                submission_id, "--working-dir", str(REPO), "--no-wait",
                "--runtime-env-json", json.dumps(runtime_env), "--",
                "autoal-dist", "run", *CAMPAIGN, *extra, "--out", out,
                env=client_env, timeout=180)
    assert submit.returncode == 0, f"ray job submit failed:\n{submit.stdout}\n{submit.stderr}"
    return submission_id


def wait_for_success(client, submission_id: str) -> None:
    from ray.job_submission import JobStatus

    status = wait_for_job(client, submission_id, JOB_TIMEOUT)
    if status != JobStatus.SUCCEEDED:
        if not status.is_terminal():
            client.stop_job(submission_id)
        logs = client.get_job_logs(submission_id)
        pytest.fail(f"job {submission_id} is {status} after <= {JOB_TIMEOUT}s\n"
                    f"--- ray job logs (tail) ---\n{logs[-6000:]}")


@pytest.mark.slow
def test_job_submit_to_a_loopback_head_node_matches_a_local_run(tmp_path, ray_cluster,
                                                                 s3_bucket, s3_endpoint):
    from ray.job_submission import JobSubmissionClient

    job_out, local_out = tmp_path / "job", tmp_path / "local"
    s3_out = f"{s3_bucket}/job"
    with head_node() as (address, client_env):
        # Without the token the Jobs API refuses: token auth is on.
        no_token = sh(RAY_CLI, "job", "list", "--address", address,
                      env={**client_env, "RAY_AUTH_MODE": "disabled"}, timeout=60)
        assert no_token.returncode != 0 and "Unauthorized" in no_token.stdout + no_token.stderr

        token = Path(client_env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
        submission_id = submit_job(address, client_env, str(job_out))
        wait_for_success(client, submission_id)

        # The driver joined this cluster (not a private one): its scorer actors ran here.
        driver_job_id = client.get_job_info(submission_id).job_id
        listed = sh(RAY_CLI, "list", "actors", "--address", address, "--filter",
                    "class_name=ScorerActor", "--format", "json", env=client_env, timeout=60)
        assert listed.returncode == 0, listed.stderr
        actors = json.loads(listed.stdout)
        assert actors and {a["job_id"] for a in actors} == {driver_job_id}

        # The multi-node layout: the run directory on an object store (moto's S3 here; the
        # credentials and endpoint travel in the runtime env) and a Ray Train worker, whose
        # checkpoints go to s3://.../train through pyarrow, not through the driver's disk.
        wait_for_success(client, submit_job(address, client_env, s3_out, "--workers", "1",
                                            env_vars=s3_endpoint))

    assert [p.name for p in sorted((job_out / "journal").glob("*.parquet"))] == [
        "round_000.parquet", "round_001.parquet", "round_002.parquet"]
    metrics = pq.read_table(job_out / "metrics.parquet").to_pylist()
    assert [r["round"] for r in metrics] == [0, 1, 2]
    assert [r["n_labeled"] for r in metrics] == [20, 30, 40]

    # Same seed and flags in this process (its own local Ray, other shard count), at the job's
    # one training thread: the same journal, order included.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", *CAMPAIGN, "--out", str(local_out)]) == 0
    finally:
        torch.set_num_threads(threads)
    local = Run.at(local_out).journal()
    files = remote.RemoteDir.open(s3_out).files()
    assert "summary.md" in files and not any(f.startswith("train/") for f in files)
    s3_copy = tmp_path / "s3_copy"
    s3_copy.mkdir()
    remote.RemoteDir.open(s3_out).download(s3_copy)
    for run in (job_out, s3_copy):
        job = Run.at(run).journal()
        for column in ("round", "id"):
            assert np.array_equal(job.column(column).to_numpy(),
                                  local.column(column).to_numpy()), (run, column)


@pytest.mark.slow
def test_requests_a_2_cpu_cluster_cannot_meet_are_refused_in_one_line(tmp_path):
    """On a fixed 2-CPU cluster (a `ray start` head node, joined through RAY_ADDRESS as a job
    driver joins it): 3 scorer actors, 8 Train workers or a 1000-CPU trial never fit, so the
    run says so in one line, exit 2, and writes nothing; 2 shards run, and say where."""
    with head_node() as (_, client_env):
        gcs_port = (Path(client_env["AUTOAL_RAY_STATE"]) / "node.env").read_text()
        port = dict(line.split("=", 1) for line in gcs_port.split())["GCS_PORT"]
        env = {**client_env, "RAY_ADDRESS": f"127.0.0.1:{port}"}

        def cli(*args: str) -> subprocess.CompletedProcess:
            return sh(sys.executable, "-m", "autoal_dist", *args, env=env, timeout=300)

        # joined without the token (token auth is on by default): one line saying what to set
        no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        done = sh(sys.executable, "-m", "autoal_dist", "run", *CAMPAIGN, "--ray", "--out",
                  str(tmp_path / "no-token"), env=no_token, timeout=300)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and last.startswith("autoal-dist: error: RAY_ADDRESS: "), \
            done.stderr[-2000:]
        assert "RAY_AUTH_MODE=token" in last and not (tmp_path / "no-token").exists()

        for flag, value in (("--shards", "3"), ("--workers", "8")):
            out = tmp_path / f"run{flag}"
            done = cli("run", *CAMPAIGN, "--ray", flag, value, "--out", str(out))
            assert done.returncode == 2, done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith(f"autoal-dist: error: {flag} {value} ") and "2 CPUs" in last
            assert not out.exists()
        sweep = tmp_path / "sweep.yaml"
        sweep.write_text(yaml.safe_dump({
            "campaign": {"dataset": "digits", "rounds": 1, "train": {"epochs": 1}},
            "tune": {"search_space": {"budget": {"choice": [10, 20]}}, "num_samples": 2,
                     "resources_per_trial": {"cpu": 1000}}}))
        done = cli("tune", "--config", str(sweep), "--out", str(tmp_path / "tune"), "--quiet")
        assert done.returncode == 2 and "tune.resources_per_trial" in done.stderr, done.stderr
        assert not (tmp_path / "tune").exists()
        out = tmp_path / "ok"
        done = cli("run", *CAMPAIGN, "--ray", "--shards", "2", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[0] == \
            f"ray: joined 127.0.0.1:{port} (2 CPUs, 0 GPUs)"
