"""The one place that starts or joins Ray, and reads what the cluster offers."""
from __future__ import annotations

import os


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (or a running local one), else start one.

    Inside `ray job submit` RAY_ADDRESS is set, so a job never starts a private cluster.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else num_cpus,
             log_to_driver=False, configure_logging=True, logging_level="WARNING")


def default_shards(use_gpu: bool) -> int:
    """One scorer per CPU Ray sees (per GPU with --gpu)."""
    import ray

    res = ray.cluster_resources()
    n = res.get("GPU", 0) if use_gpu else res.get("CPU", 1)
    return max(1, int(n))
