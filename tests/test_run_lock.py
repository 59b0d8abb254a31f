"""run_lock: one writer per run directory, across real processes, on local disks and on S3."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from autoal_dist import remote
from autoal_dist.dirlock import (
    LOCK_NAME,
    RunLock,
    RunLocked,
    RunLockError,
    lock_holder,
    run_lock,
)

# A holder in its own process: takes the lock, says so, and sleeps until killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from autoal_dist.dirlock import run_lock
    with run_lock(sys.argv[1], sys.argv[2], ttl=float(sys.argv[3])):
        print("locked", flush=True)
        time.sleep(600)
""")
# One attempt in its own process: prints the outcome (and holds briefly when it wins).
ATTEMPT = textwrap.dedent("""
    import sys, time
    from autoal_dist.dirlock import RunLocked, run_lock
    try:
        with run_lock(sys.argv[1], sys.argv[2], ttl=float(sys.argv[3])):
            print("locked", flush=True)
            time.sleep(float(sys.argv[4]))
    except RunLocked as e:
        print(f"refused: {e}", flush=True)
""")


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def holder():
    """Start holder processes; each is SIGKILLed at the end of the test if still alive."""
    procs = []

    def start(location, command="autoal-dist import r --labels a.csv", ttl=60.0):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(location), command, str(ttl)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env())
        procs.append(p)
        line = p.stdout.readline()
        assert line.strip() == "locked", p.stderr.read()
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def attempt(location, command="autoal-dist run --resume", ttl=60.0, hold=0.0) -> str:
    p = subprocess.run([sys.executable, "-c", ATTEMPT, str(location), command, str(ttl),
                        str(hold)], capture_output=True, text=True, env=_env(), timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def killed(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)


# ---- local disks -------------------------------------------------------------------------------

def test_a_second_process_is_refused_naming_the_holder_and_sigkill_frees_it(tmp_path, holder):
    run = tmp_path / "run"
    p = holder(run)
    out = attempt(run)
    assert out.startswith("refused: --out: ") and "\n" not in out
    for part in (str(run), "'autoal-dist import r --labels a.csv'", f"pid {p.pid}",
                 socket.gethostname(), "since 20"):
        assert part in out, (part, out)
    # in this process too
    with pytest.raises(RunLocked) as e, run_lock(run, "autoal-dist import", field="import"):
        pass
    assert isinstance(e.value, ValueError) and str(e.value).startswith("import: ")
    assert e.value.holder["pid"] == p.pid
    assert lock_holder(run)["command"] == "autoal-dist import r --labels a.csv"
    killed(p)  # no cleanup ran: the kernel drops the lock with the process
    assert lock_holder(run) is None
    with run_lock(run, "autoal-dist run --resume") as lock:
        assert isinstance(lock, RunLock) and lock_holder(run)["pid"] == os.getpid()
        assert attempt(run).startswith("refused:")  # held by this process now
    assert attempt(run) == "locked"


def test_a_fresh_nonexistent_directory_is_locked_and_stays_empty(tmp_path, holder):
    """Two fresh runs on one new --out: the lock comes before the emptiness check."""
    run = tmp_path / "new" / "deeper" / "run"
    holder(run, "autoal-dist run --out run")
    assert (run / LOCK_NAME).is_file()
    assert remote.is_empty(str(run))  # .lock is hidden: still a place for a new run
    assert "autoal-dist run --out run" in attempt(run)


def test_one_process_cannot_take_its_own_lock_twice_and_reading_it_keeps_it(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, "first"):
        for _ in range(3):  # reading the holder must not open+close the file (drops the lock)
            assert lock_holder(run)["command"] == "first"
        with pytest.raises(RunLocked, match="'first'"), run_lock(str(run), "second"):
            pass
        # another name of the same directory
        with pytest.raises(RunLocked), run_lock(tmp_path / "." / "run", "third"):
            pass
        assert attempt(run).startswith("refused:")  # still held after all that
    assert lock_holder(run) is None
    with run_lock(run, "again"):  # released: free again, in this process and others
        pass
    assert attempt(run) == "locked"


def test_a_forked_child_exiting_does_not_release_the_parents_lock(tmp_path):
    """POSIX locks belong to the process: a DataLoader worker (fork) closing the inherited
    descriptor and exiting leaves the parent holding the lock."""
    run = tmp_path / "run"
    with run_lock(run, "parent") as lock:
        pid = os.fork()
        if pid == 0:  # the child: it holds nothing, and sees its parent hold it
            code = 2
            try:
                os.close(lock.fd)
                code = 0 if lock_holder(run)["command"] == "parent" else 1
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
        assert attempt(run).startswith("refused:")


def test_create_false_refuses_a_missing_directory(tmp_path):
    with pytest.raises(RunLockError, match="not a directory"), \
            run_lock(tmp_path / "gone", "import", create=False):
        pass
    assert not (tmp_path / "gone").exists()
    with run_lock(tmp_path, "import", create=False):
        pass


def test_wait_retries_until_the_holder_is_gone(tmp_path, holder):
    run = tmp_path / "run"
    p = holder(run)
    threading.Timer(1.0, p.kill).start()
    t0 = time.monotonic()
    with run_lock(run, "waiter", wait=30):
        assert time.monotonic() - t0 >= 0.9


def test_a_path_that_cannot_be_a_directory_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunLockError) as e, run_lock(tmp_path / "file", "run"):
        pass
    assert not isinstance(e.value, RunLocked) and "\n" not in str(e.value)
    assert str(e.value).startswith("--out: cannot lock")


def test_file_uri_gets_the_kernel_lock(tmp_path, holder):
    run = tmp_path / "run"
    holder(run.as_uri())
    assert attempt(run).startswith("refused:")  # the path and its file:// URI: one lock
    assert (run / LOCK_NAME).is_file()


# ---- object stores (moto's S3 server) -----------------------------------------------------------

@pytest.mark.slow
def test_s3_second_holder_refused_lease_renewed_then_expires_after_kill(s3_bucket, holder):
    uri = f"{s3_bucket}/runs/r1"
    ttl = 2.0
    p = holder(uri, "autoal-dist import s3 --labels b.csv", ttl)
    out = attempt(uri, ttl=ttl)
    assert out.startswith("refused: --out: ") and "\n" not in out
    for part in (uri, "'autoal-dist import s3 --labels b.csv'", f"pid {p.pid}", "lease runs to"):
        assert part in out, (part, out)
    assert remote.is_empty(uri)  # the lease entry is hidden
    assert lock_holder(uri)["pid"] == p.pid
    time.sleep(2 * ttl)  # the heartbeat renews it: still held well past one TTL
    with pytest.raises(RunLocked, match=f"pid {p.pid}"), run_lock(uri, "me", ttl=ttl):
        pass
    killed(p)  # no release: its entry stays, but its holder ran here and is gone
    assert lock_holder(uri) is None
    with run_lock(uri, "me", ttl=ttl) as lock:
        assert lock_holder(uri)["command"] == "me"
        d = remote.RemoteDir.open(uri)
        names = [i.base_name for i in
                 d.fs.get_file_info(pafs.FileSelector(f"{d.root}/{LOCK_NAME}"))]
        assert names == [f"{lock.holder['token']}.json"]  # the dead holder's entry was removed
        lock.verify()
    assert lock_holder(uri) is None and attempt(uri, ttl=ttl) == "locked"


@pytest.mark.slow
def test_s3_entry_of_another_machine_holds_until_its_lease_runs_out(s3_bucket):
    """A holder elsewhere (another host, or a pid this machine cannot see) may be alive: its
    entry is only ignored once its lease lapsed, and then removed."""
    from autoal_dist.dirlock import _new_record, _put

    uri = f"{s3_bucket}/runs/foreign"
    ttl = 2.0
    d = remote.RemoteDir.open(uri)
    for change in ({"host": "elsewhere"}, {"boot": "another-boot"}, {"pidns": "pid:[1]"}):
        record = {**_new_record("autoal-dist run"), "pid": 2 ** 22 + 7, "ttl": ttl,
                  "expires": time.time() + ttl, **change}
        _put(d, f"{d.root}/{LOCK_NAME}/{record['token']}.json", record)
        with pytest.raises(RunLocked, match="lease runs to"), run_lock(uri, "me", ttl=ttl):
            pass
        time.sleep(ttl + 1.0)
        with run_lock(uri, "me", ttl=ttl) as lock:
            names = [i.base_name for i in
                     d.fs.get_file_info(pafs.FileSelector(f"{d.root}/{LOCK_NAME}"))]
            assert names == [f"{lock.holder['token']}.json"]


@pytest.mark.slow
def test_s3_contenders_at_once_never_both_hold(s3_bucket):
    """Several processes start together: at most one holds; the others are refused."""
    uri = f"{s3_bucket}/runs/race"
    procs = [subprocess.Popen([sys.executable, "-c", ATTEMPT, uri, f"contender {i}", "30", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for i in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    results = [o.strip() for o, _ in outs]
    assert all(r == "locked" or r.startswith("refused:") for r in results), outs
    assert results.count("locked") <= 1, results
    assert lock_holder(uri) is None  # released (and the losers removed their entries)


def test_s3_lost_lease_is_detected(s3_bucket):
    """An entry removed under a holder (another process judged it expired): verify() says so."""
    uri = f"{s3_bucket}/runs/lost"
    with run_lock(uri, "me", ttl=1.0, interrupt=False) as lock:
        lock.verify()
        d = remote.RemoteDir.open(uri)
        d.fs.delete_file(f"{d.root}/{LOCK_NAME}/{lock.holder['token']}.json")
        with pytest.raises(RunLockError, match="lost"):
            lock.verify()
        deadline = time.monotonic() + 5
        while lock.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.lost is not None


def test_a_missing_bucket_is_one_line(s3_endpoint):
    with pytest.raises(RunLockError) as e, run_lock("s3://no-such-bucket-autoal/run", "run"):
        pass
    assert "\n" not in str(e.value) and "no-such-bucket-autoal" in str(e.value)


def test_local_lock_file_survives_release_and_is_hidden(tmp_path):
    """The lock file is never deleted (that would let two processes lock two inodes)."""
    run = tmp_path / "run"
    with run_lock(run, "x"):
        pass
    assert (run / LOCK_NAME).exists() and (run / LOCK_NAME).read_text() == ""
    assert remote.is_empty(str(run)) and Path(run).is_dir()
