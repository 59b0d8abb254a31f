"""The array library a set strategy's shard computes with: numpy on CPU, torch on CUDA.

The strategy math (kcenter.py, badge.py, kmeans.py, sharded.py) is written once,
with operators and the few functions numpy and torch share by name (`xp.minimum`,
`xp.where`, `xp.clip`, `xp.amin`, `xp.round`, `xp.bincount`, methods like `.min()`
and `.argmin(1)`); this module holds only what differs between them: where arrays
live, dtypes, the products, and exact per-row selection helpers. On CPU numpy is
the faster library here (OpenBLAS GEMV ~1.2-2x torch/MKL's on the project's
machines), so the torch backend serves CUDA (and torch on CPU, for the tests that
hold the two libraries to the same selections).

Exactness (sharded.py's rule 1) rests on one property: every product whose bits a
selection keeps runs on row blocks of one fixed shape, so a row's value does not
depend on which shard holds it. numpy calls BLAS once per block (a stacked matmul,
single-threaded); torch pads a shard to whole chunks of a fixed row count and runs
one product per chunk, so every CUDA call has the same shape. CPU parallelism comes
from running chunks on the actor's threads, never from threading inside one product.
The greedy steps' float32 screening products (`screen.py`) are the exception: their
bits decide nothing, so they run as one call over the shard on BLAS's own threads.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np

Array = Any  # np.ndarray or torch.Tensor, as the backend makes them
CHUNK_ROWS = 4096  # rows per unit of work on CPU; a chunk is whole blocks
CUDA_CHUNK_ROWS = 16384  # fewer, larger launches on a GPU (padding stays small)


def available_threads() -> int:
    """This process's CPU threads: a Ray actor's OMP_NUM_THREADS (Ray sets it to the
    actor's num_cpus), else every core the process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))


@cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="set-strategy")


@cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class Backend(ABC):
    """Arrays of one device. `xp` is the namespace (numpy or torch) for shared names."""

    xp: Any
    f64: Any
    f32: Any
    i64: Any
    boolean: Any

    def __init__(self, block: int, chunk_rows: int) -> None:
        self.block = block
        self.chunk = block * max(1, chunk_rows // block)  # whole blocks

    @abstractmethod
    def put(self, x: np.ndarray) -> Array:
        """A host array on this device (dtype kept)."""

    @abstractmethod
    def host(self, a: Array) -> np.ndarray:
        """A device array back on the host."""

    @abstractmethod
    def full(self, n: int, value: Any, dtype: Any) -> Array: ...

    @abstractmethod
    def cast(self, a: Array, dtype: Any) -> Array: ...

    @abstractmethod
    def padded_rows(self, n: int) -> int:
        """Rows a shard of `n` rows is padded to (padding rows are never selected)."""

    @abstractmethod
    def block_matmul(self, x: Array, c: Array) -> Array:
        """x [rows, D] @ c ([D] or [D, k]), each block of rows one product of a fixed shape."""

    @abstractmethod
    def kth_smallest(self, d: Array, r: int) -> Array:
        """Per row of d [k, m], its r-th smallest value, as [k, 1] (exact: a selection)."""

    @abstractmethod
    def segment_sum(self, values: Array, labels: Array, k: int, out: Array | None = None) -> Array:
        """Per label in [0, k), the sum of its rows of `values` (int64: exact in any order),
        added into `out` [k, D] when given (and returned)."""

    def chunks(self, n_rows: int) -> list[slice]:
        """The shard's units of work: whole blocks, `self.chunk` rows at most."""
        return [slice(i, min(i + self.chunk, n_rows)) for i in range(0, n_rows, self.chunk)]

    def spans(self, n_rows: int) -> list[slice]:
        """The shard in one run of whole blocks per thread (per-row work: no memory bound)."""
        return [slice(0, n_rows)]

    def map(self, fn: Callable[[slice], Any], n_rows: int, spans: bool = False) -> list[Any]:
        """fn over the chunks (or `spans`) of `n_rows` rows, in order (CPU: on the actor's
        threads)."""
        return [fn(ch) for ch in (self.spans if spans else self.chunks)(n_rows)]

    def flatnonzero(self, mask: Array) -> np.ndarray:
        return np.flatnonzero(self.host(mask))

    @abstractmethod
    def nonzero(self, mask: Array) -> Array:
        """Positions of a 1-d mask's True entries, on this device."""

    @abstractmethod
    def min_at(self, target: Array, rows: Array, values: Array) -> None:
        """target[rows] = min(target[rows], values), repeated rows included (exact: a min)."""

    @abstractmethod
    def ceil32(self, a: Array) -> Array:
        """float32 values >= a's float64 ones (a float32 comparison that misses nothing)."""

    @abstractmethod
    def floor32(self, a: Array) -> Array:
        """float32 values <= a's float64 ones."""

    @property
    def f32_unit(self) -> float:
        """Unit roundoff of this library's float32 products (screen.py's bounds)."""
        return 2.0**-24


class NumpyBackend(Backend):
    """numpy on the CPU: one single-threaded BLAS call per block, chunks on `threads` threads."""

    xp = np
    f64, f32, i64, boolean = np.float64, np.float32, np.int64, np.bool_

    def __init__(self, block: int, threads: int | None = None) -> None:
        super().__init__(block, CHUNK_ROWS)
        self.threads = threads or available_threads()

    def put(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x)

    def host(self, a: np.ndarray) -> np.ndarray:
        return a

    def full(self, n: int, value: Any, dtype: Any) -> np.ndarray:
        return np.full(n, value, dtype=dtype)

    def cast(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        return a.astype(dtype, copy=False)

    def padded_rows(self, n: int) -> int:
        return -(-n // self.block) * self.block

    def block_matmul(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        # A stacked matmul loops over the blocks in C, one BLAS call of shape [block, D] each.
        out = np.matmul(x.reshape(-1, self.block, x.shape[1]), c)
        return out.reshape((len(x),) + c.shape[1:])

    def kth_smallest(self, d: np.ndarray, r: int) -> np.ndarray:
        return np.partition(d, r - 1, axis=1)[:, r - 1 : r]

    def nonzero(self, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask)

    def min_at(self, target: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
        np.minimum.at(target, rows, values)

    def ceil32(self, a: np.ndarray) -> np.ndarray:
        return np.nextafter(a.astype(np.float32), np.float32(np.inf))

    def floor32(self, a: np.ndarray) -> np.ndarray:
        return np.nextafter(a.astype(np.float32), np.float32(-np.inf))

    def segment_sum(self, values: np.ndarray, labels: np.ndarray, k: int,
                    out: np.ndarray | None = None) -> np.ndarray:
        counts = np.bincount(labels, minlength=k)
        filled = np.flatnonzero(counts)
        starts = np.concatenate([[0], np.cumsum(counts[filled])[:-1]])
        part = np.add.reduceat(values[np.argsort(labels, kind="stable")], starts, axis=0)
        if out is None:
            out = np.zeros((k, values.shape[1]), dtype=values.dtype)
            out[filled] = part
        else:
            out[filled] += part
        return out

    def spans(self, n_rows: int) -> list[slice]:
        blocks = -(-n_rows // self.block)
        cuts = [min(n_rows, blocks * i // self.threads * self.block)
                for i in range(self.threads + 1)]
        return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

    def map(self, fn: Callable[[slice], Any], n_rows: int, spans: bool = False) -> list[Any]:
        # BLAS pinned to one thread: a product's rounding must not depend on its thread split
        # (and threads inside BLAS besides threads over chunks would oversubscribe the CPUs).
        with _blas().limit(limits=1, user_api="blas"):
            chunks = (self.spans if spans else self.chunks)(n_rows)
            if self.threads == 1 or len(chunks) == 1:
                return [fn(ch) for ch in chunks]
            return list(_pool(self.threads).map(fn, chunks))


class TorchBackend(Backend):
    """torch on `device` (CUDA, or CPU for tests): shards padded to whole fixed-shape chunks."""

    def __init__(self, block: int, device: str) -> None:
        import torch

        super().__init__(block, CUDA_CHUNK_ROWS if device.startswith("cuda") else CHUNK_ROWS)
        self.xp, self.device = torch, torch.device(device)
        self.f64, self.f32, self.i64, self.boolean = (torch.float64, torch.float32, torch.int64,
                                                      torch.bool)

    def put(self, x: np.ndarray) -> Any:
        return self.xp.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def host(self, a: Any) -> np.ndarray:
        return a.cpu().numpy()

    def full(self, n: int, value: Any, dtype: Any) -> Any:
        return self.xp.full((n,), value, dtype=dtype, device=self.device)

    def cast(self, a: Any, dtype: Any) -> Any:
        return a.to(dtype)

    def padded_rows(self, n: int) -> int:
        return -(-n // self.chunk) * self.chunk

    def block_matmul(self, x: Any, c: Any) -> Any:
        return x @ c  # x is one whole chunk: every call has the same shape

    def kth_smallest(self, d: Any, r: int) -> Any:
        return d.kthvalue(r, dim=1, keepdim=True).values

    def nonzero(self, mask: Any) -> Any:
        return mask.nonzero().squeeze(1)

    def min_at(self, target: Any, rows: Any, values: Any) -> None:
        target.scatter_reduce_(0, rows, values, reduce="amin")

    def ceil32(self, a: Any) -> Any:
        inf = self.xp.tensor(float("inf"), dtype=self.f32, device=self.device)
        return self.xp.nextafter(a.to(self.f32), inf)

    def floor32(self, a: Any) -> Any:
        inf = self.xp.tensor(float("-inf"), dtype=self.f32, device=self.device)
        return self.xp.nextafter(a.to(self.f32), inf)

    @property
    def f32_unit(self) -> float:
        # TF32 ("high") or bf16 ("medium") float32 matmuls round far more coarsely
        precision = self.xp.get_float32_matmul_precision()
        tf32 = self.device.type == "cuda" and self.xp.backends.cuda.matmul.allow_tf32
        return {"highest": 2.0**-11 if tf32 else 2.0**-24, "high": 2.0**-11}.get(precision,
                                                                                  2.0**-8)

    def segment_sum(self, values: Any, labels: Any, k: int, out: Any = None) -> Any:
        if out is None:
            out = self.xp.zeros((k, values.shape[1]), dtype=values.dtype, device=self.device)
        return out.index_add_(0, labels, values)


def backend_for(device: str, block: int) -> Backend:
    """numpy for "cpu", torch for anything else ("cuda", "cuda:1", or "torch-cpu" for tests)."""
    if device == "cpu":
        return NumpyBackend(block)
    return TorchBackend(block, "cpu" if device == "torch-cpu" else device)


def pad_rows(x: np.ndarray, rows: int, value: Any = 0, dtype: Any = None) -> np.ndarray:
    """x (cast to `dtype`) with rows of `value` appended up to `rows`, in one allocation
    written once."""
    out = np.empty((rows,) + x.shape[1:], dtype=dtype or x.dtype)
    out[: len(x)] = x
    out[len(x) :] = value
    return out
