"""``reviews report OUTPUT``: read a scoring output's ``_manifest.json`` and print its summary
(models/run_report.py) as rich tables on a terminal, plain text when piped, or JSON."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from models.run_report import Section, sections, summary


def load(uri: str) -> tuple[dict[str, Any], bool]:
    """The output's manifest, and whether ``_SUCCESS`` is there."""
    from infra import storage

    loc = storage.resolve(uri)
    try:
        manifest = storage.read_json(loc.join("_manifest.json"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{loc.uri} has no _manifest.json: not a scoring output, or its run has not "
                                "finished (the manifest is written at the end, also by a failing run)") from None
    return manifest, storage.exists(loc.join("_SUCCESS"))


def report(uri: str) -> dict[str, Any]:
    manifest, complete = load(uri)
    return summary(manifest, complete)


def print_report(s: dict[str, Any], file: TextIO | None = None, terminal: bool | None = None) -> None:
    file = file or sys.stdout
    if terminal is None:
        terminal = file.isatty()
    (_print_rich if terminal else _print_plain)(sections(s), file)


def _print_rich(parts: list[Section], file: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    for n, part in enumerate(parts):
        console.print(("\n" if n else "") + part.title, style="bold", markup=False, highlight=False)
        for line in part.lines:
            console.print(line, markup=False, highlight=False)
        headed = any(part.headers)
        table = Table(show_header=headed, show_lines=False)
        for i, h in enumerate(part.headers):
            table.add_column(h, justify="right" if i in part.right else "left", overflow="fold")
        for row in part.rows:
            table.add_row(*row)
        console.print(table)


def _print_plain(parts: list[Section], file: TextIO) -> None:
    """Columns padded with spaces, no colour, no box characters: for logs, pipes and grep."""
    for n, part in enumerate(parts):
        print(("\n" if n else "") + part.title, file=file)
        for line in part.lines:
            print(line, file=file)
        table = ([part.headers] if any(part.headers) else []) + part.rows
        if not table:
            continue
        widths = [max(len(r[i]) for r in table) for i in range(len(part.headers))]
        for row in table:
            cells = [c.rjust(w) if i in part.right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
            print("  ".join(cells).rstrip(), file=file)
