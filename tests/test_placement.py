"""The stall watch shared by scorer actors and Ray Train worker groups (no Ray needed: the
cluster's free resources and its kind are stubbed). The lost-node runs are in
test_ray_limits.py (slow tier)."""
from __future__ import annotations

import pytest

from autoal_dist import placement, ray_cluster
from autoal_dist.placement import Stall, StallWatch, placeable
from autoal_dist.training.watch import job_label

TRAIN = Stall("training round 1's classifier on 2 Ray Train workers cannot place its workers",
              {"CPU": 1.0}, 2, 2, "--workers", unit="worker")
ONE_CPU_LEFT = {"head": {"CPU": 1.0, "memory": 1e9}}


def test_placeable_counts_bundles_per_node():
    free = {"a": {"CPU": 1.5}, "b": {"CPU": 2.0, "GPU": 1.0}, "c": {"GPU": 4.0}}
    assert placeable({"CPU": 1.0}, 5, free) == 3
    assert placeable({"CPU": 1.0, "GPU": 1.0}, 5, free) == 1  # only b has both
    assert placeable({"CPU": 1.0}, 2, free) == 2
    assert placeable({"CPU": 1.0}, 1, {}) == 0


@pytest.fixture
def cluster(monkeypatch):
    """A stuck stall is judged at once, on a cluster whose kind the test sets."""
    monkeypatch.setattr(placement, "STUCK_S", 0.0)
    monkeypatch.setattr(placement, "free_per_node", lambda: ONE_CPU_LEFT)

    def kind(autoscaling: bool) -> None:
        session = ray_cluster.RaySession("127.0.0.1:6379", autoscaling)
        monkeypatch.setattr(ray_cluster, "ensure_ray", lambda: session)

    return kind


def test_a_stall_on_a_fixed_cluster_is_one_line_with_both_ways_out(cluster):
    cluster(False)
    with pytest.raises(ray_cluster.ResourceError) as e:
        StallWatch(print).check("train", TRAIN)
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith(f"{TRAIN.what}: it waits for 2 workers x 1 CPU, and the cluster has "
                           "1 CPU free on 1 node (")
    assert line.endswith("the cluster cannot grow: add a node, or continue on what is left: "
                         "autoal-dist run --resume --out DIR --workers 1 (every finished round "
                         "is saved)")


def test_an_actor_stall_asks_for_one_shard_fewer_and_never_zero(cluster, monkeypatch):
    cluster(False)
    monkeypatch.setattr(placement, "free_per_node", lambda: {"head": {"CPU": 0.0}})
    actor = Stall("scorer actor 1 of 1 is RESTARTING", {"CPU": 1.0, "GPU": 0.0}, 1, 1,
                  "--shards", least=1)
    with pytest.raises(ray_cluster.ResourceError) as e:
        StallWatch(print).check(0, actor)
    assert ": it waits for 1 CPU, and the cluster has 0 CPUs free (" in str(e.value)
    assert "--shards 1 (" in str(e.value)


def test_a_stall_with_room_or_placed_says_nothing(cluster):
    cluster(False)
    one = Stall(TRAIN.what, {"CPU": 1.0}, 1, 2, "--workers", unit="worker")
    watch = StallWatch(print)
    watch.check("train", one)  # one CPU free: Ray is placing it
    watch.check("train", None)
    assert watch.since == {}


def test_on_an_autoscaling_cluster_a_stall_is_a_line_and_the_wait_goes_on(cluster):
    cluster(True)
    lines: list[str] = []
    watch = StallWatch(lines.append)
    watch.check("train", TRAIN)
    watch.check("train", TRAIN)
    assert len(lines) == 2 and all(
        line.startswith(f"  waiting for the autoscaler: {TRAIN.what}: it waits for 2 workers")
        for line in lines)


@pytest.mark.parametrize("name, label", [
    ("round003", "training round 3's classifier"),
    ("simulate012", "round 12's AutoAL base classifier (f_B)"),
    ("search001", "round 1's AutoAL search"),
    ("other", "Ray Train job other"),
])
def test_a_train_job_is_named_by_what_it_fits(name, label):
    assert job_label(name) == label


def test_an_actor_whose_worker_is_starting_is_not_a_stall(monkeypatch):
    """PENDING_CREATION covers two waits: for resources (no worker process yet: a stall when
    nothing is free) and for the actor's own start once its resources are granted (a worker
    pid on a live node, slow on a loaded machine: its CPU then reads as taken, not free)."""
    import ray
    import ray._private.state as gcs

    from autoal_dist.scoring import ray_scorer

    class Handle:
        _actor_id = type("Id", (), {"hex": lambda self: "a1"})()

    node = {"NodeID": "n1", "Alive": True, "NodeManagerAddress": "127.0.0.1"}
    monkeypatch.setattr(ray, "nodes", lambda: [node])
    info = {"State": "PENDING_CREATION", "Address": {"NodeID": "n1"}, "Pid": 4242}
    monkeypatch.setattr(gcs, "actors", lambda actor_id: info)
    assert ray_scorer._actor_state(Handle()) == (ray_scorer.STARTING, None)
    info.update(Pid=0, Address={"NodeID": ""})  # no worker leased: waiting for resources
    assert ray_scorer._actor_state(Handle()) == ("PENDING_CREATION", None)
    info.update(State="RESTARTING", Pid=4242, Address={"NodeID": "n1"})
    node["Alive"] = False  # its node is gone: a restart with nowhere to go
    assert ray_scorer._actor_state(Handle()) == ("RESTARTING", "127.0.0.1")
