"""Reading the rows a forward pass needs, in order, from a pool that may be on storage.

`with rows_at(x, positions) as rows:` gives what `compute_outputs` should iterate over: the rows
themselves for an in-memory pool (a copy, as numpy indexing makes), or a `RowsAt` over a
stored pool (`StoredArray`), which reads each batch when it is sliced and the next one
ahead on a thread, so a pass holds a few batches of the pool, never all of it. Used by
the scorer actors and by the in-process scorer alike.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

TRIM_EVERY = 16  # batches between two `release_free_memory` calls during a stored pass


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to release this way
        return None


_LIBC = _libc()


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim; a no-op elsewhere).

    A forward pass frees batch-sized buffers (the uint8 rows read, the float32 batch, the
    activations); glibc keeps freed pages for reuse, and what one batch's sizes cannot reuse
    stays resident. Trimming every few batches keeps that to a few batches' worth, for ~5%
    of the pass's time."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class RowsAt:
    """Rows `positions` of a stored pool, read as they are sliced (`compute_outputs` takes
    x[lo:lo + batch] in order): each slice is read from storage when asked for, and the
    next slice of the same length is read ahead on one thread while the model runs. Every
    `TRIM_EVERY` slices the heap's free pages are released (`release_free_memory`)."""

    def __init__(self, x: Any, positions: np.ndarray, read_ahead: bool = True) -> None:
        self.x, self.positions = x, positions
        # a sweep's rows are not worth remembering by id (a StoredArray's row cache is for
        # the labeled set, read every round)
        take = getattr(x, "take_rows", None)
        self._read: Callable[[np.ndarray], np.ndarray] = (
            (lambda idx: take(idx, remember=False)) if take is not None else x.__getitem__)
        self._ahead: ThreadPoolExecutor | None = (ThreadPoolExecutor(1) if read_ahead
                                                  else None)
        self._next: tuple[int, int, Future] | None = None
        self._slices = 0

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: slice) -> np.ndarray:
        lo, hi, step = key.indices(len(self))
        if step != 1:
            raise IndexError("RowsAt takes contiguous slices")
        self._slices += 1
        if self._slices % TRIM_EVERY == 0:
            release_free_memory()
        nxt, self._next = self._next, None
        rows = (nxt[2].result() if nxt is not None and nxt[:2] == (lo, hi)
                else self._read(self.positions[lo:hi]))
        if self._ahead is not None and hi < len(self):
            n_lo, n_hi = hi, min(len(self), hi + (hi - lo))
            self._next = (n_lo, n_hi, self._ahead.submit(self._read, self.positions[n_lo:n_hi]))
        return rows

    def close(self) -> None:
        if self._next is not None:  # an abandoned read ahead (an error mid-pass)
            self._next[2].cancel()
        if self._ahead is not None:
            self._ahead.shutdown(wait=True)
        release_free_memory()


@contextmanager
def rows_at(x: Any, positions: np.ndarray) -> Iterator[Any]:
    """The rows of `x` at `positions` for a forward pass: a copy of an in-memory array's,
    a lazy `RowsAt` over a stored pool's, whose read-ahead thread stops on leaving."""
    if isinstance(x, np.ndarray):
        yield x[positions]
        return
    rows = RowsAt(x, positions)
    try:
        yield rows
    finally:
        rows.close()
