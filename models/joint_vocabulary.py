"""IMDB train + labelled train reviews as one training set, with one vocabulary built from both.

The vocabulary is the one :meth:`Vocabulary.build` would rank from the IMDB train
texts followed by the labelled train texts (count descending, ties in order of first
occurrence), computed from IMDB's encoded tokens so its raw text need not be kept.
IMDB's test split and the labelled holdout are encoded with it but never counted:
their words that training never saw become out-of-vocabulary.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from models.imdb_dataset import ImdbData
from models.labelled_data import LabelledSet
from models.text import Vocabulary, _encode_rows, prepend_start


@dataclass
class JointData:
    imdb: ImdbData  # train = IMDB train + labelled train; vocabulary, test re-encoded with the joint one
    holdout_tokens: pa.ListArray
    holdout_labels: np.ndarray
    labelled: LabelledSet  # the accounting: rows used, rejected, duplicate, per file and reason


def _flat(tokens: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    offsets = tokens.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    values = tokens.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]].astype(np.int32)
    return offsets - offsets[0], values


def _remapped(tokens: pa.Array, old_to_new: np.ndarray, first_word: int, oov: int) -> pa.ListArray:
    """Word indices mapped through ``old_to_new`` (index by old word rank); markers stay."""
    offsets, values = _flat(tokens)
    out = values.copy()
    words = values >= first_word
    rank = values[words] - first_word
    table = np.append(old_to_new, np.int32(oov))  # the last slot: indices beyond the old word list
    out[words] = table[np.minimum(rank, len(old_to_new))]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(out))


def joint_vocabulary(vocab: Vocabulary, imdb_train: pa.Array,
                     texts: list[str]) -> tuple[Vocabulary, np.ndarray, pa.ListArray]:
    """The vocabulary of IMDB train + ``texts``, the map old word rank -> new index
    (OOV for words that no training review uses), and ``texts`` encoded."""
    first_word = vocab.index_from + 1
    n_old = len(vocab)
    _, values = _flat(imdb_train)
    old_ranks = values[values >= first_word] - first_word
    # Indices beyond the word list (a Keras npz without its word index) have no word to count.
    old_ranks = old_ranks[old_ranks < n_old]
    counts_old = np.bincount(old_ranks, minlength=n_old)
    # Position of each word's first occurrence in the IMDB word stream.
    uniq, first_at = np.unique(old_ranks, return_index=True)
    first_pos = np.full(n_old, np.iinfo(np.int64).max, dtype=np.int64)
    first_pos[uniq] = first_at
    # Provisional ids: IMDB's words keep their rank, new words follow in first-seen order.
    ids: defaultdict[str, int] = defaultdict(itertools.count(n_old).__next__, zip(vocab.words, range(n_old)))
    new_values, new_counts = _encode_rows(texts, lambda tokens: map(ids.__getitem__, tokens))
    n_all = len(ids)
    words = list(vocab.words) + list(itertools.islice(ids, n_old, None))
    counts = np.bincount(new_values, minlength=n_all)
    counts[:n_old] += counts_old
    uniq_new, first_new = np.unique(new_values, return_index=True)
    first_pos = np.concatenate([first_pos, np.full(n_all - n_old, np.iinfo(np.int64).max, dtype=np.int64)])
    unseen = uniq_new[first_pos[uniq_new] == np.iinfo(np.int64).max]
    first_pos[unseen] = len(old_ranks) + first_new[np.isin(uniq_new, unseen)]
    used = np.flatnonzero(counts > 0)
    order = used[np.lexsort((first_pos[used], -counts[used]))]
    joint = Vocabulary(tuple(words[i] for i in order.tolist()), start_char=vocab.start_char,
                       oov_char=vocab.oov_char, index_from=vocab.index_from)
    new_index = np.full(n_all, vocab.oov_char, dtype=np.int32)
    new_index[order] = np.arange(len(order), dtype=np.int32) + first_word
    encoded = prepend_start(new_index[new_values], new_counts, vocab.start_char)
    return joint, new_index[:n_old], encoded


def join_labelled(imdb: ImdbData, labelled: LabelledSet) -> JointData:
    """IMDB + the labelled set; without labelled rows the IMDB data is returned unchanged."""
    if not labelled.train_texts and not labelled.holdout_texts:
        return JointData(imdb, pa.array([], pa.list_(pa.int32())), np.zeros(0, dtype=np.int8), labelled)
    vocab = imdb.vocabulary
    first_word = vocab.index_from + 1
    joint, old_to_new, labelled_train = joint_vocabulary(vocab, imdb.train_tokens, labelled.train_texts)
    train = pa.concat_arrays([_remapped(imdb.train_tokens, old_to_new, first_word, vocab.oov_char), labelled_train])
    data = replace(
        imdb,
        train_tokens=train,
        train_labels=np.concatenate([np.asarray(imdb.train_labels, dtype=np.int8),
                                     np.asarray(labelled.train_labels, dtype=np.int8)]),
        test_tokens=_remapped(imdb.test_tokens, old_to_new, first_word, vocab.oov_char),
        vocabulary=joint,
        vocab_size=joint.size,
    )
    return JointData(data, joint.encode(labelled.holdout_texts), np.asarray(labelled.holdout_labels, dtype=np.int8),
                     labelled)
