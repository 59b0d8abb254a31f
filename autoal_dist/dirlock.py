"""One writer per directory: `run`, `run --resume` and `import` exclude each other on a run
directory (the run lock), and two `pool write` on one target exclude each other.

Two processes writing one run directory lose labels: two imports each read the labels
store, merge their file, and rewrite it, so the second drops the first's labels; two
campaigns on one --out interleave their journals. `run_lock(location, command)` (taken by
`open_run`, the one way into a run directory) makes the
second writer fail at once with one line naming the holder (command, pid, host, since when):

    with run_lock(args.out, "autoal-dist run --resume"):
        ...  # open, check, write

It must be taken before anything is read that decides what to write: for a fresh run
before the "--out is empty" check (the lock works on a directory that does not exist yet:
it creates it), for a resume before the run directory is read (or downloaded), for an import
before the labels store is read.

Local disks and shared mounts (NFS): an exclusive POSIX record lock (`fcntl.lockf`) on
`<run>/.lock`, a file that is never deleted (deleting a lock file lets two processes lock
two different inodes). The kernel drops the lock when the holder exits, however it dies
(SIGKILL included), so there are no stale locks and nothing to clean up. NFSv4 carries these
locks in the protocol (NFSv3 needs the NLM lock daemon, `lockd`; without it locking fails with
ENOLCK, reported as a RunLockError); an NFS server frees the lock of a client that died after
its lease time (90 s by default). The holder's record (JSON) is written into the locked file
for the message the next writer gets. POSIX locks belong to a process, not a file descriptor,
and closing *any* descriptor of the file drops them, so this module never opens the lock file
of a lock its own process holds: a second lock in one process is refused from an in-process
registry.

Object stores (`s3://`, `gs://`, ...: any non-local pyarrow filesystem) have no locks and
pyarrow has no conditional PUT, so a lease protocol on their strongly consistent
read-after-write *listing* (S3 since 2020, GCS, Azure, HDFS):

  1. a contender PUTs its own entry `<run>/.lock/<token>.json` {holder, expires};
  2. it then lists `<run>/.lock/`: if any other live entry is there it deletes its own and
     fails naming that holder; else it holds the lock;
  3. a daemon thread renews the entry every ttl/4 (rewrites `expires`); release deletes it.
     An entry whose lease ran out (its holder was killed) is ignored and removed by the next
     contender, so a killed holder blocks the directory for at most `ttl` seconds.

No entry is ever overwritten by another process, so there is no last-writer-wins race: of two
contenders, the one whose PUT completed last lists after the other's PUT completed and sees it.
Both may see each other and both fail (retry then), but two never both hold the lock.

What remains, stated honestly:
  * Expiry compares clocks: an entry is live while now < max(expires as the holder's clock
    wrote it, the object's mtime as the store's clock wrote it + ttl), in the contender's clock.
    Hosts must keep their clocks within a few seconds (NTP); a clock far ahead takes over
    early.
  * A holder that stalls for longer than the TTL (SIGSTOP, a frozen VM, a network partition
    through which its renewals fail) has lost the lock, possibly to another process, yet its
    main thread may go on writing until its heartbeat wakes: the heartbeat then stops renewing,
    sets `RunLock.lost`, prints one line and (when the lock was taken in the main thread)
    interrupts it with KeyboardInterrupt. Calling `RunLock.verify()` before each upload
    narrows the window to one GET-to-PUT gap; only a conditional PUT (S3 If-None-Match,
    GCS ifGenerationMatch) or a fencing token checked by the store would close it, and
    pyarrow offers neither.
  * A stale entry makes the next writer wait out the TTL (the message says until when),
    unless its holder ran on the contender's own machine (same host name, boot id and PID
    namespace) and its pid is gone: a SIGKILLed holder on this machine frees the lock at once.

`file://` URIs are local paths and get the POSIX lock. Both `.lock` (local) and `.lock/`
(object stores) are hidden names, so `remote.is_empty`, `RemoteDir.files` and `download`
ignore them: a locked empty directory is still empty to a fresh run.
"""
from __future__ import annotations

import _thread
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from autoal_dist.errors import UserError, first_line

LOCK_NAME = ".lock"  # <run>/.lock: a file (local, NFS) or a prefix of lease entries (stores)
DEFAULT_TTL = 60.0  # seconds an object-store lease lives without renewal
_READ_TRIES = 20  # a holder writes its record just after locking: reread an empty one briefly


class RunLockError(UserError):
    """The run directory cannot be locked (a filesystem error), or the lock was lost."""


class RunLocked(RunLockError):
    """Another writer holds the run directory; the message names it."""

    def __init__(self, message: str, holder: dict | None):
        super().__init__(message)
        self.holder = holder

    def __reduce__(self):  # pickled across processes with its holder
        return type(self), (str(self), self.holder)



def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _machine() -> dict[str, str]:
    """What tells this machine and PID namespace apart: the host name, the kernel's boot id
    (a reboot or another machine of the same name differs) and the PID namespace (another
    container differs). Empty where /proc does not say."""
    out = {"host": socket.gethostname()}
    try:
        out["boot"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        out["pidns"] = os.readlink("/proc/self/ns/pid")
    except OSError:
        return {}
    return out


def _new_record(command: str) -> dict[str, Any]:
    return {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
            "since": _now_iso(), "token": uuid.uuid4().hex,
            **{k: v for k, v in _machine().items() if k != "host"}}


def _dead_here(record: dict | None) -> bool:
    """Whether a lease entry's holder was a process of this very machine, boot and PID
    namespace that no longer runs (killed: it could not delete its entry). Such an entry needs
    no TTL to lapse: the kernel says its holder is gone. Anything else (another host, no way
    to tell, a live or unknowable pid) is left to the lease."""
    here = _machine()
    if not record or not here or any(record.get(k) != v for k, v in here.items()):
        return False
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, someone else's
        return False
    try:  # a zombie (killed, not yet reaped by its parent) holds nothing either
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe(holder: dict | None) -> str:
    """`<command> (pid P on HOST, since T)` for messages."""
    if not holder:
        return "another process (its lock record is not readable yet)"
    text = (f"{holder.get('command', '?')!r} (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, since {holder.get('since', '?')}")
    try:
        end = datetime.fromtimestamp(float(holder["expires"]), timezone.utc)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return text + ")"  # a local lock (no lease), or a record written by hand
    return (f"{text}; its lease runs to "
            f"{end.isoformat(timespec='seconds').replace('+00:00', 'Z')} unless renewed)")


def _locked_message(location: str, holder: dict | None, field: str) -> str:
    what = ("write a pool there" if (holder or {}).get("command", "").endswith("pool write")
            else "run, resume or import labels into a run directory")
    return (f"{field}: {location} is in use by {describe(holder)}; one process at a time may "
            f"{what}: retry when it has finished")


# ---- which lock a location gets ------------------------------------------------------------

def _target(location: str | os.PathLike) -> tuple[str, Any]:
    """("local", Path) or ("store", RemoteDir) for a run directory location."""
    from autoal_dist import remote

    if not remote.is_uri(location):
        return "local", Path(location)
    d = remote.RemoteDir.open(str(location))
    if d.fs.type_name == "local":  # file:// is a local path: the kernel's lock works there
        return "local", Path(d.root or "/")
    return "store", d


# In-process registry of held locks: a POSIX lock cannot exclude its own process, and opening
# the lock file again there (to read it) would release it.
_HELD: dict[tuple, RunLock] = {}
_GUARD = threading.RLock()
if hasattr(os, "register_at_fork"):  # a forked child holds none of its parent's locks
    os.register_at_fork(after_in_child=_HELD.clear)


def _local_key(lock_path: Path) -> tuple | None:
    try:
        st = os.stat(lock_path)  # stat, never open: opening+closing would drop our own lock
    except OSError:  # no lock file yet (or no directory: creating it will say why)
        return None
    return ("local", st.st_dev, st.st_ino)


def _store_key(d) -> tuple:
    return ("store", d.fs.type_name, d.root)


class RunLock:
    """A held lock (what `run_lock` yields). `holder` is this process's record."""

    def __init__(self, location: str, holder: dict, key: tuple):
        self.location, self.holder, self.key = location, holder, key
        self.lost: str | None = None  # why the lock was lost (object stores only), else None

    def verify(self) -> None:
        """Raise RunLockError if the lock was lost (an object-store lease that lapsed)."""
        if self.lost is not None:
            raise RunLockError(f"{self.location}: the run lock was lost ({self.lost}); another "
                               "process may be writing; stopped")

    def release(self) -> None:
        raise NotImplementedError


# ---- local disks and NFS: fcntl.lockf ------------------------------------------------------

class _LocalLock(RunLock):
    def __init__(self, location: str, holder: dict, key: tuple, fd: int):
        super().__init__(location, holder, key)
        self.fd = fd

    def release(self) -> None:
        import fcntl

        try:
            os.ftruncate(self.fd, 0)  # a later reader sees no holder, not a finished one
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(self.fd)


def _read_record(fd: int, tries: int = _READ_TRIES) -> dict | None:
    for attempt in range(tries):
        try:
            data = os.pread(fd, 1 << 16, 0)
            if data:
                return json.loads(data)
        except (OSError, ValueError):
            pass
        if attempt + 1 < tries:
            time.sleep(0.025)
    return None


def _lock_local(directory: Path, location: str, command: str, field: str,
                wait: float, create: bool) -> RunLock:
    import fcntl

    lock_path = directory / LOCK_NAME
    deadline = time.monotonic() + wait
    # An empty record under a held lock: a holder that just locked (its record comes next) or
    # one releasing (it empties the record, then unlocks). Retry the lock meanwhile, so a
    # refusal names its holder, and a lock released under our nose is taken.
    settle = time.monotonic() + _READ_TRIES * 0.025
    while True:
        with _GUARD:
            key = _local_key(lock_path)
            mine = _HELD.get(key) if key is not None else None
            if mine is None:
                if not create and not directory.is_dir():
                    raise RunLockError(f"{field}: {location} is not a directory (no run there)")
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                    # 0o666 less the umask, as every file: a group's shared run directory
                    # (umask 002) must stay lockable by the group
                    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
                except OSError as e:
                    raise RunLockError(f"{field}: cannot lock {location}: {first_line(e)}") \
                        from None
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in (errno.EACCES, errno.EAGAIN):
                        os.close(fd)
                        hint = (" (the filesystem offers no POSIX locks: on NFSv3 run lockd, or "
                                "mount with NFSv4)" if e.errno == errno.ENOLCK else "")
                        raise RunLockError(f"{field}: cannot lock {location}: "
                                           f"{first_line(e)}{hint}") from None
                    holder = _read_record(fd, tries=1)
                    os.close(fd)  # we hold no lock on this file: closing it releases nothing
                else:
                    record = _new_record(command)
                    try:
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
                        os.fsync(fd)
                        st = os.fstat(fd)
                    except OSError as e:
                        os.close(fd)  # drops the lock
                        raise RunLockError(f"{field}: cannot lock {location}: "
                                           f"{first_line(e)}") from None
                    lock = _LocalLock(location, record, ("local", st.st_dev, st.st_ino), fd)
                    _HELD[lock.key] = lock
                    return lock
            else:
                holder = mine.holder
        if holder is None and time.monotonic() < settle:
            time.sleep(0.025)
            continue
        if time.monotonic() >= deadline:
            raise RunLocked(_locked_message(location, holder, field), holder)
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _local_holder(directory: Path) -> dict | None:
    import fcntl

    lock_path = directory / LOCK_NAME
    with _GUARD:
        key = _local_key(lock_path)
        if key is None:
            return None
        if key in _HELD:
            return _HELD[key].holder
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:  # a shared lock is refused exactly while a writer holds the exclusive one
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EAGAIN):
                    return _read_record(fd) or {}
                return None
            fcntl.lockf(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


# ---- object stores: lease entries ----------------------------------------------------------

def _entries(d, ttl_default: float) -> list[tuple[str, dict | None, bool]]:
    """(path, record or None if unreadable, live) of every entry under <run>/.lock/."""
    from pyarrow import fs as pafs

    base = f"{d.root}/{LOCK_NAME}"
    infos = d.fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
    now = time.time()
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        try:
            with d.fs.open_input_stream(info.path) as f:
                record = json.loads(f.read())
        except FileNotFoundError:
            continue  # released between the listing and the read
        except (OSError, ValueError):
            record = None
        ttl = float(record.get("ttl", ttl_default)) if record else ttl_default
        ends = [float(record["expires"])] if record and "expires" in record else []
        if info.mtime is not None:
            ends.append(info.mtime.timestamp() + ttl)
        live = now < max(ends, default=now + ttl) and not _dead_here(record)
        out.append((info.path, record, live))
    return out


def _put(d, path: str, record: dict) -> None:
    from autoal_dist import remote

    data = (json.dumps(record) + "\n").encode()
    if d.fs.type_name in remote.ATOMIC_PUT:
        with d.fs.open_output_stream(path) as f:
            f.write(data)
        return
    parent, name = path.rsplit("/", 1)
    d.fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with d.fs.open_output_stream(tmp) as f:
        f.write(data)
    d.fs.move(tmp, path)


def _delete(d, path: str) -> None:
    try:
        d.fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # an entry left behind expires by itself


class _LeaseLock(RunLock):
    def __init__(self, location: str, holder: dict, key: tuple, d, path: str, ttl: float,
                 interrupt: bool):
        super().__init__(location, holder, key)
        self.dir, self.path, self.ttl = d, path, ttl
        self.interrupt = interrupt and threading.current_thread() is threading.main_thread()
        self.renewed = time.monotonic()  # when the last successful PUT started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"run-lock {location}",
                                        daemon=True)

    def start(self, renewed: float) -> None:
        self.renewed = renewed
        self._thread.start()

    def _beat(self) -> None:
        from pyarrow import fs as pafs

        while not self._stop.wait(self.ttl / 4):
            if time.monotonic() - self.renewed >= self.ttl:
                return self._lose("its lease lapsed before it could be renewed")
            try:
                if self.dir.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                    return self._lose("its lease entry was removed: another process took over")
                start = time.monotonic()
                self.holder = {**self.holder, "expires": time.time() + self.ttl}
                _put(self.dir, self.path, self.holder)
                self.renewed = start
            except OSError:
                continue  # the store is unreachable: retry until the lease lapses

    def _lose(self, why: str) -> None:
        if self._stop.is_set():
            return
        self.lost = why
        print(f"autoal-dist: error: lost the run lock of {self.location} ({why}); stopping",
              file=sys.stderr, flush=True)
        if self.interrupt:
            _thread.interrupt_main()

    def verify(self) -> None:
        from pyarrow import fs as pafs

        super().verify()
        try:
            gone = self.dir.fs.get_file_info(self.path).type == pafs.FileType.NotFound
        except OSError:
            gone = False
        if gone or time.monotonic() - self.renewed >= self.ttl:
            self.lost = "its lease entry is gone" if gone else "its lease lapsed"
            super().verify()

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        _delete(self.dir, self.path)


def _lock_store(d, location: str, command: str, field: str, wait: float, ttl: float,
                interrupt: bool) -> RunLock:
    key = _store_key(d)
    base = f"{d.root}/{LOCK_NAME}"
    deadline = time.monotonic() + wait
    holder: dict | None
    while True:
        with _GUARD:
            mine = _HELD.get(key)
            if mine is not None:
                holder = mine.holder
            else:
                try:
                    d.check_bucket()
                    record = {**_new_record(command), "ttl": ttl}
                    path = f"{base}/{record['token']}.json"
                    start = time.monotonic()
                    record["expires"] = time.time() + ttl
                    _put(d, path, record)
                    entries = _entries(d, ttl)
                except (OSError, ValueError) as e:
                    raise RunLockError(f"{field}: cannot lock {location}: {first_line(e)}") \
                        from None
                others = [(p, r) for p, r, live in entries if live and p != path]
                if not others:
                    for p, _, live in entries:  # entries of killed holders: tidy up
                        if not live and p != path:
                            _delete(d, p)
                    lock = _LeaseLock(location, record, key, d, path, ttl, interrupt)
                    _HELD[key] = lock
                    lock.start(start)
                    return lock
                _delete(d, path)
                records = [r for _, r in others if r]
                holder = min(records, key=lambda r: r.get("since", "")) if records else None
        if time.monotonic() >= deadline:
            raise RunLocked(_locked_message(location, holder, field), holder)
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


# ---- the API --------------------------------------------------------------------------------

@contextmanager
def run_lock(location: str | os.PathLike, command: str, *, field: str = "--out",
             wait: float = 0.0, ttl: float = DEFAULT_TTL, interrupt: bool = True,
             create: bool = True) -> Iterator[RunLock]:
    """Hold the run directory at `location` (a path or a URI) for the block's duration.

    Raises RunLocked (a ValueError; one line naming `field`, the location and the holder)
    when another writer holds it, after retrying for `wait` seconds; RunLockError when the
    directory cannot be locked at all. A local directory that does not exist is created
    (a fresh run locks its --out before checking it is empty), unless `create` is False
    (resume, import: a missing directory is then a RunLockError instead of a new empty one;
    an object store needs no directory).
    `ttl` is an object-store lease's lifetime (renewed every ttl/4 while held); `interrupt`
    lets a lost lease interrupt the main thread (see the module docstring).
    """
    from autoal_dist import remote

    location_str = str(location)
    try:
        kind, target = _target(location)
    except remote.RemoteError as e:
        raise RunLockError(f"{field}: {first_line(e)}") from None
    if kind == "local":
        lock = _lock_local(target, location_str, command, field, wait, create)
    else:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        lock = _lock_store(target, location_str, command, field, wait, ttl, interrupt)
    try:
        yield lock
    finally:
        with _GUARD:
            _HELD.pop(lock.key, None)
            lock.release()


def lock_holder(location: str | os.PathLike) -> dict | None:
    """The record of the process holding `location` ({command, pid, host, since, ...}; {} when
    it holds the lock but its record is not readable yet), or None when nobody holds it."""
    kind, target = _target(location)
    if kind == "local":
        return _local_holder(target)
    with _GUARD:
        mine = _HELD.get(_store_key(target))
        if mine is not None:
            return mine.holder
    live = [r or {} for _, r, is_live in _entries(target, DEFAULT_TTL) if is_live]
    return min(live, key=lambda r: r.get("since", ""), default=None)
