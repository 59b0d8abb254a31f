"""The one place that starts or joins Ray, says which, and checks requests against it.

Which Ray: the cluster named by RAY_ADDRESS (set inside `ray job submit`, and by
`eval "$(cluster/local.sh env)"`), else a private local one started here. A `ray start`
cluster that merely runs on this machine is never joined silently: the first line says
how to join it. Requests (scorer actors, Train workers, Tune trials) are checked before
any work starts: on a fixed cluster a request it can never meet is a one-line error; on an
autoscaling cluster the run asks the autoscaler for it and says what it waits for.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from autoal_dist.errors import UserError, first_line

WAIT_REPORT_S = 30.0  # how often a run waiting for an autoscaler says so
AUTOSCALING_ENV = "AUTOAL_AUTOSCALING"  # 1/0: override the autoscaler detection


class ResourceError(UserError):
    """A request the cluster can never meet; the message is one line."""


@dataclass(frozen=True)
class RaySession:
    """What this process runs on: `address` joined (None: started here) and whether an
    autoscaler may add nodes."""

    address: str | None
    autoscaling: bool

    def describe(self) -> str:
        res = _resources()
        cap = f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs"
        if self.address is None:
            return f"ray: started a local Ray on this machine ({cap})"
        scaling = ", autoscaling" if self.autoscaling else ""
        return f"ray: joined {self.address} ({cap}{scaling})"


_SESSION: RaySession | None = None
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def _drop_auth_notice(record: logging.LogRecord) -> bool:
    """Ray's notice that token auth is on by default reads like a failure; auth stays on."""
    return not record.getMessage().startswith("Token authentication is enabled")


def _resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


def _recorded_cluster() -> str | None:
    """The address `ray start` recorded in Ray's default temp dir, if any."""
    path = Path(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _detect_autoscaling() -> bool:
    """Whether the joined cluster may grow: declared by AUTOAL_AUTOSCALING=1 (in the job's
    runtime_env env_vars, on a cluster whose autoscaler may add nodes). Ray reports no
    reliable "can add nodes" signal (its autoscaler reports node types for a plain local
    cluster too), so a cluster is taken as fixed unless declared, and a refusal says how
    to declare it."""
    return os.environ.get(AUTOSCALING_ENV, "").strip().lower() in ("1", "true", "yes")


def ensure_ray(dashboard: bool = False) -> RaySession:
    """Join RAY_ADDRESS's cluster, else start a local one (`announce` says which).

    A local Ray starts without its dashboard unless `dashboard` (1.7 s of its 4.1 s start on
    the 2-core VM, benchmarks/results/startup.md): a campaign uses none of it; a Tune sweep
    needs it (Train's placement-group cleaner asks its state API when ASHA stops a trial).
    Token authentication stays on (Ray's default); its notice that it chose that is
    dropped, and Ray's own log lines stay at WARNING and above.
    """
    global _SESSION
    import ray

    if ray.is_initialized():
        if _SESSION is None:  # initialised by the caller (tests, a notebook): joined
            _SESSION = RaySession(ray.get_runtime_context().gcs_address, _detect_autoscaling())
        return _SESSION
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    logging.getLogger(_AUTH_LOGGER).addFilter(_drop_auth_notice)
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None and (reaped := reap_orphans()):
        print(f"ray: stopped {len(reaped)} Ray process(es) a killed run left behind "
              f"({', '.join(reaped)})", file=sys.stderr, flush=True)
    try:
        ray.init(address=address or "local", log_to_driver=False, configure_logging=True,
                 logging_level=logging.WARNING,
                 include_dashboard=None if address or dashboard else False)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError...: by cause
        if address is None:
            raise
        raise ResourceError(f"RAY_ADDRESS: cannot join the Ray cluster at {address} "
                            f"({first_line(e)[:300]}){_auth_hint()}") from None
    _SESSION = RaySession(address, address is not None and _detect_autoscaling())
    return _SESSION



def _auth_hint() -> str:
    """What to set when the join may have failed for want of the cluster's token."""
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token" and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        return "; check that the address is right and the cluster is up"
    return ("; a `ray start` cluster has token authentication on by default: set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) to its token "
            "(`eval \"$(cluster/local.sh env)\"` does for its head node), and check that the "
            "address is right and the cluster is up")


ORPHANS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # survive a SIGKILLed driver


def orphaned_agents() -> list[tuple[int, str, bool]]:
    """(pid, name, whether its session lives) of each of our Ray node agents re-parented to
    init (ORPHANS); Linux only (an empty list elsewhere). A session lives while it has a
    raylet or the process that started it (the /tmp/ray/session_..._<pid> the agent's files
    are in) is there."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    raylets: set[str] = set()
    found = []
    for p in proc.iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "raylet" in cmd:
                raylets.update(re.findall(r"session_[\w.-]+", cmd))
                continue
            name = cmd.strip()
            if name not in ORPHANS or p.stat().st_uid != os.getuid():
                continue
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            sessions = {m for fd in (p / "fd").iterdir()
                        for m in re.findall(r"session_[\w.-]+", os.readlink(fd))}
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and len(sessions) == 1:
            found.append((int(p.name), name, sessions.pop()))

    def lives(session: str) -> bool:
        starter = session.rsplit("_", 1)[-1]
        return session in raylets or (starter.isdigit() and Path(f"/proc/{starter}").exists())

    return [(pid, name, lives(session)) for pid, name, session in found]


def reap_orphans() -> list[str]:
    """Stop the Ray agents a SIGKILLed driver's private Ray left behind (Linux; else none).

    A driver killed with SIGKILL takes its Ray down with it, except its node's dashboard and
    runtime-env agents: they are re-parented to init and ignore SIGTERM for tens of seconds.
    An agent is stopped only if it is ours (same uid), orphaned (parent 1), and its session
    no longer lives (`orphaned_agents`). Returns "name pid" of each one stopped."""
    reaped = []
    for pid, name, session_lives in orphaned_agents():
        if session_lives:
            continue
        try:
            os.kill(pid, 9)
            reaped.append(f"{name} {pid}")
        except OSError:
            pass
    return reaped


def announce(dashboard: bool = False) -> str:
    """The line a run starts with: which Ray it uses (starting or joining it first)."""
    session = ensure_ray(dashboard)
    line = session.describe()
    recorded = _recorded_cluster()
    if session.address is None and recorded:
        line += f"; a `ray start` cluster runs at {recorded}: set RAY_ADDRESS={recorded} to use it"
    return line


def cluster_resources() -> dict[str, float]:
    """What the cluster has in all (joining or starting Ray first)."""
    ensure_ray()
    return _resources()


def _amounts(cpus: float, gpus: float) -> str:
    return f"{cpus:g} CPU{'s' * (cpus != 1)} and {gpus:g} GPU{'s' * (gpus != 1)}"


def require(cpus: float, gpus: float, what: str, fix: str) -> None:
    """Make sure the cluster can ever hold `cpus` CPUs and `gpus` GPUs at once for `what`.

    Fixed cluster: a one-line ResourceError naming the request, what the cluster has and
    `fix`. Autoscaling cluster: ask the autoscaler for them and wait, saying so every
    WAIT_REPORT_S seconds (Ctrl-C stops the wait).
    """
    def short() -> tuple[float, float]:
        res = _resources()
        return max(0.0, cpus - res.get("CPU", 0)), max(0.0, gpus - res.get("GPU", 0))

    missing = short()
    if missing == (0.0, 0.0):
        return
    session = ensure_ray()
    res = _resources()
    if not session.autoscaling:
        raise ResourceError(
            f"{what} needs {_amounts(cpus, gpus)} at once, but the Ray cluster has "
            f"{_amounts(res.get('CPU', 0), res.get('GPU', 0))} and cannot grow; "
            f"{fix} (or, if the cluster autoscales, set {AUTOSCALING_ENV}=1 to wait for it)")
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"CPU": cpus, **({"GPU": gpus} if gpus else {})}])
    start = time.monotonic()
    while (missing := short()) != (0.0, 0.0):
        waited = time.monotonic() - start
        print(f"waiting for the autoscaler: {what} needs {missing[0]:g} more CPUs and "
              f"{missing[1]:g} more GPUs ({waited:.0f} s so far)", file=sys.stderr, flush=True)
        deadline = time.monotonic() + WAIT_REPORT_S
        while time.monotonic() < deadline and short() != (0.0, 0.0):
            time.sleep(1.0)
