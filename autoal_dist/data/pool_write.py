"""Write a Dataset as a stored pool (format: pool_format.py).

The part files go first, pool.json last: on a local disk as a temp file renamed into
place after every part file is fsynced, on an object store as one PUT (atomic there). A
writer killed half way therefore leaves a directory without pool.json, which every
reader refuses as incomplete, never a pool that looks whole.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autoal_dist import remote
from autoal_dist.data.base import DataError, Dataset, validate
from autoal_dist.data.pool_format import (
    ENCODINGS,
    META_FILE,
    PartFile,
    PoolMeta,
    digest,
    file_schema,
    filesystem,
    full_name,
    normalize_location,
    one_line,
    part_name,
    to_arrow,
)
from autoal_dist.dirlock import run_lock
from autoal_dist.store import fsync_path

GROUP_BYTES = 4 << 20  # default row-group size: ~4 MiB of raw samples
GROUPS_PER_FILE = 64  # default file size: 64 row groups (~256 MiB raw)
MAX_GROUP_ROWS = 65536


def default_rows_per_group(sample_bytes: int) -> int:
    """Rows per row group: ~4 MiB of raw samples, at least 64 rows, at most 65536."""
    return int(min(MAX_GROUP_ROWS, max(64, GROUP_BYTES // max(1, sample_bytes))))


def write_pool(data: Dataset, to: str, rows_per_file: int | None = None, encoding: str = "raw",
               *, rows_per_group: int | None = None, threads: int | None = None,
               progress: Callable[[str], None] | None = None) -> PoolMeta:
    """Write `data` as a stored pool at `to` (a local directory or a URI); returns its metadata.

    `rows_per_group` rows make a row group, the unit a reader fetches (default: ~4 MiB of
    raw samples); `rows_per_file` rows a file (default: 64 row groups). `encoding` is `raw`
    (uint8 bytes) or `png` (lossless, smaller for natural images, decoded on read); feature
    datasets are always raw float32. `data` may be lazy: a stored pool (a copy, e.g. to
    re-encode) or undecoded image files (`load_dataset(..., lazy=True)`); it is read a row
    group at a time, and the fingerprint and normaliser statistics of files are then taken
    from the pool just written (reading raw rows back is cheaper than decoding images
    twice more). `progress` gets a line after each part file. `to` must be empty or absent.
    """
    if encoding not in ENCODINGS:
        raise DataError(f"pool encoding {encoding!r} unknown; allowed: {', '.join(ENCODINGS)}")
    validate(data)
    shape = tuple(int(d) for d in data.input_shape)
    if not data.is_image and encoding != "raw":
        raise DataError(f"pool encoding {encoding!r} is for images; dataset {data.name!r} holds "
                        "features, which are stored as raw float32")
    sample_bytes = int(np.prod(shape)) * (1 if data.is_image else 4)
    group = rows_per_group or default_rows_per_group(sample_bytes)
    per_file = rows_per_file or group * GROUPS_PER_FILE
    if group < 1 or per_file < 1:
        raise DataError(f"rows per group ({group}) and per file ({per_file}) must be >= 1")
    threads = threads or os.cpu_count() or 1

    location = normalize_location(to)
    # One writer per target, from before it is found empty to pool.json: a second `pool write`
    # on it is refused naming the first, never interleaved with it.
    with run_lock(location, "autoal-dist pool write", field="pool target"):
        return _write_locked(data, location, shape, encoding, group, per_file, threads, progress)


def _write_locked(data: Dataset, location: str, shape: tuple[int, ...], encoding: str,
                  group: int, per_file: int, threads: int,
                  progress: Callable[[str], None] | None) -> PoolMeta:
    """`write_pool` under the target's lock: the target must be empty, then every part,
    then pool.json."""
    try:
        empty = remote.is_empty(location, field="pool target")
    except remote.RemoteError as e:
        raise DataError(str(e)) from None
    if not empty:
        raise DataError(f"pool target {location} is not empty; write a pool into a new "
                        "directory (or delete that one first)")

    # Statistics of the source, unless reading it again means decoding it again (image
    # files): then of the pool once written, which holds the same samples bit for bit.
    later = data.known_fingerprint is None and data.is_stored
    meta = PoolMeta(
        name=data.name, num_classes=int(data.num_classes), sample_shape=shape,
        dtype="uint8" if data.is_image else "float32",
        encoding=encoding if data.is_image else "raw", fingerprint="",
        normalizer_mean=(), normalizer_std=(),
    )
    if not later:
        meta = _with_statistics(meta, data)
    fs, root = filesystem(location)
    schema = file_schema(meta)
    splits = {}
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        files = []
        for i, lo in enumerate(range(0, len(x), per_file)):
            hi = min(len(x), lo + per_file)
            rel = part_name(split, i)
            groups, labels, samples = _write_part(fs, f"{root}/{rel}", full_name(location, rel),
                                                  schema, meta, x, y, lo, hi, group, threads)
            files.append(PartFile(rel, hi - lo, tuple(groups), tuple(labels),
                                  tuple(samples)))
            if progress is not None:
                progress(f"pool write: {split} {hi:,}/{len(x):,} rows "
                         f"({full_name(location, rel)})")
        splits[split] = tuple(files)
    meta = dataclasses.replace(meta, splits=splits)
    if later:
        from autoal_dist.data.pool_read import StoredArray

        if progress is not None:
            progress("pool write: fingerprint and normaliser statistics, from the pool written")
        def part(split: str) -> np.ndarray:  # an array-like standing in for the array
            return cast(np.ndarray, StoredArray(location, split, meta))

        meta = _with_statistics(meta, dataclasses.replace(
            data, train_x=part("train"), test_x=part("test")))
    meta.check(f"pool {location}")
    _commit_meta(fs, root, location, meta)
    return meta.sealed()


def _with_statistics(meta: PoolMeta, data: Dataset) -> PoolMeta:
    """`meta` with `data`'s fingerprint and Normalizer statistics (read in row chunks)."""
    from autoal_dist.data.transforms import Normalizer

    norm = Normalizer.for_dataset(data)
    return dataclasses.replace(meta, fingerprint=data.fingerprint(),
                               normalizer_mean=tuple(float(v) for v in norm.mean),
                               normalizer_std=tuple(float(v) for v in norm.std))


def _write_part(fs: Any, path: str, name: str, schema: pa.Schema, meta: PoolMeta,
                x, y: np.ndarray, lo: int, hi: int, group: int, threads: int
                ) -> tuple[list[int], list[str], list[str]]:
    """Rows [lo, hi) as one parquet file of row groups of `group` rows; returns their sizes
    and the digests of their labels and samples (`pool_format.digest`). The file appears
    whole or not at all: one PUT on an object store, a temp name and a rename elsewhere."""
    sizes: list[int] = []
    labels: list[str] = []
    samples: list[str] = []
    parent, base = path.rsplit("/", 1)
    target = path if fs.type_name in remote.ATOMIC_PUT else \
        f"{parent}/.{base}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(target) as sink, pq.ParquetWriter(
            sink, schema,
            use_dictionary=["label"],  # ids are delta-encoded; samples are not repetitive
            column_encoding={"id": "DELTA_BINARY_PACKED"},
            write_statistics=["id", "label"],  # min/max of 12 KB blobs would bloat the footer
        ) as writer:
            for g_lo in range(lo, hi, group):
                g_hi = min(hi, g_lo + group)
                xs = x[g_lo:g_hi]
                if not meta.is_image and not np.isfinite(xs).all():
                    raise DataError(f"dataset {meta.name!r}: features rows {g_lo}..{g_hi - 1} "
                                    "contain NaN or inf")
                ys = np.asarray(y[g_lo:g_hi], np.int64)
                table = pa.Table.from_arrays([
                    pa.array(np.arange(g_lo, g_hi, dtype=np.int64)), pa.array(ys),
                    to_arrow(xs, meta, threads),
                ], schema=schema)
                writer.write_table(table, row_group_size=g_hi - g_lo)
                sizes.append(g_hi - g_lo)
                labels.append(digest(ys))
                samples.append(digest(np.asarray(xs, meta.dtype)))
        if fs.type_name == "local":
            fsync_path(target)
        if target != path:
            fs.move(target, path)
    except DataError:
        _discard(fs, target, path)
        raise
    except Exception as e:  # noqa: BLE001 - filesystem and parquet errors of any kind
        _discard(fs, target, path)
        raise DataError(f"cannot write {name}: {one_line(e)}") from None
    return sizes, labels, samples


def _discard(fs: Any, target: str, path: str) -> None:
    """A failed part's temp file goes (a complete part under its name is never half-written)."""
    if target != path:
        try:
            fs.delete_file(target)
        except Exception:  # noqa: BLE001 - best effort: a leftover temp file is hidden
            pass


def seal_pool(location: str) -> PoolMeta:
    """Record the header digest of pool.json as it now reads, after checking the whole pool
    against it (`verify_pool`: files, ids, labels, samples, fingerprint, normaliser
    statistics): for an edit to pool.json that was intended, or a pool an older version wrote
    without one. Under the pool's lock, as `pool write` holds it; pool.json is rewritten as
    this version writes it (unknown fields dropped)."""
    from autoal_dist.data.pool_read import read_meta, verify_pool

    location = normalize_location(location)
    read_meta(location, check_digest=False)  # a missing pool.json: the one-line message first
    with run_lock(location, "autoal-dist pool seal", field="pool", create=False):
        meta = read_meta(location, check_digest=False)
        verify_pool(location, meta)
        fs, root = filesystem(location)
        _commit_meta(fs, root, location, meta)
    return meta.sealed()


def _commit_meta(fs: Any, root: str, location: str, meta: PoolMeta) -> None:
    """pool.json, last and whole: one PUT on an object store, temp + rename on a disk; with
    its header digest (`PoolMeta.to_json`)."""
    data = meta.to_json().encode()
    dest = f"{root}/{META_FILE}"
    try:
        if fs.type_name in remote.ATOMIC_PUT:
            with fs.open_output_stream(dest) as out:
                out.write(data)
            return
        tmp = f"{root}/.{META_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        if fs.type_name == "local":
            fsync_path(tmp)
            for split in ("train", "test"):
                fsync_path(f"{root}/{split}")
        fs.move(tmp, dest)
        if fs.type_name == "local":
            fsync_path(root)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot write {full_name(location, META_FILE)}: {one_line(e)}") from None
