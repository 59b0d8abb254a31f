"""(slow) A campaign on two Ray nodes equals the one on one node (#28).

The harness of benchmarks/scale.py on a small stored pool (digits, `autoal-dist pool write`):
`cluster/netns.sh` starts a loopback cluster in a network namespace of its own (one node
with 2 CPUs; then two nodes, 127.0.0.1 and 127.0.0.2, with 1 CPU each) and runs the
benchmark's driver (`scale.py --child campaign`: `autoal-dist run --dataset pool:DIR --ray
--shards 2 --rounds 2`) there. The journals are equal (and equal to `--local`'s), and on two
nodes the two scorer actors ran one on each node, the same processes in both rounds.
Skipped where `unshare -n` is not permitted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from scale import (  # noqa: E402 - the benchmark's harness, shared
    UNSHARE_REFUSED,
    campaign_argv,
    in_netns,
    journal_digest,
    netns_permitted,
)

NETNS = Path(__file__).resolve().parent.parent / "cluster" / "netns.sh"

CAMPAIGN = argparse.Namespace(shards=2, rounds=2, init=40, budget=20, epochs=2,
                              strategy="entropy", seed=5)
TIMEOUT = 240  # seconds for one cluster's start, campaign and stop


def local_digest(pool: Path, out: Path) -> str:
    """The same campaign with --local (no Ray), in a subprocess at one thread."""
    c = CAMPAIGN
    done = subprocess.run(
        [sys.executable, "-m", "autoal_dist", "run", "--dataset", f"pool:{pool}", "--local",
         "--shards", str(c.shards), "--rounds", str(c.rounds), "--init", str(c.init),
         "--budget", str(c.budget), "--epochs", str(c.epochs), "--strategy", c.strategy,
         "--seed", str(c.seed), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return journal_digest(out)


def on_cluster(nodes: int, cpus: int, pool: Path, tmp: Path) -> dict:
    result = tmp / f"result-{nodes}.json"
    done = in_netns(nodes, cpus, campaign_argv(pool, tmp / f"run-{nodes}", result, CAMPAIGN),
                    timeout=TIMEOUT, object_store=100 * 10**6)
    if done.returncode == UNSHARE_REFUSED:
        pytest.skip("`unshare -n` is not permitted here (needs root or user namespaces)")
    assert done.returncode == 0 and result.exists(), done.stdout[-6000:]
    return json.loads(result.read_text())


def test_netns_sh_is_executable_and_parses():
    assert os.access(NETNS, os.X_OK)
    subprocess.run(["bash", "-n", str(NETNS)], check=True)
    usage = subprocess.run([str(NETNS)], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "--nodes" in usage.stderr
    bad = subprocess.run([str(NETNS), "--nodes", "3", "--", "true"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 1 and "--nodes must be 1 or 2" in bad.stderr


@pytest.mark.slow
def test_a_two_node_campaign_equals_the_one_node_campaign(tmp_path):
    if not netns_permitted():
        pytest.skip("`unshare -n` is not permitted here (needs root or user namespaces)")
    pool = tmp_path / "pool"
    subprocess.run([sys.executable, "-m", "autoal_dist", "pool", "write", "--dataset", "digits",
                    "--to", str(pool)], check=True, capture_output=True, timeout=120)

    one = on_cluster(1, 2, pool, tmp_path)
    two = on_cluster(2, 1, pool, tmp_path)

    assert one["journal"] == two["journal"] == local_digest(pool, tmp_path / "local")
    assert [m["n_labeled"] for m in two["metrics"]] == [40, 60, 80]
    for res, nodes in ((one, ["127.0.0.1"]), (two, ["127.0.0.1", "127.0.0.2"])):
        assert len(res["rounds"]) == 2
        for r in res["rounds"]:
            assert r["nodes"] == nodes
            # one actor on each node (two nodes) or both on the head (one node)
            assert sorted({a["node"] for a in r["actors"]}) == nodes
            assert len(r["actors"]) == 2 and all(a["stored"] for a in r["actors"])
        first, second = res["rounds"]
        # each actor read its own shard from storage; the same processes scored round 2
        assert all(a["groups"] > 0 and a["new_process"] for a in first["actors"])
        assert [a["pid"] for a in first["actors"]] == [a["pid"] for a in second["actors"]]
        assert not any(a["new_process"] for a in second["actors"])
