"""Writing review dumps, the scoring flow's input: the IMDB splits as Parquet files of index
sequences, in the format ``score-reviews`` reads (``review_id``, ``tokens`` list<int32>, ``label``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage


def dump_table(ids: np.ndarray, tokens: pa.Array, labels: np.ndarray | None = None) -> pa.Table:
    cols = {"review_id": pa.array(ids, pa.int64()), "tokens": tokens}
    if labels is not None:
        cols["label"] = pa.array(np.asarray(labels, dtype=np.int8))
    return pa.table(cols)


def write_dump(table: pa.Table, output_uri: str, rows_per_file: int, row_group_size: int = 2000,
               prefix: str = "reviews") -> list[str]:
    """Split ``table`` into Parquet files under ``output_uri``; returns their URIs."""
    out = storage.resolve(output_uri)
    storage.ensure_dir(out)
    uris = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        part = table.slice(start, rows_per_file)
        loc = out.join(f"{prefix}-{i:05d}.parquet")
        storage.atomic_write(loc, lambda f, t=part: pq.write_table(t, f, row_group_size=row_group_size,
                                                                   compression="zstd"))
        uris.append(loc.uri)
    return uris


def write_imdb_split(imdb, split: str, output_uri: str, rows_per_file: int = 5000) -> list[str]:
    tokens = getattr(imdb, f"{split}_tokens")
    labels = getattr(imdb, f"{split}_labels")
    return write_dump(dump_table(np.arange(len(labels)), tokens, labels), output_uri, rows_per_file,
                      prefix=f"imdb-{split}")
