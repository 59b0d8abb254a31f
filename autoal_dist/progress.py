"""What a long step is doing, on stderr: phase lines, and a heartbeat while one runs long.

In-process runs draw tqdm bars; steps that run elsewhere (Ray Train jobs, scorer actors,
the AutoAL search job) cannot, so they announce themselves, say when they end, and repeat
every `every_s` seconds while they run, so a slow step never looks like a hang.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    def __init__(self, enabled: bool, every_s: float = 30.0) -> None:
        self.enabled, self.every_s = enabled, every_s

    def note(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    @contextmanager
    def phase(self, what: str, done: str) -> Iterator[None]:
        """`what ...` on entry, `done (seconds)` on exit, `still <what>` while it runs."""
        if not self.enabled:
            yield
            return
        start = time.monotonic()
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.every_s):
                self.note(f"  ... still {what} ({time.monotonic() - start:.0f} s)")

        self.note(f"  {what} ...")
        ticker = threading.Thread(target=heartbeat, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
        self.note(f"  {done} ({time.monotonic() - start:.1f} s)")


QUIET = Progress(False)
