"""A terminal progress line (rows, rows/s, ETA) for long scoring runs.

Only drawn when stderr is a terminal; task bodies call :func:`advance`, which is a
no-op unless a bar is active in this process.
"""

from __future__ import annotations

import sys
import threading
import time

_active: "ProgressBar | None" = None


class ProgressBar:
    def __init__(self, total: int, label: str = "scoring", stream=None):
        self.total, self.label, self.done = max(total, 0), label, 0
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._last = 0.0

    def __enter__(self) -> "ProgressBar":
        global _active
        _active = self
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        global _active
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()
        _active = None

    def advance(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        frac = self.done / self.total if self.total else 1.0
        eta = (self.total - self.done) / rate if rate > 0 and self.total else 0.0
        bar = "#" * int(30 * min(frac, 1.0))
        self.stream.write(f"\r{self.label} [{bar:<30}] {self.done:,}/{self.total:,} rows  "
                          f"{rate:,.0f} rows/s  ETA {eta:,.0f}s ")
        self.stream.flush()


def advance(rows: int) -> None:
    if _active is not None:
        _active.advance(rows)


def bar(total: int, label: str = "scoring") -> "ProgressBar | None":
    return ProgressBar(total, label) if sys.stderr.isatty() else None
