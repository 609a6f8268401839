"""Damaging real Parquet files the way storage faults do, for tests of what reading them reports."""

from __future__ import annotations

import pyarrow.parquet as pq


def corrupt_second_row_group(path: str) -> None:
    """Overwrite the middle of row group 1's token column chunk; the footer stays valid."""
    md = pq.ParquetFile(path).metadata
    col = md.row_group(1).column(1)
    start, size = col.data_page_offset, col.total_compressed_size
    with open(path, "r+b") as f:
        f.seek(start + size // 3)
        f.write(bytes(range(7, 7 + min(64, size // 3))))
