"""Deterministic crash injection: `AUTOAL_DIST_CRASH_AT=PHASE:WHERE[:N]` SIGKILLs the process.

Real crashes (OOM kills, preemption, power loss) strike anywhere; the resume tests need to
strike chosen places reproducibly, which sleeping and killing from outside cannot do. Code
calls `crashpoint(phase, where)` at the boundaries that matter; when the variable names that
phase and place, the N-th matching call (default 1st) kills the process with SIGKILL, so no
`finally`, `atexit` or temp-file cleanup runs, exactly as in a real crash.

Crash points:
  train_step:R                every optimizer step of round R's local training (N picks the step)
  trained:R, evaluated:R      round R's classifier trained / evaluated (scoring comes next)
  selected:R                  round R's batch chosen (scored and selected), not yet journaled
  pre_rename:FILE             store.write_atomic: temp file written and fsynced, not renamed
  post_rename:FILE            store.write_atomic: renamed, directory not yet fsynced
WHERE is the round, a file name (e.g. round_002.parquet, metrics.parquet) or `*` for any.
Unset, as outside tests, a crash point costs one environment lookup.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "AUTOAL_DIST_CRASH_AT"
_hits: Counter[str] = Counter()  # matching calls so far in this process, per spec


def _parse(spec: str) -> tuple[str, str, int]:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts) or (len(parts) == 3 and not parts[2].isdigit()):
        raise ValueError(f"{ENV}={spec!r}: expected PHASE:WHERE[:N], e.g. selected:2 or "
                         "pre_rename:metrics.parquet:3")
    return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else 1


def crashpoint(phase: str, where: int | str) -> None:
    """SIGKILL this process if `AUTOAL_DIST_CRASH_AT` names this point and its count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want_phase, want_where, n = _parse(spec)
    if phase != want_phase or want_where not in ("*", str(where)):
        return
    _hits[spec] += 1
    if _hits[spec] == n:
        os.kill(os.getpid(), signal.SIGKILL)
