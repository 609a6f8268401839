"""The promotion gate's evaluation set, and each registered version's input matrix for it.

Challenger and champion must be scored on the same reviews, but their preprocessing may
differ (maxlen, padding, num_words, skip_top, even the vocabulary).  So the set is kept as
*token lists* - the Keras index scheme of the data's own vocabulary, uncut and without any
``num_words`` cap (what ``ImdbData.test_tokens`` holds) - and every version turns it into its
own matrix with its own :class:`~models.preprocessing.Preprocessing` via ``to_matrix``.  A
padded matrix would not do: it is already cut to one model's maxlen and vocabulary cap.

When a version's saved vocabulary differs from the data's (it was trained on other data), the
tokens are re-encoded through the words: data index -> word -> that version's index, or its
out-of-vocabulary index for words it never saw.  That is what encoding the text again would
give for every word the data's vocabulary knows; the data keeps no raw text, and words outside
the data's own train vocabulary are already out-of-vocabulary in its tokens.  A version (or
data) without a saved vocabulary uses the Keras ``imdb.npz`` word ranks, so its indices are
taken as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from models.preprocessing import Preprocessing, as_list_array, to_matrix
from models.text import Vocabulary

SAME_VOCABULARY = "same vocabulary: tokens as they are"
NO_VOCABULARY = "no saved vocabulary: Keras word ranks taken as they are"
REENCODED = "other vocabulary: tokens re-encoded through their words"


@dataclass(frozen=True)
class EvaluationSet:
    tokens: pa.ListArray
    labels: np.ndarray
    vocabulary: Vocabulary | None  # what ``tokens`` are encoded with (None: Keras npz ranks)
    parts: dict[str, int] = field(default_factory=dict)  # rows per source, in order

    def __len__(self) -> int:
        return len(self.labels)


def _as_tokens(rows: Any) -> pa.ListArray:
    """Token lists from a list array, a sequence of lists, or a padded matrix (zeros dropped)."""
    if isinstance(rows, (pa.Array, pa.ChunkedArray)):
        return as_list_array(rows)
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        # A matrix is already cut to the challenger's maxlen and vocabulary cap; the champion is
        # scored on that cut too.  Token lists avoid this (see the module docstring).
        kept = rows != 0
        offsets = np.concatenate([[0], np.cumsum(kept.sum(axis=1))]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(rows[kept].astype(np.int32)))
    return pa.array([list(map(int, r)) for r in rows], type=pa.list_(pa.int32()))


def evaluation_set(test_tokens: Any, test_labels: np.ndarray, vocabulary: Vocabulary | None,
                   holdout_tokens: Any = None, holdout_labels: np.ndarray | None = None) -> EvaluationSet:
    """The IMDB test split, plus the labelled holdout when there is one."""
    pieces = [("imdb_test", _as_tokens(test_tokens), np.asarray(test_labels, dtype=np.int8))]
    if holdout_tokens is not None and holdout_labels is not None and len(holdout_labels):
        pieces.append(("holdout", _as_tokens(holdout_tokens), np.asarray(holdout_labels, dtype=np.int8)))
    for name, tokens, labels in pieces:
        if len(tokens) != len(labels):
            raise ValueError(f"evaluation set part {name}: {len(tokens)} reviews but {len(labels)} labels")
    tokens = pa.concat_arrays([t.cast(pa.list_(pa.int32())) for _, t, _ in pieces])
    return EvaluationSet(tokens, np.concatenate([lab for _, _, lab in pieces]), vocabulary,
                         {name: len(labels) for name, _, labels in pieces})


def _same(a: Vocabulary, b: Vocabulary) -> bool:
    return (a.words, a.start_char, a.oov_char, a.index_from) == (b.words, b.start_char, b.oov_char, b.index_from)


def tokens_for(es: EvaluationSet, vocabulary_json: dict[str, Any] | None) -> tuple[pa.ListArray, str]:
    """The set's tokens in the index scheme of a version whose ``vocabulary.json`` is given."""
    if es.vocabulary is None or vocabulary_json is None:
        return es.tokens, NO_VOCABULARY
    target = Vocabulary.from_json(vocabulary_json)
    if _same(es.vocabulary, target):
        return es.tokens, SAME_VOCABULARY
    source = es.vocabulary
    table = np.full(source.size, target.oov_char, dtype=np.int32)
    table[0] = 0
    table[source.start_char] = target.start_char
    index = target.word_index()
    first = source.index_from + 1
    table[first:] = [index.get(w, target.oov_char) for w in source.words]
    values = es.tokens.values.to_numpy(zero_copy_only=False)
    # Indices beyond the data's vocabulary cannot be named: out-of-vocabulary for the target too.
    mapped = np.where((values >= 0) & (values < len(table)), table[np.clip(values, 0, len(table) - 1)],
                      target.oov_char).astype(np.int32)
    return pa.ListArray.from_arrays(es.tokens.offsets, pa.array(mapped)), REENCODED


def version_matrix(es: EvaluationSet, prep: Preprocessing,
                   vocabulary_json: dict[str, Any] | None) -> tuple[np.ndarray, str]:
    """A version's ``(n, maxlen)`` input for the set, built with its own preprocessing."""
    tokens, how = tokens_for(es, vocabulary_json)
    return to_matrix(tokens, prep), how
