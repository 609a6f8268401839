"""Writing a scoring run's output parts, and reading back the metadata a committed part carries."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage
from infra.dump_reader import open_parquet

PART_META_KEY = b"reviews.scoring"


class PartWriter:
    """Collects a unit's output and publishes it as one Parquet object on commit.

    Output rows are small (id, score, label), so a unit's worth is held until the
    unit has succeeded; a failure half way then leaves nothing behind to clean up.
    """

    def __init__(self, loc: storage.Location, schema: pa.Schema, metadata: dict[str, Any] | None = None):
        self.loc, self.schema, self.rows = loc, schema, 0
        self._tables: list[pa.Table] = []
        self._metadata = metadata or {}

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._tables.append(table)
            self.rows += table.num_rows

    def commit(self, extra_metadata: dict[str, Any] | None = None) -> None:
        meta = {**self._metadata, **(extra_metadata or {})}
        schema = self.schema.with_metadata({PART_META_KEY: json.dumps(meta, sort_keys=True).encode()})

        def _write(out: pa.NativeFile) -> None:
            with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                for t in self._tables:
                    writer.write_table(t.cast(self.schema).replace_schema_metadata(schema.metadata))
                if not self._tables:
                    writer.write_table(schema.empty_table())

        storage.atomic_write(self.loc, _write)
        self._tables = []


def part_metadata(loc: storage.Location) -> dict[str, Any] | None:
    """The scoring metadata stored in a committed part's footer, or None if there is no part."""
    try:
        pf = open_parquet(loc.fs, loc.path)
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException) as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            return None
        raise storage.describe_error(loc, exc) from exc
    raw = (pf.schema_arrow.metadata or {}).get(PART_META_KEY)
    return json.loads(raw) if raw else None
