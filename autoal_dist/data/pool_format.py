"""The stored pool's on-storage format: layout, pool.json, the parquet schema, filesystems.

A stored pool is a directory (local path, shared mount, or a pyarrow URI such as
`s3://bucket/pools/tin`) holding

    train/part-00000.parquet ...   the pool, ids 0..N-1 in order across the files
    test/part-00000.parquet ...    the test split, ids 0..M-1
    pool.json                      written last: a pool without it is incomplete

Each parquet file has the columns `id` int64 (delta-encoded: sequential ids cost next to
nothing), `label` int64 and `sample`: per-sample uint8 bytes as fixed_size_binary(H*W*C)
(encoding `raw`), one PNG per row as binary (encoding `png`, lossless), or float32
features as fixed_size_list<float32>[F]. pool.json records everything a reader needs to
map a row to (file, row group) without opening any file: every file's row count and its
row groups' row counts, plus the sample shape, dtype, encoding, class count, the content
fingerprint (`Dataset.fingerprint()` of the in-memory data) and the Normalizer statistics,
and `header_digest`: the `digest` of its own other fields (canonical JSON), so an edit to
pool.json after the pool was written (its class count, sample layout, file table) is refused
when it is read. Pools written before it existed have none and are read as before.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from autoal_dist import remote
from autoal_dist.data.base import DataError

FORMAT = "autoal-dist-pool"
VERSION = 1
META_FILE = "pool.json"
SPLITS = ("train", "test")
ENCODINGS = ("raw", "png")
SCHEMA_KEY = b"autoal_dist.pool"  # parquet key-value metadata: the file's sample layout
PNG_MODES = {1: "L", 3: "RGB"}
HEADER_DIGEST = "header_digest"  # pool.json's digest of its own other fields


def one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def part_name(split: str, index: int) -> str:
    return f"{split}/part-{index:05d}.parquet"


# ---- pool.json --------------------------------------------------------------------------


@dataclass(frozen=True)
class PartFile:
    path: str  # relative to the pool root, e.g. "train/part-00003.parquet"
    rows: int
    row_groups: tuple[int, ...]  # rows per row group, in order; sums to `rows`
    # per row group, `digest` of its labels and of its decoded samples: a file replaced by
    # one with the same ids and row groups but other labels or samples is refused when read
    # (empty in pools written before the digests were recorded)
    labels: tuple[str, ...] = ()
    samples: tuple[str, ...] = ()


def digest(values: np.ndarray) -> str:
    """A row group's content digest: SHA-256 (128 bits kept) of the array's bytes, ~1.3 GB/s
    on the 2-core Intel VM: the samples are hashed as they are decoded, the labels when a pool
    is opened."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(values).data).hexdigest()[:32]


def header_digest(fields: dict) -> str:
    """pool.json's digest of its own fields (all but `header_digest`): `digest` of their
    canonical JSON (sorted keys, no whitespace), so re-indenting the file changes nothing
    and a changed value, added or removed field changes it. Taken over the parsed JSON, not
    over PoolMeta, so a field a later writer adds (as the part digests were) is covered too."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return digest(np.frombuffer(text.encode(), np.uint8))


@dataclass(frozen=True)
class PoolMeta:
    """The contents of pool.json."""
    name: str  # the dataset the pool was written from (its spec or name)
    num_classes: int
    sample_shape: tuple[int, ...]  # (H, W, C) or (F,)
    dtype: str  # "uint8" (images) or "float32" (features)
    encoding: str  # "raw" or "png" (images only)
    fingerprint: str
    normalizer_mean: tuple[float, ...]
    normalizer_std: tuple[float, ...]
    splits: dict[str, tuple[PartFile, ...]] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION
    # as read from pool.json ("": none, a pool written before it existed); not part of the
    # metadata itself: `to_json` computes it afresh, equality ignores it
    header_digest: str = field(default="", compare=False)

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3

    def rows(self, split: str) -> int:
        return sum(f.rows for f in self.splits[split])

    def normalizer_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(self.normalizer_mean, np.float32),
                np.asarray(self.normalizer_std, np.float32))

    def json_fields(self) -> dict:
        """pool.json's fields but its header digest (tuples are written as JSON lists)."""
        d = asdict(self)
        del d[HEADER_DIGEST]
        d["splits"] = {s: [asdict(f) for f in files] for s, files in self.splits.items()}
        return d

    def sealed(self) -> PoolMeta:
        """This metadata with its header digest (what `to_json` records)."""
        return dataclasses.replace(self, header_digest=header_digest(self.json_fields()))

    def to_json(self) -> str:
        d = self.json_fields()
        d[HEADER_DIGEST] = header_digest(d)
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str, location: str = "DIR",
                  check_digest: bool = True) -> PoolMeta:
        """Parse pool.json; anything malformed, or edited since its header digest was taken
        (unless not `check_digest`: `pool seal`), is a one-line DataError naming `where`, the
        file of the pool at `location`."""
        try:
            d = json.loads(text)
        except ValueError as e:
            raise DataError(f"{where}: not valid JSON ({one_line(e)})") from None
        except RecursionError:
            raise DataError(f"{where}: JSON nested too deeply; not a stored pool's "
                            "metadata") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DataError(f"{where}: not a stored pool's metadata (no \"format\": \"{FORMAT}\")")
        if d.get("version") != VERSION:
            raise DataError(f"{where}: pool format version {d.get('version')!r} is not "
                            f"supported (this version of autoal-dist reads {VERSION})")
        sealed = HEADER_DIGEST in d  # not in pools written before it existed
        recorded = d.pop(HEADER_DIGEST, None)
        if check_digest and sealed and recorded != header_digest(d):
            raise DataError(
                f"{where}: edited after `pool write` wrote it: its header no longer matches its "
                f"digest ({HEADER_DIGEST} covers {', '.join(sorted(d))}; which field changed "
                "cannot be told); undo the edit, or write the pool again with `autoal-dist "
                "pool write`, or, if the edit was intended, `autoal-dist pool seal "
                f"{location}` checks the pool against pool.json as it now reads and records "
                "its digest")
        try:
            splits = {s: tuple(PartFile(str(f["path"]), int(f["rows"]),
                                        tuple(int(g) for g in f["row_groups"]),
                                        tuple(str(x) for x in f.get("labels", ())),
                                        tuple(str(x) for x in f.get("samples", ())))
                               for f in d["splits"][s]) for s in SPLITS}
            meta = cls(
                name=str(d["name"]), num_classes=int(d["num_classes"]),
                sample_shape=tuple(int(v) for v in d["sample_shape"]), dtype=str(d["dtype"]),
                encoding=str(d["encoding"]), fingerprint=str(d["fingerprint"]),
                normalizer_mean=tuple(float(v) for v in d["normalizer_mean"]),
                normalizer_std=tuple(float(v) for v in d["normalizer_std"]),
                splits=splits, header_digest=recorded if isinstance(recorded, str) else "",
            )
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed pool metadata ({one_line(e)})") from None
        meta.check(where)
        return meta

    def check(self, where: str) -> None:
        """Internal consistency of the metadata itself (files are checked by the reader)."""
        shape, n_stats = self.sample_shape, len(self.normalizer_mean)
        if len(shape) == 3:
            ok = self.dtype == "uint8" and shape[2] in (1, 3) and self.encoding in ENCODINGS
            want_stats = shape[2]
        elif len(shape) == 1:
            ok = self.dtype == "float32" and self.encoding == "raw"
            want_stats = shape[0]
        else:
            ok, want_stats = False, -1
        if not ok or min(shape, default=0) < 1:
            raise DataError(f"{where}: unsupported sample layout shape={list(shape)} "
                            f"dtype={self.dtype} encoding={self.encoding} (expected uint8 "
                            "[H,W,1|3] raw|png, or float32 [F] raw)")
        if n_stats != want_stats or len(self.normalizer_std) != want_stats:
            raise DataError(f"{where}: normalizer statistics have {n_stats} values, expected "
                            f"{want_stats}")
        if self.num_classes < 2:
            raise DataError(f"{where}: num_classes={self.num_classes}, need >= 2")
        for split in SPLITS:
            paths = [f.path for f in self.splits[split]]
            if not paths:
                raise DataError(f"{where}: the {split} split lists no files")
            if len(set(paths)) != len(paths):
                raise DataError(f"{where}: the {split} split lists a file twice")
            for f in self.splits[split]:
                if (f.rows < 1 or min(f.row_groups, default=0) < 1
                        or sum(f.row_groups) != f.rows):
                    raise DataError(f"{where}: {f.path}: {f.rows} rows but row groups "
                                    f"{list(f.row_groups)[:8]}")
                if f.path.startswith("/") or ".." in f.path.split("/"):
                    raise DataError(f"{where}: file {f.path!r} lies outside the pool")
                for what, digests in (("labels", f.labels), ("samples", f.samples)):
                    if digests and len(digests) != len(f.row_groups):
                        raise DataError(f"{where}: {f.path}: {len(digests)} {what} digests "
                                        f"for {len(f.row_groups)} row groups")


# ---- parquet schema ---------------------------------------------------------------------


def sample_type(shape: tuple[int, ...], encoding: str) -> pa.DataType:
    if len(shape) == 1:
        return pa.list_(pa.float32(), shape[0])
    if encoding == "png":
        return pa.binary()
    return pa.binary(int(np.prod(shape)))


def layout_key(meta: PoolMeta) -> bytes:
    return json.dumps({"sample_shape": list(meta.sample_shape), "dtype": meta.dtype,
                       "encoding": meta.encoding}, sort_keys=True).encode()


def file_schema(meta: PoolMeta) -> pa.Schema:
    """Every part file's arrow schema, its sample layout in the key-value metadata (so a
    PNG file of another image size is recognised from its footer, without decoding)."""
    return pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("sample", sample_type(meta.sample_shape, meta.encoding), nullable=False),
    ], metadata={SCHEMA_KEY: layout_key(meta)})


def schema_problem(found: pa.Schema, meta: PoolMeta) -> str | None:
    """Why a part file's schema does not fit the pool (None if it does)."""
    want = file_schema(meta)
    got = [(f.name, f.type) for f in found]
    exp = [(f.name, f.type) for f in want]
    if got != exp:
        return ("schema " + ", ".join(f"{n}: {t}" for n, t in got)
                + " differs from the pool's " + ", ".join(f"{n}: {t}" for n, t in exp))
    layout = (found.metadata or {}).get(SCHEMA_KEY)
    if layout != layout_key(meta):
        return (f"sample layout {layout.decode() if layout else 'unrecorded'} differs from the "
                f"pool's {layout_key(meta).decode()}")
    return None


# ---- samples <-> arrow --------------------------------------------------------------------


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[2] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def to_arrow(x: np.ndarray, meta: PoolMeta, threads: int = 1) -> pa.Array:
    """Samples [n, *sample_shape] -> the `sample` column."""
    n = len(x)
    if len(meta.sample_shape) == 1:
        flat = pa.array(np.ascontiguousarray(x, np.float32).reshape(-1), pa.float32())
        return pa.FixedSizeListArray.from_arrays(flat, meta.sample_shape[0])
    if meta.encoding == "png":
        if threads > 1 and n > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as ex:
                blobs = list(ex.map(encode_png, x))
        else:
            blobs = [encode_png(img) for img in x]
        return pa.array(blobs, pa.binary())
    width = int(np.prod(meta.sample_shape))
    data = pa.py_buffer(np.ascontiguousarray(x, np.uint8).reshape(-1))
    return pa.Array.from_buffers(pa.binary(width), n, [None, data])


def from_arrow(col: pa.Array | pa.ChunkedArray, meta: PoolMeta, where: str) -> np.ndarray:
    """The `sample` column of one row group -> [n, *sample_shape] (read-only when zero-copy)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if arr.null_count:
        raise DataError(f"{where}: column 'sample' has {arr.null_count} empty values")
    shape = meta.sample_shape
    if len(shape) == 1:
        return arr.flatten().to_numpy(zero_copy_only=False).reshape(n, *shape)
    if meta.encoding == "raw":
        width = int(np.prod(shape))
        buf = arr.buffers()[1]
        return np.frombuffer(buf, np.uint8, count=n * width,
                             offset=arr.offset * width).reshape(n, *shape)
    from PIL import Image

    mode = PNG_MODES[shape[2]]
    out = np.empty((n, *shape), np.uint8)
    for i, blob in enumerate(arr.to_pylist()):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if im.format != "PNG" or im.mode != mode:
                    raise DataError(f"{where}: row {i} is a {im.format} {im.mode} image, "
                                    f"expected a PNG in mode {mode}")
                img = np.asarray(im)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds on a corrupt image
            raise DataError(f"{where}: row {i}: cannot decode the image: {one_line(e)}") from None
        img = img[..., None] if img.ndim == 2 else img
        if img.shape != shape:
            raise DataError(f"{where}: row {i} is an image of shape {img.shape}, the pool's "
                            f"samples have shape {shape}")
        out[i] = img
    return out


# ---- filesystems -------------------------------------------------------------------------

_FS: dict[tuple[int, str], tuple[Any, str]] = {}  # (pid, location) -> (filesystem, root)
_FS_LOCK = threading.Lock()


def normalize_location(location: str | os.PathLike) -> str:
    """A URI as given; a local path made absolute (a pool shipped to another process or
    node must not depend on the working directory)."""
    if remote.is_uri(location):
        problem = remote.check_uri(str(location))
        if problem is not None:
            raise DataError(f"stored pool: {problem}")
        return str(location).rstrip("/")
    return str(Path(location).expanduser().absolute())


def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow filesystem, root path inside it) for a pool location, cached per process."""
    key = (os.getpid(), location)
    with _FS_LOCK:
        hit = _FS.get(key)
    if hit is not None:
        return hit
    from pyarrow import fs as pafs

    if remote.is_uri(location):
        problem = remote.check_uri(location)
        if problem is not None:
            raise DataError(f"stored pool: {problem}")
        try:
            fs, root = pafs.FileSystem.from_uri(location)
        except Exception as e:  # noqa: BLE001 - pyarrow raises ValueError/OSError/ArrowInvalid
            raise DataError(f"stored pool {location}: cannot open: {one_line(e)}") from None
        root = root.rstrip("/")
    else:
        fs, root = pafs.LocalFileSystem(), location
    with _FS_LOCK:
        _FS[key] = (fs, root)
    return fs, root


def full_name(location: str, rel: str) -> str:
    """What an error message calls file `rel` of the pool at `location`."""
    return remote.join(location, *rel.split("/"))
