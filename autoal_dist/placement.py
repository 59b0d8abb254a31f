"""Is a placement stuck, and what would unstick it: one answer for scorer actors and Ray
Train worker groups.

A waiter (a scorer round waiting on its actors, a Train fit waiting on its worker group)
polls every WATCH_S and hands each thing it waits on to a `StallWatch` as a `Stall` (what
waits, for how many bundles of which resources) or None once it is placed. A stall that
lasts STUCK_S with no node able to take it is named in one line: on a fixed cluster as a
ResourceError (the run stops; every finished round is saved, so `--resume` with fewer
actors or workers goes on), on an autoscaling one as a note every STUCK_S while the run
keeps waiting for a node. Ray itself would wait forever (actors) or retry forever (Train).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

WATCH_S = 5.0  # how often a waiter looks at what it waits on
STUCK_S = 20.0  # a placement waiting this long with no room for it is named (polls: <= 25 s)


@dataclass(frozen=True)
class Stall:
    """Something not placed: `what` waits (one clause, e.g. "scorer actor 2 of 2 is
    RESTARTING"), for `count` bundles of `bundle` (per-bundle resources, as Ray reserves
    them), out of the `total` the job has; `unit` names one bundle in the message ("worker";
    "" for a lone actor). `flag` with `least` is the resume option that asks for fewer."""

    what: str
    bundle: dict[str, float]
    count: int
    total: int
    flag: str
    least: int = 0
    unit: str = ""


def free_per_node() -> dict[str, dict[str, float]] | None:
    """Each live node's free resources, from the GCS (no dashboard needed); None when it
    cannot be told (an internal API: no answer is not an error, and stops nothing)."""
    try:
        import ray._private.state as gcs

        return dict(gcs.available_resources_per_node())
    except Exception:  # noqa: BLE001
        return None


def placeable(bundle: dict[str, float], count: int, free: dict[str, dict[str, float]]) -> int:
    """How many of `count` bundles the free resources of `free`'s nodes could take now (a
    bundle lives on one node; PACK may spread bundles over nodes)."""
    need = {r: n for r, n in bundle.items() if n > 0}
    fits = 0
    for res in free.values():
        fits += min((int(res.get(r, 0.0) / n + 1e-9) for r, n in need.items()), default=count)
    return min(fits, count)


def _amount(n: float, name: str) -> str:
    return f"{n:g} {name}{'s' * (n != 1)}"


def _shown(bundle: dict[str, float]) -> list[str]:
    return [r for r in ("CPU", "GPU") if bundle.get(r, 0)] or [r for r, n in bundle.items() if n]


def _need(stall: Stall) -> str:
    res = " and ".join(_amount(stall.bundle[r], r) for r in _shown(stall.bundle))
    if not stall.unit:
        return res
    return f"{stall.count} {stall.unit}{'s' * (stall.count != 1)} x {res}"


def _free(bundle: dict[str, float], free: dict[str, dict[str, float]]) -> str:
    names = _shown(bundle)
    totals = " and ".join(_amount(sum(res.get(r, 0.0) for res in free.values()), r)
                          for r in names)
    nodes = sum(any(res.get(r, 0.0) > 0 for r in names) for res in free.values())
    return f"{totals} free" + (f" on {nodes} node{'s' * (nodes != 1)}" if nodes else "")


class StallWatch:
    """How long each of a waiter's placements has been stuck, and what to do past STUCK_S
    (module docstring). `note` prints the autoscaler lines."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.since: dict[Hashable, tuple[float, float]] = {}  # (stuck since, last said)

    def check(self, key: Hashable, stall: Stall | None) -> None:
        """`key`'s stall as seen now (None: placed, its clock stops). Raises ResourceError
        when it has lasted STUCK_S with no room for it on a cluster that cannot grow."""
        from autoal_dist.ray_cluster import ResourceError, ensure_ray

        if stall is None:
            self.since.pop(key, None)
            return
        now = time.monotonic()
        since, said = self.since.setdefault(key, (now, now))
        if now - said < STUCK_S:
            return
        free = free_per_node()
        if free is None:
            return
        fits = placeable(stall.bundle, stall.count, free)
        if fits >= stall.count:
            return  # room exists: Ray is placing it
        line = (f"{stall.what}: it waits for {_need(stall)}, and the cluster has "
                f"{_free(stall.bundle, free)} ({now - since:.0f} s)")
        if not ensure_ray().autoscaling:
            left = max(stall.least, stall.total - stall.count + fits)
            raise ResourceError(
                f"{line}; the cluster cannot grow: add a node, or continue on what is left: "
                f"autoal-dist run --resume --out DIR {stall.flag} {left} "
                f"(every finished round is saved)")
        self.note(f"  waiting for the autoscaler: {line}")
        self.since[key] = (since, now)
