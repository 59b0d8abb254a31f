"""The run directory as one object: `Run` (its files), `open_run` (the one way in: lock,
staging, checks), the run lock and the journal checks. See run/layout.py for what it holds."""
from autoal_dist.dirlock import RunLocked, RunLockError, describe, lock_holder, run_lock
from autoal_dist.run.checks import JournalError
from autoal_dist.run.directory import Run, RunDirError
from autoal_dist.run.lifecycle import default_name, new_meta, open_run, resume_config

__all__ = ["JournalError", "Run", "RunDirError", "RunLockError", "RunLocked", "default_name",
           "describe", "lock_holder", "new_meta", "open_run", "resume_config", "run_lock"]
