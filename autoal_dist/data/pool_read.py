"""Read a stored pool lazily: `StoredArray`, `read_meta`, `open_pool`, `verify_pool`.

A `StoredArray` is an array-like over one split of a stored pool. It holds the pool's
location and its row-group table only, so it pickles to a few KB and can be shipped to
Ray actors; each process opens the filesystem itself on first use. Indexing it (ints,
slices, int or bool arrays) returns the numpy array indexing the in-memory array would,
reading only the row groups holding the requested rows (row -> (file, row group) comes
from pool.json, no file is listed or scanned). A small per-instance cache of decoded row
groups makes a batch-by-batch sweep (x[lo:lo+256], ...) read each row group once; a
second, bounded tier (`keep`) holds the row groups of one row range across calls, so a
Ray scorer actor that sweeps the same shard every round reads it from storage once.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq

from autoal_dist.data.base import DataError, Dataset, content_fingerprint, register
from autoal_dist.data.pool_format import (
    META_FILE,
    SPLITS,
    PoolMeta,
    digest,
    filesystem,
    from_arrow,
    full_name,
    normalize_location,
    one_line,
    schema_problem,
)

CACHE_BYTES = 64 << 20  # decoded row groups kept per StoredArray (per process)
# Rows read by id kept by the driver's training split: the labeled set, which training
# reads every round, then costs storage only its new rows' row groups (a labeled set's
# rows are scattered: 1,000 of them at 300k rows sit in 606 of 880 row groups).
ROW_CACHE_BYTES = 1 << 30
READERS = 4  # row groups read in parallel by one indexing call (pyarrow releases the GIL)
CHECK_THREADS = 8  # files checked in parallel when a pool is opened


class StoredArray:
    """Rows [start, stop) of one split of the stored pool at `location`, as an array-like.

    `shape`, `dtype`, `ndim`, `len()`, `nbytes` and indexing behave like the numpy array
    of those rows; converting the whole thing implicitly (np.asarray) is refused, so a
    stray full read of a large pool fails loudly: read it with `x[:]` if you mean it.
    Rows read by index arrays are remembered up to `row_cache_bytes` (0 unless set: the
    driver's training split sets it) and not read again.
    """

    cache_bytes = CACHE_BYTES
    readers = READERS
    row_cache_bytes = 0

    def __init__(self, location: str, split: str, meta: PoolMeta,
                 start: int = 0, stop: int | None = None):
        files = meta.splits[split]
        self.location = location
        self.split = split
        self._layout = dataclasses.replace(meta, splits={})  # shape, dtype, encoding
        self._paths = tuple(f.path for f in files)
        self._file_rows = np.array([f.rows for f in files], np.int64)
        self._file_groups = tuple(tuple(f.row_groups) for f in files)
        self._file_digests = tuple(tuple(f.samples) for f in files)  # () for older pools
        sizes = np.array([g for f in files for g in f.row_groups], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])  # global row of each group
        self._gfile = np.repeat(np.arange(len(files)), [len(f.row_groups) for f in files])
        self._gindex = np.concatenate([np.arange(len(f.row_groups)) for f in files])
        total = int(self._starts[-1])
        self.start = int(start)
        self.stop = total if stop is None else int(stop)
        if not 0 <= self.start <= self.stop <= total:
            raise IndexError(f"rows [{start}, {stop}) outside a split of {total} rows")
        self._init_cache()

    def _init_cache(self) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0
        self._kept: dict[int, np.ndarray] = {}  # the `keep` tier: never evicted by reads
        self._kept_bytes = 0
        self._keep_groups = range(0)  # global row groups the `keep` tier may hold
        self._keep_budget = 0
        self._footers: dict[int, Any] = {}
        self._rows: OrderedDict[int, np.ndarray] = OrderedDict()  # global row -> sample
        self._rows_bytes = 0
        self.groups_read = 0  # row groups fetched from storage by this process's copy
        self.bytes_read = 0  # their bytes in storage (the sample column's chunks, as stored)

    _PROCESS_LOCAL = ("_lock", "_cache", "_cached", "_kept", "_kept_bytes", "_keep_groups",
                      "_keep_budget", "_footers", "_rows", "_rows_bytes", "groups_read",
                      "bytes_read")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for key in self._PROCESS_LOCAL:
            state.pop(key)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_cache()

    # ---- array protocol ------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.stop - self.start, *self._layout.sample_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._layout.dtype)

    @property
    def ndim(self) -> int:
        return 1 + len(self._layout.sample_shape)

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def row_bytes(self) -> int:
        """Decoded bytes of one row."""
        return int(np.prod(self._layout.sample_shape)) * self.dtype.itemsize

    @property
    def max_group_bytes(self) -> int:
        """Decoded bytes of the largest row group of the split (what one read holds)."""
        rows = int(np.diff(self._starts).max()) if len(self._starts) > 1 else 0
        return rows * self.row_bytes

    def __repr__(self) -> str:
        return (f"StoredArray({self.location!r}, {self.split!r}, rows [{self.start}, "
                f"{self.stop}), shape={self.shape}, dtype={self.dtype})")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self!r} is not converted implicitly (that would read all of it); "
                        "index the rows you need, or x[:] to read it all")

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, tuple):
            if not key:
                return self[:]
            rows = self[key[0]]
            if isinstance(key[0], (int, np.integer)):
                return rows[key[1:]]
            return rows[(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
            i = int(key)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {n}")
            return self._take(np.array([i % n], np.int64))[0]
        if isinstance(key, slice):
            lo, hi, step = key.indices(n)
            if step == 1:
                return self._range(lo, max(lo, hi))
            return self._take(np.arange(lo, hi, step, dtype=np.int64))
        if key is None or key is Ellipsis:
            raise TypeError(f"StoredArray does not support index {key!r}")
        idx = np.asarray(key)
        if idx.dtype == np.bool_:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} does not match the "
                                 f"{n} rows")
            return self._take(np.flatnonzero(idx))
        if idx.size == 0 and idx.dtype.kind not in "iu":
            idx = idx.astype(np.int64)
        if idx.dtype.kind not in "iu":
            raise IndexError("arrays used as indices must be of integer (or boolean) type")
        flat = idx.reshape(-1).astype(np.int64)
        if len(flat) and (flat.min() < -n or flat.max() >= n):
            bad = flat[(flat < -n) | (flat >= n)][0]
            raise IndexError(f"index {bad} is out of bounds for axis 0 with size {n}")
        flat = np.where(flat < 0, flat + n, flat)
        return self._take(flat).reshape(*idx.shape, *self.shape[1:])

    # ---- views and shards --------------------------------------------------------------

    def view(self, lo: int, hi: int) -> StoredArray:
        """Rows [lo, hi) of this array, still lazy (x[lo:hi] reads them)."""
        lo, hi, _ = slice(lo, hi).indices(len(self))
        out = StoredArray.__new__(StoredArray)
        out.__setstate__({**self.__getstate__(), "start": self.start + lo,
                          "stop": self.start + max(lo, hi)})
        return out

    def row_group_bounds(self) -> np.ndarray:
        """Row indices (of this array) where a row group starts, plus 0 and len(self):
        shard boundaries taken from these read no row group twice."""
        inner = self._starts[(self._starts > self.start) & (self._starts < self.stop)]
        return np.concatenate([[0], inner - self.start, [len(self)]]).astype(np.int64)

    def read(self) -> np.ndarray:
        """All rows, in memory."""
        return self[:]

    # ---- the keep tier -----------------------------------------------------------------

    def keep(self, lo: int, hi: int, budget: int) -> None:
        """Keep the decoded row groups holding rows [lo, hi) of this array once read, up to
        `budget` bytes, across calls (beside the small LRU cache, which a sweep longer than
        it flushes). The first groups read are kept until the budget is spent; later ones
        go through the LRU cache only, so a sweep repeated every round reads only the part
        beyond the budget again. Kept groups outside the new range are dropped now."""
        lo, hi, _ = slice(lo, hi).indices(len(self))
        if hi > lo:
            first = int(np.searchsorted(self._starts, self.start + lo, "right")) - 1
            last = int(np.searchsorted(self._starts, self.start + hi - 1, "right")) - 1
            groups = range(first, last + 1)
        else:
            groups = range(0)
        with self._lock:
            self._keep_groups, self._keep_budget = groups, max(0, int(budget))
            for g in [g for g in self._kept if g not in groups]:
                self._kept_bytes -= self._kept.pop(g).nbytes
            while self._kept_bytes > self._keep_budget:  # a smaller budget: drop the last
                g = max(self._kept)
                self._kept_bytes -= self._kept.pop(g).nbytes

    @property
    def kept_bytes(self) -> int:
        """Decoded bytes held by the keep tier."""
        return self._kept_bytes

    @property
    def cached_bytes(self) -> int:
        """Decoded bytes held by both caches (the LRU one and the keep tier)."""
        return self._cached + self._kept_bytes

    # ---- reading ----------------------------------------------------------------------

    def _range(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty((hi - lo, *self.shape[1:]), self.dtype)
        if hi <= lo:
            return out
        a, b = self.start + lo, self.start + hi  # global rows
        first = int(np.searchsorted(self._starts, a, "right")) - 1
        last = int(np.searchsorted(self._starts, b - 1, "right")) - 1

        def fill(g: int) -> None:
            g_lo, g_hi = int(self._starts[g]), int(self._starts[g + 1])
            s, e = max(g_lo, a), min(g_hi, b)
            out[s - a:e - a] = self._group(g)[s - g_lo:e - g_lo]

        self._each(range(first, last + 1), fill)
        return out

    def take_rows(self, rows: np.ndarray, remember: bool = True) -> np.ndarray:
        """x[rows] for an int array of rows (local, in bounds); `remember=False` reads
        without adding them to the row cache (a sweep's rows are not read again by id)."""
        return self._take(np.asarray(rows, np.int64).reshape(-1), remember)

    @property
    def remembered_bytes(self) -> int:
        """Decoded bytes of the rows kept by id (the row cache)."""
        return self._rows_bytes

    def _take(self, rows: np.ndarray, remember: bool = True) -> np.ndarray:
        """Rows (local, in bounds, any order, repeats allowed) -> [len(rows), *sample]."""
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if not len(rows):
            return out
        glob = rows + self.start
        todo = np.arange(len(rows))
        if self._rows:
            with self._lock:
                found = [self._rows.get(g) for g in glob.tolist()]
                if remember:  # read again by id: these stay longest (the labeled set)
                    for g, r in zip(glob.tolist(), found):
                        if r is not None:
                            self._rows.move_to_end(g)
            for k, r in enumerate(found):
                if r is not None:
                    out[k] = r
            todo = np.flatnonzero([r is None for r in found])
        if len(todo):
            self._read_rows(out, todo, glob)
            if remember and self.row_cache_bytes:
                self._remember(out, todo, glob)
        return out

    def _read_rows(self, out: np.ndarray, todo: np.ndarray, glob: np.ndarray) -> None:
        """out[todo] = the global rows glob[todo], read group by group."""
        groups = np.searchsorted(self._starts, glob[todo], "right") - 1
        order = np.argsort(groups, kind="stable")
        uniq, first = np.unique(groups[order], return_index=True)
        bounds = np.append(first, len(order))

        def fill(k: int) -> None:
            g, pos = int(uniq[k]), todo[order[bounds[k]:bounds[k + 1]]]
            out[pos] = self._group(g)[glob[pos] - self._starts[g]]

        self._each(range(len(uniq)), fill)

    def _remember(self, out: np.ndarray, todo: np.ndarray, glob: np.ndarray) -> None:
        """Keep copies of the rows just read, dropping the least recently read beyond the
        budget (rows read once, e.g. a round's candidates, age out; the labeled set,
        read every round, stays)."""
        size = self.row_bytes
        if size > self.row_cache_bytes:
            return
        with self._lock:
            for k in todo.tolist():
                g = int(glob[k])
                if g in self._rows:
                    continue
                while self._rows_bytes + size > self.row_cache_bytes:
                    self._rows.popitem(last=False)
                    self._rows_bytes -= size
                row = out[k].copy()
                row.flags.writeable = False
                self._rows[g] = row
                self._rows_bytes += size

    def _each(self, items: range, fn: Callable[[int], None]) -> None:
        if len(items) <= 1 or self.readers <= 1:
            for i in items:
                fn(i)
            return
        with ThreadPoolExecutor(min(self.readers, len(items))) as ex:
            for _ in ex.map(fn, items):
                pass

    def _group(self, g: int) -> np.ndarray:
        """Row group `g` (global index) decoded, through the cache."""
        with self._lock:
            block = self._kept.get(g)
            if block is not None:
                return block
            block = self._cache.get(g)
            if block is not None:
                self._cache.move_to_end(g)
                return block
        block, stored = self._read_group(g)
        with self._lock:
            self.groups_read += 1
            self.bytes_read += stored
            if g in self._kept:
                return self._kept[g]
            if (g in self._keep_groups
                    and self._kept_bytes + block.nbytes <= self._keep_budget):
                self._kept[g] = block
                self._kept_bytes += block.nbytes
                if g in self._cache:
                    self._cached -= self._cache.pop(g).nbytes
            elif g not in self._cache and block.nbytes <= self.cache_bytes:
                self._cache[g] = block
                self._cached += block.nbytes
                while self._cached > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= old.nbytes
        return block

    def _read_group(self, g: int) -> tuple[np.ndarray, int]:
        """Row group `g` decoded, and the bytes its sample column takes in storage (what
        was fetched for it, the file's footer aside)."""
        fi, gi = int(self._gfile[g]), int(self._gindex[g])
        rel = self._paths[fi]
        name = full_name(self.location, rel)
        fs, root = filesystem(self.location)
        try:
            with fs.open_input_file(f"{root}/{rel}") as f:
                footer = self._footers.get(fi)
                pf = pq.ParquetFile(f, metadata=footer)
                if footer is None:
                    self._check_footer(fi, pf, name)
                    self._footers[fi] = pf.metadata
                table = pf.read_row_group(gi, columns=["sample"])
                group = pf.metadata.row_group(gi)
                stored = sum(group.column(c).total_compressed_size
                             for c in range(group.num_columns)
                             if group.column(c).path_in_schema.split(".")[0] == "sample")
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - filesystem/parquet errors of any kind
            raise DataError(f"stored pool: cannot read {name}: {one_line(e)}") from None
        block = from_arrow(table.column(0), self._layout, f"{name} row group {gi}")
        want = self._file_groups[fi][gi]
        if len(block) != want:
            raise DataError(f"{name}: row group {gi} has {len(block)} rows, pool.json says {want}")
        digests = self._file_digests[fi]
        if digests and digest(block) != digests[gi]:
            raise DataError(f"{name}: the samples of row group {gi} are not the ones pool.json "
                            "recorded (the file was replaced or changed after the pool was "
                            "written); a campaign needs the pool it started with")
        block.flags.writeable = False  # cached and shared between calls
        return block, stored

    def _check_footer(self, fi: int, pf: pq.ParquetFile, name: str) -> None:
        """The file still is the one pool.json describes (it may have been replaced)."""
        problem = check_file(pf, self._layout, int(self._file_rows[fi]), self._file_groups[fi])
        if problem:
            raise DataError(f"{name}: {problem}")


def check_file(pf: pq.ParquetFile, meta: PoolMeta, rows: int,
               groups: tuple[int, ...]) -> str | None:
    """Why an open part file does not match its pool.json entry (None if it does)."""
    problem = schema_problem(pf.schema_arrow, meta)
    if problem:
        return problem
    md = pf.metadata
    found = tuple(md.row_group(i).num_rows for i in range(md.num_row_groups))
    if md.num_rows != rows or found != tuple(groups):
        return (f"{md.num_rows} rows in {md.num_row_groups} row groups, but pool.json records "
                f"{rows} rows in {len(groups)} (a file replaced after the pool was written?)")
    return None


# ---- opening a pool --------------------------------------------------------------------


def read_meta(location: str, check_digest: bool = True) -> PoolMeta:
    """pool.json of the pool at `location`; a missing, malformed or (if `check_digest`)
    edited one is a DataError."""
    location = normalize_location(location)
    fs, root = filesystem(location)
    name = full_name(location, META_FILE)
    from pyarrow import fs as pafs

    try:
        info = fs.get_file_info(f"{root}/{META_FILE}")
        if info.type == pafs.FileType.NotFound:
            what = ("does not exist" if fs.get_file_info(root).type == pafs.FileType.NotFound
                    else "is a campaign run directory, not a stored pool (pool write makes one)"
                    if fs.get_file_info(f"{root}/config.json").type == pafs.FileType.File
                    else "holds no pool.json (an incomplete pool: its writer writes pool.json "
                         "last)")
            raise DataError(f"stored pool {location} {what}; expected {name}")
        with fs.open_input_stream(f"{root}/{META_FILE}") as f:
            text = f.read().decode("utf-8")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(f"stored pool: cannot read {name}: {one_line(e)}") from None
    return PoolMeta.from_json(text, name, location, check_digest)


def _check_split(location: str, meta: PoolMeta, split: str) -> np.ndarray:
    """Check every file of `split` against pool.json (schema, row groups) and its ids and
    labels; returns the split's labels. Reads the footers and the id and label columns."""
    fs, root = filesystem(location)
    files = meta.splits[split]
    offsets = np.concatenate([[0], np.cumsum([f.rows for f in files])])
    total = int(offsets[-1])

    def check(i: int) -> np.ndarray:
        f = files[i]
        name = full_name(location, f.path)
        try:
            with fs.open_input_file(f"{root}/{f.path}") as src:
                pf = pq.ParquetFile(src)
                problem = check_file(pf, meta, f.rows, f.row_groups)
                if problem:
                    raise DataError(f"{name}: {problem}")
                table = pf.read(columns=["id", "label"])
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"stored pool: {name} is missing (listed in pool.json)") from None
        except Exception as e:  # noqa: BLE001
            raise DataError(f"stored pool: cannot read {name}: {one_line(e)}") from None
        ids = table.column("id").to_numpy()
        want = np.arange(offsets[i], offsets[i + 1])
        if not np.array_equal(ids, want):
            r = int(np.flatnonzero(ids != want)[0])
            v = int(ids[r])
            where = ""
            if 0 <= v < total:
                owner = files[int(np.searchsorted(offsets, v, "right")) - 1].path
                where = f"; id {v} belongs to {full_name(location, owner)}" + (
                    " too (a duplicate)" if owner != f.path else "")
            if r == 0 and v > want[0]:  # the file starts later than pool.json says
                where = (f"; pool.json lists no file for ids {want[0]}..{v - 1}: the entry of a "
                         f"file before {f.path} is missing from it (or a file was renamed)")
            raise DataError(f"{name}: row {r} has id {v}, expected {want[r]} (ids run "
                            f"0..{total - 1} in file order{where})")
        y = table.column("label").to_numpy()
        bad = (y < 0) | (y >= meta.num_classes)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataError(f"{name}: row {r} has label {int(y[r])}, outside "
                            f"[0, {meta.num_classes - 1}] (num_classes={meta.num_classes})")
        starts = np.concatenate([[0], np.cumsum(f.row_groups)])
        for g, recorded in enumerate(f.labels):  # per row group (none in older pools)
            if digest(y[starts[g]:starts[g + 1]]) != recorded:
                raise DataError(f"{name}: the labels of row group {g} are not the ones pool.json "
                                "recorded (the file was replaced or changed after the pool was "
                                "written); a campaign needs the pool it started with")
        return y.astype(np.int64, copy=False)

    if len(files) == 1:
        return check(0)
    with ThreadPoolExecutor(min(CHECK_THREADS, len(files))) as ex:
        return np.concatenate(list(ex.map(check, range(len(files)))))


def open_pool(location: str, *, materialize_test: bool = True, name: str | None = None,
              meta: PoolMeta | None = None) -> Dataset:
    """The stored pool at `location` as a Dataset whose train_x is a StoredArray.

    Checks pool.json (against its header digest, where it has one) and every file's
    footer, ids and labels (the id and label columns are read: 16 bytes a row); the
    samples are read only when indexed. The test split
    is read into memory when `materialize_test` (every round evaluates all of it, so a
    lazy one would be re-read from storage every round; it is the small split). `meta`:
    pool.json as already read (by default it is read here)."""
    location = normalize_location(location)
    meta = read_meta(location) if meta is None else meta
    train_y = _check_split(location, meta, "train")
    test_y = _check_split(location, meta, "test")
    stored = StoredArray(location, "test", meta)
    test_x = stored[:] if materialize_test else stored
    # Dataset's arrays are typed np.ndarray; a StoredArray stands in for one (it has the
    # shape/dtype/len/indexing the campaign uses), which the cast records for mypy.
    train = StoredArray(location, "train", meta)
    train.row_cache_bytes = ROW_CACHE_BYTES  # the driver's: the labeled set, read each round
    train_x = cast(np.ndarray, train)
    return Dataset(name or f"pool:{location}", train_x, train_y, cast(np.ndarray, test_x), test_y,
                   meta.num_classes, known_fingerprint=meta.fingerprint,
                   normalizer_stats=meta.normalizer_stats())


def verify_pool(location: str, meta: PoolMeta | None = None) -> PoolMeta:
    """Read all of a pool and check its content against pool.json: everything `open_pool`
    checks (pool.json's header digest included), then every row group's samples against their
    digests, and the fingerprint and Normalizer statistics recomputed from the samples must
    equal the recorded ones. The returned metadata's `header_digest` is "" for a pool
    written before pool.json recorded one (still accepted). `meta`: pool.json as already
    read (`pool seal` reads it without checking its digest)."""
    from autoal_dist.data.transforms import Normalizer

    meta = read_meta(location) if meta is None else meta
    data = open_pool(location, meta=meta)
    where = full_name(normalize_location(location), META_FILE)
    found = content_fingerprint(data.train_x, data.train_y, data.test_x, data.test_y)
    if found != meta.fingerprint:
        raise DataError(f"{where}: the samples' fingerprint {found} differs from the recorded "
                        f"{meta.fingerprint}")
    norm = Normalizer.fit(data.train_x)
    mean, std = meta.normalizer_stats()
    if not (np.array_equal(norm.mean, mean) and np.array_equal(norm.std, std)):
        raise DataError(f"{where}: the recorded normalizer statistics differ from the samples'")
    return meta


@register("pool", "pool:DIR_OR_URI")
def load_pool(arg: str, data_root: str | None, seed: int) -> Dataset:
    """A stored pool (written by `write_pool` / `autoal-dist pool write`): the training
    split stays on storage and is read by row, the test split is read into memory."""
    if not arg:
        raise DataError("dataset 'pool' needs a location: 'pool:DIR' or 'pool:s3://BUCKET/DIR'")
    return open_pool(arg, name=f"pool:{arg}")


__all__ = ["SPLITS", "StoredArray", "check_file", "load_pool", "open_pool", "read_meta",
           "verify_pool"]
