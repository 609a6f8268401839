"""Labelled review files on storage: finding them and reading their three columns.

Inputs are given like scoring inputs (a Parquet file, a directory/prefix or a glob,
on disk or ``s3://``) and found with :func:`infra.dump_reader.find_inputs`.  A file that
cannot be read or lacks a column fails the run with a :class:`LabelledDataError`
naming the file; judging single rows is :mod:`models.labelled_data`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage
from infra.dump_reader import find_inputs

COLUMNS = ("review_id", "label", "text")


class LabelledDataError(ValueError):
    """A labelled input cannot be used at all; the message names the file (or URI) and why."""


@dataclass(frozen=True)
class LabelledFile:
    uri: str
    path: str
    size: int
    mtime: str | None

    def identity(self) -> dict[str, object]:
        """What says the file is the same one: its URI, size and modification time."""
        return {"uri": self.uri, "size": self.size, "mtime": self.mtime}


def list_labelled(uris: list[str]) -> list[LabelledFile]:
    """Every file the URIs name, in the order given (each URI's files by path); a file that
    two URIs match is listed once, at its first place."""
    files: list[LabelledFile] = []
    seen: set[str] = set()
    for uri in uris:
        try:
            _, found = find_inputs(uri)
        except FileNotFoundError as exc:
            raise LabelledDataError(f"labelled data {exc}") from None
        for f in found:
            if f.uri not in seen:
                seen.add(f.uri)
                files.append(LabelledFile(f.uri, f.path, f.size, f.mtime))
    return files


def _check_schema(schema: pa.Schema, uri: str) -> None:
    missing = [c for c in COLUMNS if schema.get_field_index(c) < 0]
    if missing:
        raise LabelledDataError(f"{uri}: missing column(s) {', '.join(map(repr, missing))} "
                                f"(columns: {', '.join(schema.names) or 'none'}; labelled data needs "
                                f"{', '.join(COLUMNS)})")
    checks = {
        "review_id": (lambda t: pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t),
                      "an integer or string id"),
        "label": (lambda t: pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_floating(t),
                  "0/1 labels (integer, boolean or float)"),
        "text": (lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), "string review text"),
    }
    for name, (ok, expected) in checks.items():
        t = schema.field(name).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not ok(t):
            raise LabelledDataError(f"{uri}: column {name!r} has type {t}; expected {expected}")


def read_labelled(f: LabelledFile) -> pa.Table:
    """The file's ``review_id``, ``label`` and ``text`` columns (dictionary columns decoded)."""
    loc = storage.resolve(f.uri)
    try:
        with loc.fs.open_input_file(f.path) as handle:
            if handle.size() != f.size:
                raise LabelledDataError(f"{f.uri}: changed while the run read it ({f.size} bytes when listed, "
                                        f"{handle.size()} now); run again")
            pf = pq.ParquetFile(handle)
            _check_schema(pf.schema_arrow, f.uri)
            table = pf.read(columns=list(COLUMNS))
    except LabelledDataError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        if storage.is_transient(exc):
            raise
        if isinstance(exc, FileNotFoundError):
            raise LabelledDataError(f"{f.uri}: vanished while the run read it; run again") from exc
        if not isinstance(exc, (ValueError, pa.ArrowInvalid)):
            raise storage.describe_error(loc, exc) from exc
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LabelledDataError(f"{f.uri}: not a readable Parquet file ({first})") from exc
    columns = []
    for col in table.columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        columns.append(col.dictionary_decode() if pa.types.is_dictionary(col.type) else col)
    return pa.table(dict(zip(COLUMNS, columns)))

