"""Run directories on object stores and other pyarrow filesystems (`s3://`, `gs://`, ...).

A multi-node campaign's driver, its Ray Train workers and its Tune trials run on
different machines, so a run directory on one node's disk is not enough. Object stores
have no rename, which the local store's commit protocol (temp file, fsync, rename) is
built on; they do have atomic object writes: a PUT (or a completed multipart upload)
shows readers the old object or the whole new one, never a part.

So a remote run is *staged*: the campaign works in a private local copy (the staging
directory) with the ordinary atomic renames, and each file it commits there is then
uploaded as one object, synchronously, in commit order (the writer calls
`Staged.commit`; the run object does for every file of a run). The remote directory is
therefore always a prefix of the local commit sequence: exactly the state a crash just
before the next rename leaves on local disk, from which `--resume` already continues.
Opening an existing remote run always starts from a fresh download: the remote copy is the
truth, never a staging copy a killed process left behind. S3 and GCS are strongly
consistent (read-after-write and list), so the next process sees every object the last one
committed.

Ray Train's own storage (`train/`) is not staged: Train writes there from every worker
through pyarrow itself (`train_location`).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from autoal_dist.errors import UserError, first_line

# pyarrow filesystems whose object writes are atomic; the others get a temp name + move.
ATOMIC_PUT = {"s3", "gcs", "abfs"}
SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
TRAIN_DIR = "train"  # Ray Train's storage inside a run directory: written by Train, not staged
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_COPY_CHUNK = 8 << 20
STAGING_PREFIX = "autoal-dist-staging-"
OWNER = "owner"  # in a staging directory's parent: "<host> <pid> <process start>"


class RemoteError(UserError):
    """A storage URI that cannot be used: unknown scheme, or the filesystem refuses it."""



def is_uri(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and _URI.match(location) is not None


def check_uri(location: str) -> str | None:
    """Why `location` is not a usable storage URI (None if it is, or is a plain path)."""
    m = _URI.match(location) if isinstance(location, str) else None
    if m is None:
        return None
    if m.group(1).lower() not in SCHEMES:
        return (f"unsupported scheme {m.group(1)!r} in {location!r}; allowed: a local path or "
                + ", ".join(f"{s}://" for s in SCHEMES))
    base = location.split("?", 1)[0]
    if not base[m.end():].strip("/"):
        return f"{location!r} names no bucket or directory"
    return None


def join(location: str | os.PathLike, *parts: str) -> str:
    """`location/parts...` for a local path or a URI (query parameters stay at the end)."""
    if not is_uri(location):
        return str(Path(location, *parts))
    base, sep, query = str(location).partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


@dataclass
class RemoteDir:
    """One directory of a pyarrow filesystem, read and written file by file."""
    uri: str
    fs: Any  # pyarrow.fs.FileSystem
    root: str  # the directory's path inside `fs`

    @classmethod
    def open(cls, uri: str) -> RemoteDir:
        from pyarrow import fs as pafs

        problem = check_uri(uri)
        if problem is not None:
            raise RemoteError(problem)
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
        except Exception as e:  # pyarrow raises ValueError/OSError/ArrowInvalid by cause
            raise RemoteError(f"cannot open {uri!r}: {first_line(e)}") from None
        return cls(uri, fs, root.rstrip("/"))

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def files(self, skip: tuple[str, ...] = ()) -> list[str]:
        """Relative paths of the files below the root; temp/hidden files and `skip` dirs left
        out."""
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True,
                                                        allow_not_found=True))
        out = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            rel = PurePosixPath(info.path).relative_to(self.root)
            if rel.parts[0] in skip or any(p.startswith(".") for p in rel.parts):
                continue
            out.append(rel.as_posix())
        return sorted(out)

    def is_empty(self) -> bool:
        return not self.files()

    def check_bucket(self) -> None:
        """An object store's bucket must exist: listing a missing one just looks empty."""
        from pyarrow import fs as pafs

        if self.fs.type_name in ATOMIC_PUT:
            bucket = self.root.split("/", 1)[0]
            if self.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise RemoteError(f"bucket {bucket!r} of {self.uri} does not exist (or these "
                                  "credentials cannot see it); create it first")

    def download(self, staging: Path, skip: tuple[str, ...] = (TRAIN_DIR,)) -> int:
        """Copy every file into `staging`; returns how many."""
        names = self.files(skip)
        for rel in names:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(self._path(rel)) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        return len(names)

    def upload(self, local: Path, rel: str) -> None:
        """Write `local` as the object `rel`, whole or not at all."""
        dest = self._path(rel)
        if self.fs.type_name in ATOMIC_PUT:
            self._write(local, dest)
            return
        parent = dest.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{dest.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
        self._write(local, tmp)
        self.fs.move(tmp, dest)  # a rename on local disks and HDFS

    def _write(self, local: Path, dest: str) -> None:
        with open(local, "rb") as src, self.fs.open_output_stream(dest) as dst:
            shutil.copyfileobj(src, dst, _COPY_CHUNK)

    def delete(self, rel: str) -> None:
        """Remove the directory `rel` below the root, if there is one."""
        from pyarrow import fs as pafs

        path = self._path(rel)
        if self.fs.get_file_info(path).type != pafs.FileType.NotFound:
            self.fs.delete_dir(path)


# ---- staging ---------------------------------------------------------------------------

@dataclass
class Staged:
    """A directory opened for work as a local path (`opened`): a local directory is itself;
    a URI's is a private staging copy, and `commit` uploads a file just committed there.
    Whoever writes into it calls `commit` after each write (the run object does, for every
    run-directory file): no hidden registry decides what is uploaded."""

    local: Path
    location: str  # what a user (or another node) calls the directory: its path or URI
    mirror: RemoteDir | None = None

    def relative(self, path: str | os.PathLike) -> str:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(self.local)).as_posix()

    def where(self, path: str | os.PathLike) -> str:
        """What a user calls `path`, a path inside the directory: below its URI if staged."""
        if self.mirror is None:
            return str(path)
        rel = self.relative(path)
        return self.location if rel == "." else join(self.location, *rel.split("/"))

    def commit(self, path: str | os.PathLike) -> None:
        """Upload `path`, a file just committed in the staging copy (no-op when local)."""
        if self.mirror is not None:
            self.mirror.upload(Path(path), self.relative(path))


def is_empty(location: str, field: str = "--out") -> bool:
    """Whether a new run may start at `location`: it holds no files (hidden ones aside)."""
    if is_uri(location):
        try:
            d = RemoteDir.open(location)
            d.check_bucket()
            return d.is_empty()
        except (RemoteError, OSError) as e:
            raise RemoteError(f"{field}: {first_line(e)}") from None
    path = Path(location)
    if not path.exists():
        return True
    return path.is_dir() and all(p.name.startswith(".") for p in path.iterdir())


def remove_tree(location: str) -> None:
    """Delete a directory given as a local path or a URI; a missing one is fine."""
    if not is_uri(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    remote = RemoteDir.open(location)
    remote.delete("")


@contextmanager
def opened(location: str | os.PathLike, *, download: bool = True,
           field: str = "--out") -> Iterator[Staged]:
    """The directory at `location` as a local directory (`Staged`).

    A local path is itself. A URI gets a private staging directory (under $TMPDIR,
    named like the remote one), filled from the remote copy when `download`, whose
    committed files the writer uploads (`Staged.commit`), and removed on exit; those a
    killed process left are removed by the next open (`sweep_stale_staging`). A URI that
    cannot be opened raises RemoteError naming `field`.
    """
    if not is_uri(location):
        yield Staged(Path(location), str(location))
        return
    try:
        remote = RemoteDir.open(str(location))
        remote.check_bucket()
    except (RemoteError, OSError) as e:
        raise RemoteError(f"{field}: {first_line(e)}") from None
    name = PurePosixPath(remote.root).name or "run"
    sweep_stale_staging(Path(tempfile.gettempdir()))
    parent = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))
    (parent / OWNER).write_text(_owner())
    staging = parent / name
    staging.mkdir()
    try:
        if download:
            try:
                remote.download(staging)
            except OSError as e:
                raise RemoteError(f"{field}: cannot read {location}: {first_line(e)}") from None
        yield Staged(staging, str(location), remote)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _process_start(pid: int) -> str:
    """When process `pid` started (clock ticks since boot; "" where /proc cannot say): with
    the pid, it names one process, not a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def _owner() -> str:
    """This process, as a staging directory's owner file names it."""
    pid = os.getpid()
    return f"{socket.gethostname()} {pid} {_process_start(pid) or '-'}"


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    return start == "-" or _process_start(pid) in ("", start)


def sweep_stale_staging(tmp: Path) -> int:
    """Remove the staging directories under `tmp` whose process is gone (a SIGKILLed or
    lost process cannot remove its own); returns how many. Only this host's, and only
    those with an owner file: one still being created, or another host's on a shared
    TMPDIR, is left alone. The remote copy is the truth, so nothing is lost."""
    host, removed = socket.gethostname(), 0
    for d in tmp.glob(STAGING_PREFIX + "*"):
        try:
            who, pid, start = (d / OWNER).read_text().split()
            if who != host or _alive(int(pid), start):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed += 1
    return removed
