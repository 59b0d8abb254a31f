"""Shared fixtures. One session-scoped Ray cluster for every test that needs Ray."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TQDM_DISABLE", "1")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the slow tiers (DDP, Tune, job submit), as CI does")


def quick_cases(values, quick):
    """`values` to parametrize over, every case but those in `quick` in the slow tier: the
    quick tier runs one case of a matrix whose cases take the same path (`--slow` runs all)."""
    return [v if v in quick else pytest.param(v, marks=pytest.mark.slow) for v in values]


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow tier: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API on 127.0.0.1 (moto's server) for run directories on s3:// URIs.

    Its credentials and AWS_ENDPOINT_URL (read by pyarrow's S3 filesystem) are set in this
    process's environment, before the Ray cluster starts (`ray_cluster` depends on this),
    so subprocesses, Ray workers, Train workers and Tune trials reach the same server.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A new, empty bucket: `s3://<name>`."""
    import uuid

    import boto3

    name = f"autoal-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    import ray

    if not ray.is_initialized():
        # The dashboard serves the state API, which Ray Train's retry path and Tune's
        # early stopping query; without it a retried worker group is torn down.
        ray.init(address="local", num_cpus=4, object_store_memory=300 * 1024 * 1024,
                 include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def run_sharded(name: str, out, budget: int, seed: int, n_shards: int, block: int,
                device: str = "cpu") -> np.ndarray:
    """A set strategy's driver over `n_shards` in-process shards of `out` (block-aligned)."""
    from autoal_dist.strategies import STRATEGIES
    from autoal_dist.strategies.sharded import shard_slices

    strategy = STRATEGIES[name]
    shards = [strategy.make_shard(out.take(sl), block, sl.start, device=device)
              for sl in shard_slices(len(out), n_shards, block)]
    return strategy.drive(shards, budget, seed)


def random_outputs(n: int = 50, c: int = 5, d: int = 8, t: int = 4, seed: int = 0):
    """Tie-free random PoolOutputs with MC samples, ids shuffled-but-sorted (not 0..n-1)."""
    from autoal_dist.outputs import PoolOutputs

    r = np.random.default_rng(seed)
    ids = np.sort(r.choice(10 * n, size=n, replace=False)).astype(np.int64)
    logits = r.normal(size=(n, c))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mc_logits = logits[None] + r.normal(scale=0.5, size=(t, n, c))
    mc = np.exp(mc_logits) / np.exp(mc_logits).sum(2, keepdims=True)
    return PoolOutputs(ids, probs.astype(np.float32), r.normal(size=(n, d)).astype(np.float32),
                       mc.astype(np.float32))


def snapshot(d: Path) -> dict:
    """Every file under `d` and its bytes: a refused command must leave this unchanged."""
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def fails_cleanly(capsys, argv: list[str], names: str) -> str:
    """Exit 2 and exactly one stderr line starting `autoal-dist: error:` that contains `names`."""
    from autoal_dist.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoal-dist: error:"), err
    assert names in err, err
    return err
