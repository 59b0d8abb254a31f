"""A Ray Train fit's worker group, watched while the fit runs: one that cannot be placed
(its node gone, nothing free) is named after STUCK_S, and on a fixed cluster the fit stops.

Why from the outside: Ray Train V2 waits for its worker group's placement group inside its
controller actor, retries every RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s) for ever
(FailureConfig.controller_failure_limit=-1), and blocks the controller's event loop while it
waits, so not even its own `abort` gets through (measured: none in 100 s). A thread of the
driver therefore reads the GCS: the TrainController actor this process created (its owner),
the placement groups that controller created, and their bundles on no live node
(`placement.StallWatch` decides).

How it stops the run: it raises the run's `StopGate` flag and removes the pending group. The
controller's wait then fails at once, Train retries, and the gate, a controller callback,
refuses the new worker group: Train shuts the run down on its own path (its detached
PlacementGroupCleaner is stopped, not left behind) and `fit` raises. Should that not happen
within STOP_S, the controller is killed (its workers die with it) and its groups removed.
"""
from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from ray.train.v2._internal.execution.callback import ControllerCallback

from autoal_dist.errors import UserError
from autoal_dist.placement import WATCH_S, Stall, StallWatch

CONTROLLER = "TrainController"
STOP_S = 15.0  # how long Train's own shutdown may take before the controller is killed
KV_NAMESPACE = "autoal_dist"
_JOBS = {"round": "training round {r}'s classifier",
         "simulate": "round {r}'s AutoAL base classifier (f_B)",
         "search": "round {r}'s AutoAL search"}


def job_label(name: str) -> str:
    """What a Train job does, from the name its caller gave it (`round003`: the round's
    classifier; `simulate003`, `search003`: AutoAL's fits)."""
    m = re.fullmatch(r"([a-z_]+)(\d+)", name)
    if m and m.group(1) in _JOBS:
        return _JOBS[m.group(1)].format(r=int(m.group(2)))
    return f"Ray Train job {name}"


def _stop_key(controller: bytes) -> bytes:
    return b"train-stop:" + controller.hex().encode()


class StopGate(ControllerCallback):
    """In the controller: refuses to start a worker group once the driver's watch has
    raised this controller's stop flag (the GCS's key-value store), so Train ends the run
    through its own shutdown."""

    def on_controller_start_worker_group(self, **_: Any) -> None:
        import ray
        from ray.experimental import internal_kv

        me = bytes.fromhex(ray.get_runtime_context().get_actor_id() or "")
        if internal_kv._internal_kv_get(_stop_key(me), namespace=KV_NAMESPACE):
            raise RuntimeError("stopped by autoal-dist: its worker group cannot be placed")
        return None


def _gcs() -> tuple[Any, Any]:
    """The GCS's accessor and its record types (internal APIs, read without the dashboard)."""
    import ray._private.state as state
    from ray.core.generated import gcs_pb2

    return state.state._connect_and_get_accessor(), gcs_pb2


def _alive_actors() -> list[Any]:
    """Every ALIVE actor's ActorTableData (the GCS's own record: it has the owner)."""
    accessor, tables = _gcs()
    return [tables.ActorTableData.FromString(raw)
            for raw in accessor.get_actor_table(None, "ALIVE")]


def _placement_groups(creator: bytes) -> list[Any]:
    """The PlacementGroupTableData of each group actor `creator` made and Ray still holds."""
    accessor, tables = _gcs()
    groups = (tables.PlacementGroupTableData.FromString(raw)
              for raw in accessor.get_placement_group_table())
    return [g for g in groups if g.creator_actor_id == creator
            and g.state != tables.PlacementGroupTableData.REMOVED]


def _remove_groups(creator: bytes) -> None:
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for g in _placement_groups(creator):
        _quietly(remove_placement_group, PlacementGroup(ray.PlacementGroupID(g.placement_group_id)))


def _kill(actor_id: bytes) -> None:
    """ray.kill by id (this process owns the controller, but `fit` holds its handle)."""
    import ray

    worker: Any = ray._private.worker.global_worker
    worker.core_worker.kill_actor(ray.ActorID(actor_id), True)


def _quietly(action: Callable[..., Any], *args: Any) -> Any:
    """`action(*args)`, or None if it fails: what it stops may be gone already."""
    try:
        return action(*args)
    except Exception:  # noqa: BLE001
        return None


class TrainWatch:
    """Watches the Train fit this thread is about to run (a context manager around
    `trainer.fit()`, whose RunConfig carries a `StopGate`); `reraise` raises its one-line
    error when it stopped the run."""

    def __init__(self, name: str, workers: int) -> None:
        import ray

        self.label = f"{job_label(name)} on {workers} Ray Train worker{'s' * (workers != 1)}"
        self.workers = workers
        self.owner = bytes.fromhex(ray.get_runtime_context().get_worker_id())
        self.error: UserError | None = None
        self.stopped: bytes | None = None  # the controller it stopped
        self._done = threading.Event()
        self._seen: set[bytes] = set()
        self._thread = threading.Thread(target=self._loop, name="autoal-train-watch",
                                        daemon=True)

    def __enter__(self) -> TrainWatch:
        try:  # controllers of fits before this one are not this fit's
            self._seen = {a.actor_id for a in self._controllers()}
        except Exception:  # noqa: BLE001 - an internal API: no watch is not an error
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from ray.experimental import internal_kv

        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.stopped is not None:  # ended (or killed); the handle `fit` left goes too
            _quietly(_kill, self.stopped)
            _quietly(_remove_groups, self.stopped)
            _quietly(partial(internal_kv._internal_kv_del, namespace=KV_NAMESPACE),
                     _stop_key(self.stopped))

    def reraise(self) -> None:
        """The watch's one-line error, if it stopped the run (the fit then failed)."""
        if self.error is not None:
            raise self.error from None

    def _controllers(self) -> list[Any]:
        return [a for a in _alive_actors() if a.class_name == CONTROLLER
                and a.owner_address.worker_id == self.owner and a.actor_id not in self._seen]

    def _loop(self) -> None:
        watch = StallWatch(lambda line: print(line, file=sys.stderr, flush=True))
        while not self._done.wait(WATCH_S):
            for c in _quietly(self._controllers) or []:
                try:
                    groups = _placement_groups(c.actor_id)
                    if groups:  # none: not made yet, or between Train's retries
                        stalls = [s for s in map(self._stall, groups) if s is not None]
                        watch.check(c.actor_id, stalls[0] if stalls else None)
                except UserError as e:
                    self.error = e
                    self._stop(c.actor_id)
                    return
                except Exception:  # noqa: BLE001 - an internal API: no answer is not an error
                    continue

    def _stall(self, group: Any) -> Stall | None:
        """A worker group's bundles that are on no live node, as a Stall; None: all placed."""
        import ray

        alive = {bytes.fromhex(n["NodeID"]) for n in ray.nodes() if n.get("Alive")}
        waiting = [b for b in group.bundles if b.node_id not in alive]
        if not waiting:
            return None
        return Stall(f"{self.label} cannot place its workers", dict(waiting[0].unit_resources),
                     len(waiting), self.workers, "--workers", unit="worker")

    def _stop(self, controller: bytes) -> None:
        """End the Train run (module docstring): the gate and Train's own shutdown, else,
        after STOP_S, the controller killed."""
        from ray.experimental import internal_kv

        self.stopped = controller
        _quietly(partial(internal_kv._internal_kv_put, namespace=KV_NAMESPACE),
                 _stop_key(controller), b"1", True)
        _quietly(_remove_groups, controller)
        if not self._done.wait(STOP_S):
            _quietly(_kill, controller)
            _quietly(_remove_groups, controller)
