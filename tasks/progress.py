"""A terminal progress line (rows, rows/s, ETA) for long scoring runs, drawn by rich.

Only drawn when stderr is a terminal; task bodies call :func:`advance`, which is a
no-op unless a bar is active in this process (units on Dask workers draw nothing).
It lives in ``tasks/`` because task bodies report to it and tasks never import flows.
"""

from __future__ import annotations

import sys
from typing import IO, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

_active: ProgressBar | None = None


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        # Rows done over time since start: rich's own speed is a moving window that drops to
        # nothing between units (a unit reports once per record batch).
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.0f} rows/s")


class ProgressBar:
    def __init__(self, total: int, label: str = "scoring", stream: IO[str] | None = None):
        console = Console(file=stream or sys.stderr)
        # No stdout/stderr redirection: the CLI's JSON summary must stay on stdout alone.
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30),
            TextColumn("{task.completed:,}/{task.total:,} rows"), _RowsPerSecond(),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=console, refresh_per_second=5, redirect_stdout=False, redirect_stderr=False)
        self._task = self._progress.add_task(label, total=max(total, 0), start=False)

    def __enter__(self) -> Self:
        global _active
        self._progress.start()
        self._progress.start_task(self._task)
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        _active = None
        self._progress.stop()

    def advance(self, rows: int) -> None:
        self._progress.advance(self._task, rows)  # thread-safe: units of one process share the bar


def advance(rows: int) -> None:
    bar_ = _active
    if bar_ is not None:
        bar_.advance(rows)


def bar(total: int, label: str = "scoring") -> ProgressBar | None:
    return ProgressBar(total, label) if sys.stderr.isatty() else None
