"""Review text -> word indices: the tokenizer and the train-split vocabulary.

The tokenizer follows the defaults of the old Keras
``text_to_word_sequence`` (lower-case, punctuation becomes a separator,
apostrophes survive), after turning the ``<br />`` tags of IMDB reviews into
spaces so they do not become a frequent "br" word.  The vocabulary numbers words
the way ``keras.datasets.imdb.load_data`` does: 0 = padding, 1 = start,
2 = out-of-vocabulary, word of frequency rank r -> r + ``index_from``.
Training data and raw text scored later go through the same :func:`tokenize`
and :meth:`Vocabulary.encode`, so both ends see identical indices.
"""

from __future__ import annotations

import itertools
from array import array
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa

# Bump whenever tokenize() can return something different for the same text:
# encoded-data caches are keyed on it.
TOKENIZER_VERSION = 1

KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_BREAKS = ("<br />", "<br/>", "<br>")
# Every filter character is ASCII and UTF-8 never uses ASCII bytes inside a
# multi-byte sequence, so translating the UTF-8 bytes equals translating the
# str, and bytes.translate is ~10x faster than str.translate on this corpus.
_FILTER_TABLE = bytes.maketrans(KERAS_FILTERS.encode(), b" " * len(KERAS_FILTERS))

_JSON_KIND = "imdb-vocabulary"
_JSON_VERSION = 1


def tokenize(text: str) -> list[str]:
    """Words of one review, Keras ``text_to_word_sequence`` style."""
    text = text.lower()
    if "<br" in text:
        for tag in _BREAKS:
            text = text.replace(tag, " ")
    # surrogatepass: JSON can carry lone surrogates; keep them rather than fail.
    raw = text.encode("utf-8", "surrogatepass").translate(_FILTER_TABLE)
    return raw.decode("utf-8", "surrogatepass").split()


def _encode_rows(texts: Iterable[str], to_ids: Callable[[list[str]], Iterable[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Flat word ids (no start markers) and per-review token counts."""
    values = array("i")
    counts = array("q")
    for text in texts:
        tokens = tokenize(text)
        values.extend(to_ids(tokens))
        counts.append(len(tokens))
    return np.frombuffer(values, dtype=np.intc).astype(np.int32, copy=False), np.frombuffer(counts, dtype=np.int64)


def prepend_start(values: np.ndarray, counts: np.ndarray, start_char: int) -> pa.ListArray | pa.LargeListArray:
    """Flat per-review values + their counts -> list array with ``start_char`` before every review."""
    n = len(counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts + 1, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    starts = offsets[:-1]
    out[starts] = start_char
    is_word = np.ones(len(out), dtype=bool)
    is_word[starts] = False
    out[is_word] = values
    if offsets[-1] <= np.iinfo(np.int32).max:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(out))
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(out))


@dataclass(frozen=True)
class Vocabulary:
    """Words in frequency-rank order: ``words[0]`` has rank 1 and index ``index_from + 1``."""

    words: tuple[str, ...]
    start_char: int = 1
    oov_char: int = 2
    index_from: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.words, tuple):
            object.__setattr__(self, "words", tuple(self.words))
        if not (0 < self.start_char <= self.index_from and 0 < self.oov_char <= self.index_from):
            raise ValueError(
                f"start_char ({self.start_char}) and oov_char ({self.oov_char}) must lie in 1..index_from "
                f"({self.index_from}) so they cannot collide with word indices")
        if len(self._index) != len(self.words):
            seen: set[str] = set()
            for w in self.words:
                if w in seen:
                    raise ValueError(f"vocabulary lists the word {w!r} twice")
                seen.add(w)

    @cached_property
    def _index(self) -> dict[str, int]:
        first = self.index_from + 1
        return {w: i for i, w in enumerate(self.words, first)}

    @property
    def size(self) -> int:
        """Exclusive upper bound of the indices :meth:`encode` can produce.

        The rarest word has index ``len(words) + index_from``, hence the ``+ 1``.
        """
        return len(self.words) + self.index_from + 1

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, texts: Iterable[str], **settings: int) -> "Vocabulary":
        """Rank the words of ``texts`` (pass the TRAIN split only)."""
        return cls.build_encoded(texts, **settings)[0]

    @classmethod
    def build_encoded(cls, texts: Iterable[str], **settings: int) -> tuple["Vocabulary", pa.ListArray]:
        """Build the vocabulary and encode the same texts, tokenising them once.

        Ranking matches the Keras ``Tokenizer``: count descending, ties in order
        of first occurrence (a stable sort of an insertion-ordered dict).
        """
        # Each new word gets the next provisional id in first-seen order, inside C.
        first_seen: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        lookup = first_seen.__getitem__
        values, counts = _encode_rows(texts, lambda tokens: map(lookup, tokens))
        seen_words = list(first_seen)
        freq = np.bincount(values, minlength=len(seen_words))
        order = np.argsort(-freq, kind="stable")  # stable: ties keep first-seen order
        vocab = cls(tuple(seen_words[i] for i in order.tolist()), **settings)
        rank = np.empty(len(seen_words), dtype=np.int32)
        rank[order] = np.arange(len(seen_words), dtype=np.int32)
        encoded = rank[values] + np.int32(vocab.index_from + 1)
        return vocab, prepend_start(encoded, counts, vocab.start_char)

    def encode(self, texts: Iterable[str]) -> pa.ListArray:
        """``[start_char] + [index or oov_char per token]`` for every text, as list<int32>."""
        get = self._index.get
        oov = itertools.repeat(self.oov_char)
        # map() keeps the per-token dict lookup in C; a Python loop doubles the time.
        values, counts = _encode_rows(texts, lambda tokens: map(get, tokens, oov))
        return prepend_start(values, counts, self.start_char)

    def word_index(self) -> dict[str, int]:
        """word -> index as it appears in encoded data (rank + index_from)."""
        return dict(self._index)

    def decode(self, indices: Iterable[int]) -> str:
        """Readable text for debugging; padding is dropped, markers shown in angle brackets."""
        if isinstance(indices, (pa.Array, pa.ChunkedArray)):
            indices = indices.to_pylist()
        first = self.index_from + 1
        out = []
        for i in indices:
            i = int(i)
            if i == 0:
                continue
            if i == self.start_char:
                out.append("<start>")
            elif i == self.oov_char:
                out.append("<oov>")
            elif first <= i < first + len(self.words):
                out.append(self.words[i - first])
            else:
                out.append(f"<unknown:{i}>")
        return " ".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": _JSON_KIND,
            "version": _JSON_VERSION,
            "tokenizer_version": TOKENIZER_VERSION,
            "start_char": self.start_char,
            "oov_char": self.oov_char,
            "index_from": self.index_from,
            "words": list(self.words),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Vocabulary":
        if not isinstance(d, Mapping) or d.get("kind") != _JSON_KIND:
            raise ValueError(f"not a vocabulary document (expected kind {_JSON_KIND!r})")
        if d.get("version") != _JSON_VERSION:
            raise ValueError(f"unsupported vocabulary version {d.get('version')!r}; expected {_JSON_VERSION}")
        words = d.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("vocabulary 'words' must be a list of strings")
        settings = {k: d[k] for k in ("start_char", "oov_char", "index_from") if k in d}
        for k, v in settings.items():
            if type(v) is not int:
                raise ValueError(f"vocabulary {k!r} must be an integer, got {v!r}")
        return cls(tuple(words), **settings)

    @classmethod
    def from_keras_word_index(cls, mapping: Mapping[str, int], **settings: int) -> "Vocabulary":
        """From Keras' ``imdb_word_index.json``: word -> rank, ranks 1..n without gaps."""
        by_rank: dict[int, str] = {}
        for word, rank in mapping.items():
            if not isinstance(word, str) or type(rank) is not int or rank < 1:
                raise ValueError(f"word index entry {word!r}: {rank!r} is not a word -> rank (int >= 1) pair")
            if rank in by_rank:
                raise ValueError(f"words {by_rank[rank]!r} and {word!r} share rank {rank}")
            by_rank[rank] = word
        n = len(by_rank)
        if n and max(by_rank) != n:
            missing = next(r for r in range(1, n + 1) if r not in by_rank)
            raise ValueError(f"word index ranks must run 1..{n} without gaps; rank {missing} is missing")
        return cls(tuple(by_rank[r] for r in range(1, n + 1)), **settings)
