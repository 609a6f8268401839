"""Preprocessing settings saved with every model, and the one function that turns
Arrow list arrays of word indices into the padded int32 matrix the network eats.

Training and scoring both call :func:`to_matrix`, so a review is cut, padded and
OOV-mapped the same way at both ends.  Index scheme (Keras ``imdb.load_data``):
0 = padding, 1 = start, 2 = out-of-vocabulary, word of frequency rank r -> r + 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAD, START, OOV, INDEX_FROM = 0, 1, 2, 3


@dataclass(frozen=True)
class Preprocessing:
    maxlen: int = 50
    padding: str = "post"
    truncating: str = "post"
    num_words: int | None = None  # None: the full vocabulary
    skip_top: int = 0
    vocab_size: int = 0  # exclusive upper bound of valid indices (len(words) + index_from + 1)
    start_char: int = START
    oov_char: int = OOV
    index_from: int = INDEX_FROM

    def __post_init__(self) -> None:
        if self.maxlen <= 0:
            raise ValueError(f"maxlen must be positive, got {self.maxlen}")
        for name in ("padding", "truncating"):
            if getattr(self, name) not in ("pre", "post"):
                raise ValueError(f"{name} must be 'pre' or 'post', got {getattr(self, name)!r}")
        if self.num_words is not None and self.num_words <= self.oov_char:
            raise ValueError(f"num_words must exceed the OOV index {self.oov_char}, got {self.num_words}")

    @property
    def input_dim(self) -> int:
        """Rows of the embedding table: every index the matrix can hold."""
        if self.num_words is None:
            return self.vocab_size
        return min(self.num_words, self.vocab_size) if self.vocab_size else self.num_words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def as_list_array(tokens: "pa.Array | pa.ChunkedArray") -> pa.ListArray | pa.LargeListArray:
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks() if tokens.num_chunks != 1 else tokens.chunk(0)
    if pa.types.is_fixed_size_list(tokens.type):
        tokens = tokens.cast(pa.list_(tokens.type.value_type))
    if not (pa.types.is_list(tokens.type) or pa.types.is_large_list(tokens.type)):
        raise TypeError(f"expected a list column of integers, got {tokens.type}")
    return tokens


def map_indices(values: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Keras ``load_data`` OOV rule: keep ``skip_top <= w < num_words``, else ``oov_char``."""
    upper = prep.input_dim if prep.input_dim else None
    if upper is None and prep.skip_top == 0:
        return values.astype(np.int32, copy=False)
    # Compare before narrowing to int32, so huge ids become OOV instead of wrapping around.
    keep = values >= prep.skip_top
    if upper is not None:
        keep &= values < upper
    return np.where(keep, values, prep.oov_char).astype(np.int32, copy=False)


# Rows per pass of to_matrix, so that its index arrays (int64, one entry per kept token) stay
# a few MB whatever the batch: 8,192 rows at maxlen 500 would otherwise need ~100 MB of them.
MATRIX_CHUNK_TOKENS = 1 << 18


def to_matrix(tokens: "pa.Array | pa.ChunkedArray", prep: Preprocessing) -> np.ndarray:
    """Pad/truncate a list array to ``(n, maxlen)`` int32, vectorised on the offsets.

    Semantics equal ``keras.utils.pad_sequences(..., maxlen, padding, truncating,
    value=0)`` applied after the OOV mapping; null rows become all padding.
    """
    arr = as_list_array(tokens)
    n = len(arr)
    out = np.zeros((n, prep.maxlen), dtype=np.int32)
    step = max(1, MATRIX_CHUNK_TOKENS // max(prep.maxlen, 1))
    for s in range(0, n, step):
        _fill_rows(out[s:s + step], arr.slice(s, step), prep)
    return out


def _fill_rows(out: np.ndarray, arr: pa.ListArray | pa.LargeListArray, prep: Preprocessing) -> None:
    n, maxlen = out.shape
    if n == 0:
        return
    # Offsets of a sliced array index the parent's values buffer: take just this slice's values.
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.values.slice(offsets[0], offsets[-1] - offsets[0])
    offsets -= offsets[0]
    if values.null_count:
        values = pc.fill_null(values, prep.oov_char)
    vals = map_indices(values.to_numpy(zero_copy_only=False), prep)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    if arr.null_count:
        lengths = np.where(arr.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
    kept = np.minimum(lengths, maxlen)
    # Which slice of each row survives truncation.
    src_start = starts + (lengths - kept if prep.truncating == "pre" else 0)
    # Where it lands in the output row.
    dst_start = (maxlen - kept) if prep.padding == "pre" else np.zeros_like(kept)
    total = int(kept.sum())
    if total == 0:
        return
    row = np.repeat(np.arange(n, dtype=np.int64), kept)
    # Position of each kept token inside its row's kept slice.
    first = np.cumsum(kept) - kept
    pos = np.arange(total, dtype=np.int64) - np.repeat(first, kept)
    out[row, np.repeat(dst_start, kept) + pos] = vals[np.repeat(src_start, kept) + pos]


def lengths(tokens: "pa.Array | pa.ChunkedArray") -> np.ndarray:
    arr = as_list_array(tokens)
    return pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
