"""Reading review dumps: finding the input Parquet files, planning work units over
their row groups, and streaming a unit's record batches.  (Output parts are written
by :mod:`infra.part_writer`, review dumps by :mod:`infra.dump_writer`.)

A work unit is a file plus a contiguous row-group range, so units stay coarse (a
dump of many files does not become thousands of tiny tasks) and each unit is
read as a stream of record batches: memory is bounded by the batch size, not by
the file or dump size.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from infra import storage

GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    uri: str
    path: str
    size: int
    mtime: str | None


@dataclass
class Unit:
    """A file x row-group range; its id is stable across runs of the same input."""

    file_uri: str
    path: str
    row_groups: list[int]
    first_row: int
    rows: int
    unit_id: str = ""

    def __post_init__(self) -> None:
        if not self.unit_id:
            digest = hashlib.sha1(self.file_uri.encode()).hexdigest()[:12]
            self.unit_id = f"{digest}-rg{self.row_groups[0]:05d}-{self.row_groups[-1]:05d}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FilePlan:
    file: InputFile
    rows: int = 0
    row_groups: int = 0
    units: list[Unit] = field(default_factory=list)
    error: str | None = None
    schema: pa.Schema | None = None  # the file's Arrow schema, when its footer is readable


def _has_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


def find_inputs(uri: str, resolve: Callable[[str], storage.Location] = storage.resolve
                ) -> tuple[storage.Location, list[InputFile]]:
    """A Parquet file, a directory/prefix (all ``*.parquet`` below it) or a glob.

    ``resolve``: how URIs become locations (a run's ``RunStorage.resolve``, to use its settings).
    """
    if _has_glob(uri):
        # Resolve the part before the first glob component; match the rest.
        head, _, _ = uri.partition(next(c for c in uri if c in GLOB_CHARS))
        base_uri = head.rsplit("/", 1)[0] if "/" in head else "."
        base = resolve(base_uri)
        pattern = base.path.rstrip("/") + uri[len(base_uri):]
        infos = [i for i in storage.list_files(base) if fnmatch.fnmatchcase(i.path, pattern)]
    else:
        base = resolve(uri)
        try:
            info = base.fs.get_file_info(base.path)
        except (OSError, pa.ArrowException) as exc:
            raise storage.describe_error(base, exc) from exc
        if info.type == pafs.FileType.File:
            infos = [info]
        elif info.type == pafs.FileType.Directory or not base.is_local:
            infos = [i for i in storage.list_files(base)
                     if i.base_name.endswith(".parquet") and not _is_hidden(i.path, base.path)]
        else:
            raise FileNotFoundError(f"{base.uri}: no such file or directory")
    files = [
        InputFile(uri=_uri_of(base, i.path), path=i.path, size=int(i.size or 0),
                  mtime=i.mtime.isoformat() if i.mtime else None)
        for i in sorted(infos, key=lambda i: i.path)
    ]
    if not files:
        raise FileNotFoundError(f"{uri}: no Parquet input files found")
    return base, files


def _is_hidden(path: str, root: str) -> bool:
    rel = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
    return any(p.startswith((".", "_")) for p in rel.split("/"))


def _uri_of(base: storage.Location, path: str) -> str:
    return path if base.is_local else f"s3://{path}"


def open_parquet(fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
    return pq.ParquetFile(fs.open_input_file(path))


def plan_file(fs: pafs.FileSystem, f: InputFile, max_rows_per_unit: int,
              check_schema=None) -> FilePlan:
    """Read one footer and group its row groups into units; errors are recorded, not raised."""
    plan = FilePlan(file=f)
    try:
        pf = open_parquet(fs, f.path)
        meta, schema = pf.metadata, pf.schema_arrow
    except (OSError, pa.ArrowException, ValueError) as exc:
        if storage.is_transient(exc):
            raise  # a throttled footer read is not a bad file: let the task retry
        plan.error = f"{f.uri}: {one_line(exc)}"
        return plan
    # Known even when the schema does not fit, so that a failed file's rows are still counted.
    plan.rows, plan.row_groups, plan.schema = meta.num_rows, meta.num_row_groups, schema
    if check_schema is not None:
        try:
            check_schema(schema)
        except (pa.ArrowException, ValueError) as exc:
            plan.error = f"{f.uri}: {one_line(exc)}"
            return plan
    group: list[int] = []
    group_rows = first = row = 0
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        if group and group_rows + n > max_rows_per_unit:
            plan.units.append(Unit(f.uri, f.path, group, first, group_rows))
            group, group_rows = [], 0
        if not group:
            first = row
        group.append(rg)
        group_rows += n
        row += n
    if group:
        plan.units.append(Unit(f.uri, f.path, group, first, group_rows))
    return plan


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_unit_column(fs: pafs.FileSystem, unit: Unit, column: str) -> pa.ChunkedArray:
    """One column of a unit's row groups (e.g. the ids, for a pass over the whole dump)."""
    return open_parquet(fs, unit.path).read_row_groups(unit.row_groups, columns=[column]).column(0)


def iter_unit_batches(pf: pq.ParquetFile, unit: Unit, columns: list[str],
                      batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(row number of the batch's first row in the file, batch) for every batch of the unit."""
    row = unit.first_row
    # One thread: units already run side by side with the predictor's threads, and Arrow's pools
    # cost 0.1-0.5 s on each of their first reads in a process (a row group decodes in ~20 ms).
    for batch in pf.iter_batches(batch_size=batch_size, row_groups=unit.row_groups, columns=columns,
                                 use_threads=False):
        yield row, batch
        row += batch.num_rows
