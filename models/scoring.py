"""Scoring record batches: validate rows, build the model's input matrix, predict.

Pure functions on Arrow data: no storage, no orchestration.  Every input row ends
up either in the scored table or in the rejected table with a reason, so counts
always reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.dump_profile import DumpProfile
from models.predictors import Predictor
from models.preprocessing import Preprocessing, as_list_array, to_matrix

MODEL_VERSION_TYPE = pa.dictionary(pa.int32(), pa.string())


class SchemaError(ValueError):
    """A whole file cannot be scored (missing column, wrong column type)."""


@dataclass(frozen=True)
class ScoringSpec:
    preprocessing: Preprocessing
    model_version: str
    threshold: float = 0.5
    id_column: str = "review_id"
    tokens_column: str = "tokens"
    text_column: str | None = None  # score raw text with the model's vocabulary instead of tokens
    vocabulary: Any = None  # models.text.Vocabulary, needed only for text input
    on_duplicate_id: str = "keep"  # keep | reject: later occurrences (in plan order) go to _rejected/
    output_id_type: Any = None  # pa.DataType of every part's ids, unified over the inputs at planning

    @property
    def input_column(self) -> str:
        return self.text_column or self.tokens_column

    @property
    def vocab_size(self) -> int:
        return self.preprocessing.vocab_size


def output_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([
        pa.field("review_id", id_type),
        pa.field("score", pa.float32()),
        pa.field("label", pa.int8()),
        pa.field("model_version", MODEL_VERSION_TYPE),
    ])


def rejected_schema(id_type: pa.DataType) -> pa.Schema:
    return pa.schema([
        pa.field("review_id", id_type),
        pa.field("source", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("model_version", MODEL_VERSION_TYPE),
    ])


def _is_id_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_token_list(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        return False
    v = t.value_type
    return pa.types.is_integer(v) or pa.types.is_floating(v)


def check_schema(schema: pa.Schema, spec: ScoringSpec) -> None:
    """Raise :class:`SchemaError` naming the column and the problem."""
    for col in (spec.id_column, spec.input_column):
        if schema.get_field_index(col) < 0:
            raise SchemaError(f"missing column {col!r} (columns: {', '.join(schema.names) or 'none'})")
    id_type = schema.field(spec.id_column).type
    if not _is_id_type(id_type):
        raise SchemaError(f"column {spec.id_column!r} has type {id_type}; expected an integer or string id")
    in_type = schema.field(spec.input_column).type
    if spec.text_column:
        if not (pa.types.is_string(in_type) or pa.types.is_large_string(in_type)):
            raise SchemaError(f"column {spec.text_column!r} has type {in_type}; expected string text")
    elif not _is_token_list(in_type):
        raise SchemaError(f"column {spec.tokens_column!r} has type {in_type}; expected a list of integer token ids")


# Rejection reasons as small integer codes (0 = scored) so the hot path stays in numpy.
(OK, NULL_ID, NULL_SEQ, EMPTY_SEQ, NULL_TOKEN, NON_FINITE, NON_INTEGER, NEGATIVE, TOO_LARGE, NULL_TEXT, EMPTY_TEXT,
 BAD_UTF8) = range(12)


def reason_labels(vocab_size: int) -> list[str]:
    return ["", "null review id", "null token sequence", "empty token sequence", "null token id",
            "non-finite token id (NaN or inf)", "non-integer token id", "negative token id",
            f"token id >= vocabulary size {vocab_size}", "null text", "empty text", "invalid UTF-8 text"]


# Rows judged per pass of _token_reasons: its per-value arrays (int64 casts, parent indices) then
# take a few MB, not ~50 MB for an 8,192-row batch of 500-token reviews.
VALIDATE_ROWS = 1024


def _token_reasons(tokens: pa.Array, vocab_size: int) -> np.ndarray:
    """Per-row reason code for a list array of token ids, vectorised on the flat values."""
    arr = as_list_array(tokens)
    clean = _row_reasons_if_values_clean(arr, vocab_size)
    if clean is not None:
        return clean
    if len(arr) <= VALIDATE_ROWS:
        return _chunk_reasons(arr, vocab_size)
    return np.concatenate([_chunk_reasons(arr.slice(s, VALIDATE_ROWS), vocab_size)
                           for s in range(0, len(arr), VALIDATE_ROWS)])


def _spanned_values(arr: pa.ListArray | pa.LargeListArray) -> pa.Array:
    offsets = arr.offsets
    first, last = (offsets[0].as_py(), offsets[-1].as_py()) if len(arr) else (0, 0)
    return arr.values.slice(first, last - first)


def _row_reasons(arr: pa.ListArray | pa.LargeListArray) -> np.ndarray:
    """The codes of the row-level faults alone (null and empty sequences)."""
    codes = np.zeros(len(arr), dtype=np.int8)
    codes[pc.fill_null(pc.equal(pc.list_value_length(arr), 0), False).to_numpy(zero_copy_only=False)] = EMPTY_SEQ
    codes[pc.is_null(arr).to_numpy(zero_copy_only=False)] = NULL_SEQ
    return codes


def _row_reasons_if_values_clean(arr: pa.ListArray | pa.LargeListArray, vocab_size: int) -> np.ndarray | None:
    """The usual batch has integer ids, no null among them and none out of range: one min/max pass
    over the values shows it, and only null or empty rows remain to be named.  None when some
    value may be at fault (then every check runs per row)."""
    values = _spanned_values(arr)
    if not pa.types.is_integer(values.type) or values.null_count:
        return None
    if len(values):
        low, high = pc.min_max(values).values()
        if low.as_py() < 0 or high.as_py() >= vocab_size:
            return None
    return _row_reasons(arr)


def _chunk_reasons(arr: pa.ListArray | pa.LargeListArray, vocab_size: int) -> np.ndarray:
    n = len(arr)
    # The values the offsets span, null slots included, so that they line up with
    # list_parent_indices (list_flatten would skip values under a null slot; the Parquet
    # reader never puts any there, other producers may).  Null rows are named by NULL_SEQ,
    # which wins over any verdict on such values.
    values = _spanned_values(arr)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)

    def rows_with(mask: pa.Array) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        out[parents[mask.to_numpy(zero_copy_only=False).astype(bool)]] = True
        return out

    checks: list[tuple[np.ndarray, int]] = [(rows_with(pc.is_null(values)), NULL_TOKEN)]
    # Compare in one wide type of the values' own kind: uint64 ids beyond int64 and
    # float16 tokens must be judged per row, not fail the whole batch.
    t = values.type
    wide = pa.uint64() if pa.types.is_unsigned_integer(t) else pa.int64() if pa.types.is_integer(t) else pa.float64()
    values = values.cast(wide)
    filled = pc.fill_null(values, 0)
    if pa.types.is_floating(wide):
        finite = pc.is_finite(filled)
        checks.append((rows_with(pc.invert(finite)), NON_FINITE))
        filled = pc.if_else(finite, filled, 0)
        checks.append((rows_with(pc.not_equal(pc.floor(filled), filled)), NON_INTEGER))
    if not pa.types.is_unsigned_integer(wide):
        checks.append((rows_with(pc.less(filled, pa.scalar(0, wide))), NEGATIVE))
    checks.append((rows_with(pc.greater_equal(filled, pa.scalar(vocab_size, wide))), TOO_LARGE))
    codes = np.zeros(n, dtype=np.int8)
    # The first failing check names the row: assign in reverse so earlier checks win; a null or
    # empty row is named so before any verdict on its values.
    for mask, code in reversed(checks):
        codes[mask] = code
    rows = _row_reasons(arr)
    return np.where(rows != OK, rows, codes)


def encode_text(texts: pa.Array, spec: ScoringSpec) -> tuple[pa.Array, np.ndarray]:
    """Text column -> token list array with the model's own vocabulary, plus per-row reason codes."""
    if spec.vocabulary is None:
        raise SchemaError("this model version has no saved vocabulary, so it cannot score raw text")
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    is_null = pc.is_null(texts).to_numpy(zero_copy_only=False)
    bad_utf8 = np.zeros(len(texts), dtype=bool)
    try:
        py = pc.fill_null(texts, "").to_pylist()
    except UnicodeDecodeError:
        # Parquet does not validate UTF-8: judge such rows one by one instead of failing the batch.
        py = []
        for i, raw in enumerate(texts.cast(pa.binary()).to_pylist()):
            try:
                py.append((raw or b"").decode("utf-8"))
            except UnicodeDecodeError:
                py.append("")
                bad_utf8[i] = True
    tokens = spec.vocabulary.encode(py)
    codes = np.zeros(len(texts), dtype=np.int8)
    # Only the start marker left: nothing to read.
    codes[pc.less_equal(pc.list_value_length(tokens), 1).to_numpy(zero_copy_only=False)] = EMPTY_TEXT
    codes[bad_utf8] = BAD_UTF8
    codes[is_null] = NULL_TEXT
    return tokens, codes


def validate(batch: pa.RecordBatch, spec: ScoringSpec) -> tuple[pa.Array, np.ndarray]:
    """Returns the token list array to score and per-row reason codes (0 = ok)."""
    if spec.text_column:
        tokens, codes = encode_text(batch.column(spec.text_column), spec)
    else:
        tokens = batch.column(spec.tokens_column)
        codes = _token_reasons(tokens, spec.vocab_size)
    codes[pc.is_null(batch.column(spec.id_column)).to_numpy(zero_copy_only=False)] = NULL_ID
    return tokens, codes


@dataclass
class BatchResult:
    scored: pa.Table
    rejected: pa.Table
    # Drift counts of the scored rows, taken here while their tokens are at hand: the run then
    # never reads its input or output again to describe what it scored.
    profile: DumpProfile

    @property
    def rows_in(self) -> int:
        return self.scored.num_rows + self.rejected.num_rows


def _version_array(version: str, n: int) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([version]))


def score_batch(batch: pa.RecordBatch, spec: ScoringSpec, predictor: Predictor, source: str = "",
                first_row: int = 0, extra_rejects: dict[int, str] | None = None) -> BatchResult:
    """Score one record batch.  ``first_row`` is the batch's row number within ``source``;
    ``extra_rejects`` (position in the batch -> reason) rejects rows that are valid on their own
    (duplicate ids); a row's own fault, if it has one, is the reason it is rejected with."""
    tokens, codes = validate(batch, spec)
    labels = reason_labels(spec.vocab_size)
    if extra_rejects:
        codes = codes.astype(np.int32)
        for pos, why in extra_rejects.items():
            if codes[pos] == OK:
                codes[pos] = len(labels)
                labels.append(why)
    ids = batch.column(spec.id_column)
    ok = codes == OK
    ok_mask = pa.array(ok)
    good_tokens = tokens if ok.all() else pc.filter(tokens, ok_mask)  # no copy in the usual case
    n_ok = len(good_tokens)
    num_words = spec.preprocessing.num_words
    if n_ok:
        scores = predictor.predict(to_matrix(good_tokens, spec.preprocessing)).astype(np.float32, copy=False)
        # The float32 scores the part stores: the profile's score counts then equal a re-read of the output.
        profile = DumpProfile.from_batch(good_tokens, scores, num_words)
    else:
        scores = np.zeros(0, dtype=np.float32)
        profile = DumpProfile.empty(num_words)
    scored = pa.Table.from_arrays(
        [pc.filter(ids, ok_mask), pa.array(scores, pa.float32()),
         pa.array((scores >= spec.threshold).astype(np.int8), pa.int8()), _version_array(spec.model_version, n_ok)],
        schema=output_schema(ids.type),
    )
    bad = ~ok
    n_bad = int(bad.sum())
    rows = np.nonzero(bad)[0].astype(np.int64) + first_row
    rejected = pa.Table.from_arrays(
        [pc.filter(ids, pa.array(bad)), pa.repeat(pa.scalar(source, pa.string()), n_bad),
         pa.array(rows, pa.int64()),
         pa.DictionaryArray.from_arrays(pa.array(codes[bad].astype(np.int32)),
                                        pa.array(labels, pa.string())).cast(pa.string()),
         _version_array(spec.model_version, n_bad)],
        schema=rejected_schema(ids.type),
    )
    return BatchResult(scored, rejected, profile)
