"""What a scoring run owes its reader: one output id type, duplicate ids found in plan order, and
totals in which every input row is either scored or rejected.

Plain functions over Arrow data and plan/result dicts; the scoring steps (``models/scoring_steps.py``)
only call them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.scoring import SchemaError

COUNTS = ("rows_in", "rows_scored", "rows_rejected", "rows_failed")


def _base(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def unify_id_types(typed: list[tuple[str, pa.DataType]], column: str = "review_id") -> pa.DataType | None:
    """The one id type of every output part, for (file URI, id type) pairs in plan order.

    Readers of the output (pyarrow.dataset, DuckDB) need one type per column across parts, so
    ids are widened where that loses nothing (int32 + int64 -> int64, uint32 + int64 -> int64,
    dictionary<string> + string -> string, string + large_string -> large_string) and refused
    where it would (integers vs text, uint64 vs any signed type): a silent cast there would turn
    ids into other ids or fail half way through a run.  A single type is kept as it is.
    """
    if not typed:
        return None
    if len({t for _, t in typed}) == 1:
        return typed[0][1]
    bases = [(uri, _base(t)) for uri, t in typed]
    texts = [(u, t) for u, t in bases if _is_text(t)]
    ints = [(u, t) for u, t in bases if pa.types.is_integer(t)]
    if texts and ints:
        raise SchemaError(
            f"column {column!r} is {ints[0][1]} in {ints[0][0]} but {texts[0][1]} in {texts[0][0]}: one output "
            "dataset needs one id type and no lossless type holds both; convert the ids or score them separately")
    if texts:
        return pa.large_string() if any(pa.types.is_large_string(t) for _, t in texts) else pa.string()
    signed = [(u, t) for u, t in ints if pa.types.is_signed_integer(t)]
    unsigned = [(u, t) for u, t in ints if pa.types.is_unsigned_integer(t)]
    width = max((t.bit_width for _, t in signed), default=0)
    uwidth = max((t.bit_width for _, t in unsigned), default=0)
    if not signed:
        return {8: pa.uint8(), 16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}[uwidth]
    need = max(width, 2 * uwidth)  # a signed type holds uintN only with more than N bits
    if need > 64:
        wide = next(u for u, t in unsigned if t.bit_width == 64)
        raise SchemaError(
            f"column {column!r} is uint64 in {wide} but {signed[0][1]} in {signed[0][0]}: no integer type holds "
            "both losslessly; convert the ids or score them separately")
    return {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[need]


def find_duplicates(chunks: Iterable[tuple[str, str, int, pa.Array | pa.ChunkedArray]], id_type: pa.DataType,
                    column: str = "review_id") -> dict[str, dict[int, str]]:
    """Later occurrences of an id, for ``(unit id, source URI, first row, ids)`` in plan order.

    Returns unit id -> {row in its file: reason naming the id and its first occurrence}.  Plan
    order (files sorted by path, row groups in order) does not depend on which unit finishes
    first, so concurrent and resumed runs pick the same "later" rows.  Null ids are left to the
    row validation (they are rejected as such).
    """
    base = _base(id_type)
    if _is_text(base):
        base = pa.large_string()  # the whole dump's ids in one array may pass 2 GB of text
    units, sources, rows, arrays = [], [], [], []
    for unit_id, source, first_row, ids in chunks:
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks() if ids.num_chunks else pa.array([], ids.type)
        units.append(unit_id)
        sources.append(source)
        rows.append(first_row)
        arrays.append(ids.cast(base))
    if not arrays:
        return {}
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    ids = pa.chunked_array(arrays, base).combine_chunks()
    # dictionary_encode numbers distinct values in order of first appearance, nulls left null.
    codes = pc.fill_null(pc.dictionary_encode(ids).indices, -1).to_numpy(zero_copy_only=False)
    pos = np.flatnonzero(codes >= 0)
    k = codes[pos]
    if not len(k):
        return {}
    seen = np.maximum.accumulate(k)
    is_first = np.r_[True, seen[1:] > seen[:-1]]
    first_pos = pos[is_first]  # first_pos[c]: where value number c first appears
    dup_pos = pos[~is_first]
    unit_of = np.repeat(np.arange(len(arrays)), lengths)
    row_of = np.concatenate([r + np.arange(n) for r, n in zip(rows, lengths)])
    out: dict[str, dict[int, str]] = {}
    for p in dup_pos.tolist():
        f = int(first_pos[codes[p]])
        reason = (f"duplicate {column} {ids[p].as_py()!r}: first occurrence in {sources[unit_of[f]]} "
                  f"row {int(row_of[f])}")
        out.setdefault(units[unit_of[p]], {})[int(row_of[p])] = reason
    return out


class RowRejects:
    """A unit's extra rejections (file row -> reason), sliced per record batch."""

    def __init__(self, reasons: dict[int, str] | None):
        self.reasons = {int(r): why for r, why in (reasons or {}).items()}
        self._rows = np.array(sorted(self.reasons), dtype=np.int64)

    def for_batch(self, first_row: int, n: int) -> dict[int, str]:
        """Positions within the batch (0-based) -> reason."""
        lo, hi = np.searchsorted(self._rows, [first_row, first_row + n])
        return {int(r) - first_row: self.reasons[int(r)] for r in self._rows[lo:hi]}


def count_duplicates(ids: pa.ChunkedArray) -> int:
    """Rows whose (non-null) id appeared before: rows minus distinct ids."""
    valid = len(ids) - ids.null_count
    if not valid:
        return 0
    return valid - pc.count_distinct(ids, mode="only_valid").as_py()


def account_files(plan_files: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per input file: rows in, scored, rejected and failed (rejected because unreadable).

    A file or unit that cannot be read still counts its rows (from the Parquet footer; 0 when even
    that is unreadable) as rejected, so rows in = scored + rejected holds in every case and the
    reject limit sees them.
    """
    by_file: dict[str, dict[str, int]] = {}
    unit_errors: dict[str, list[str]] = {}
    for r in results:
        f = by_file.setdefault(r["file"], dict.fromkeys(COUNTS, 0))
        failed = r["rows_in"] - r["rows_scored"] if r.get("error") else 0
        for k, v in zip(COUNTS, (r["rows_in"], r["rows_scored"], r["rows_rejected"], failed)):
            f[k] += v
        if r.get("error"):
            unit_errors.setdefault(r["file"], []).append(r["error"])
    files = []
    for f in plan_files:
        if f["error"]:
            counts = {"rows_in": f["rows"], "rows_scored": 0, "rows_rejected": f["rows"], "rows_failed": f["rows"]}
        else:
            counts = by_file.get(f["uri"], {**dict.fromkeys(COUNTS, 0), "rows_in": f["rows"]})
        files.append({**f, **counts, "error": f["error"] or ("; ".join(unit_errors.get(f["uri"], [])) or None)})
    return files


def totals(files: list[dict[str, Any]], results: list[dict[str, Any]]) -> dict[str, int]:
    t = {k: sum(f[k] for f in files) for k in COUNTS}
    return {**t, "files": len(files), "files_failed": sum(1 for f in files if f["error"]),
            "units": len(results), "units_skipped": sum(r["skipped"] for r in results),
            "units_failed": sum(1 for r in results if r.get("error"))}


def failed_input_message(files: list[dict[str, Any]], where: str) -> str | None:
    """Why the run is incomplete when files or units could not be read, or None if all were."""
    failed = [f for f in files if f["error"]]
    if not failed:
        return None
    rows = sum(f["rows_failed"] for f in failed)
    return (f"{len(failed)} input file(s) could not be read or scored ({rows:,} rows unaccounted for), e.g. "
            f"{failed[0]['error']}; see {where}/_manifest.json. Not marking the output complete: fix the input, or "
            "pass allow_failed_files=true (--allow-failed-files) to count their rows as rejected")


def duplicates_in_plan(fs, plans: list, column: str, id_type: pa.DataType) -> dict[str, dict[int, str]]:
    """on_duplicate_id=reject: one pass over the id column only of every planned unit, in plan order.

    ``plans``: readable ``infra.dump_reader.FilePlan``s.  A unit whose ids cannot be read is left out: it
    cannot be scored either, and fails as such.
    """
    from infra import dump_reader, storage

    def chunks():
        for p in plans:
            for u in p.units:
                try:
                    ids = dump_reader.read_unit_column(fs, u, column)
                except (OSError, pa.ArrowException) as exc:
                    if storage.is_transient(exc):
                        raise
                    continue
                yield u.unit_id, u.file_uri, u.first_row, ids

    return find_duplicates(chunks(), id_type, column)


def output_duplicate_ids(out) -> int:
    """Rows of an output (scored and ``_rejected/`` parts) whose id appeared before.

    Counted from the committed parts, so a resumed run counts what it publishes; with
    on_duplicate_id=reject the later occurrences sit in ``_rejected/`` and count the same way.
    ``out``: an ``infra.storage.Location``.
    """
    import pyarrow.dataset as ds

    from infra import storage

    ids = []
    for loc in (out, out.join("_rejected")):
        if not storage.list_files(loc):
            continue
        d = ds.dataset(loc.path, filesystem=out.fs, format="parquet")
        if d.schema.get_field_index("review_id") >= 0:
            ids.extend(d.to_table(columns=["review_id"]).column(0).chunks)
    if not ids:
        return 0
    base = _base(ids[0].type)
    return count_duplicates(pa.chunked_array([a.cast(base) for a in ids], base))
