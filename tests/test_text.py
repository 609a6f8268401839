"""Tokenizer, vocabulary and the token-matrix conversion against Keras semantics."""

from __future__ import annotations

import string
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.preprocessing import Preprocessing, to_matrix
from models.text import KERAS_FILTERS, Vocabulary, tokenize


def keras_text_to_word_sequence(text: str) -> list[str]:
    """Keras 2 ``keras.preprocessing.text.text_to_word_sequence`` with its defaults, verbatim."""
    text = text.lower()
    translate_map = str.maketrans({c: " " for c in KERAS_FILTERS})
    return [w for w in text.translate(translate_map).split(" ") if w]


def keras_tokenizer_ranking(texts: list[str]) -> list[str]:
    """Word order of Keras 2 ``Tokenizer.fit_on_texts`` -> ``word_index`` (rank 1 first)."""
    word_counts: OrderedDict[str, int] = OrderedDict()
    for text in texts:
        for w in keras_text_to_word_sequence(text):
            word_counts[w] = word_counts.get(w, 0) + 1
    wcounts = list(word_counts.items())
    wcounts.sort(key=lambda x: x[1], reverse=True)
    return [w for w, _ in wcounts]


# ---------------------------------------------------------------------------
# tokenize

@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", ["hello", "world"]),
    ("I don't like it.", ["i", "don't", "like", "it"]),
    ("'quoted' words", ["'quoted'", "words"]),
    ("Great<br /><br />Movie", ["great", "movie"]),
    ("a<br/>b<br>c<BR />d", ["a", "b", "c", "d"]),
    ("tab\there\nnewline", ["tab", "here", "newline"]),
    ("x--y...z", ["x", "y", "z"]),
    ('e-mail @home #1 (2010) [sic] {a|b} ~c_d^e`f\\g "h"',
     ["e", "mail", "home", "1", "2010", "sic", "a", "b", "c", "d", "e", "f", "g", "h"]),
    ("MiXeD CaSe", ["mixed", "case"]),
    ("Café — naïve", ["café", "—", "naïve"]),
    ("", []),
    ("  ,,, !!! ", []),
])
def test_tokenize_examples(text, expected):
    assert tokenize(text) == expected


def test_br_tags_do_not_become_words():
    # Keras alone would turn every "<br />" into the word "br".
    text = "First line.<br /><br />Second line."
    assert "br" in keras_text_to_word_sequence(text)
    assert tokenize(text) == ["first", "line", "second", "line"]


_KERAS_ALPHABET = string.ascii_letters + string.digits + KERAS_FILTERS + " '" + "éÉßç—İ€"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_KERAS_ALPHABET, max_size=80).filter(lambda t: "<br" not in t.lower()))
def test_tokenize_equals_keras_without_br_tags(text):
    assert tokenize(text) == keras_text_to_word_sequence(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_tokens_never_hold_separators(text):
    for tok in tokenize(text):
        assert tok and not any(c in KERAS_FILTERS or c.isspace() for c in tok)


# ---------------------------------------------------------------------------
# Vocabulary

def test_ranking_by_count_with_ties_in_first_occurrence_order():
    texts = ["b a c", "c a d", "e"]
    vocab = Vocabulary.build(texts)
    # a and c both occur twice, a first; b, d, e once each, in order of appearance.
    assert vocab.words == ("a", "c", "b", "d", "e")
    assert list(vocab.words) == keras_tokenizer_ranking(texts)


_WORDS = st.sampled_from(["the", "a", "film", "Film", "bad", "good", "don't", "it's", "plot"])
_SEPS = st.sampled_from([" ", ", ", "! ", "<br />", "\n", "..."])


@st.composite
def reviews(draw):
    n = draw(st.integers(0, 8))
    return "".join(draw(_WORDS) + draw(_SEPS) for _ in range(n))


@settings(max_examples=150, deadline=None)
@given(st.lists(reviews(), max_size=12))
def test_ranking_matches_keras_tokenizer(texts):
    cleaned = [t.replace("<br />", " ") for t in texts]  # the reference does not know the tag
    assert list(Vocabulary.build(texts).words) == keras_tokenizer_ranking(cleaned)


@settings(max_examples=100, deadline=None)
@given(st.lists(reviews(), max_size=12))
def test_build_encoded_equals_build_then_encode(texts):
    vocab, encoded = Vocabulary.build_encoded(texts)
    assert vocab == Vocabulary.build(texts)
    assert encoded.equals(vocab.encode(texts))
    # Every train word is in its own vocabulary: no OOV in the train encoding.
    assert 2 not in encoded.values.to_pylist()


def test_encode_start_oov_and_index_from():
    vocab = Vocabulary(("the", "movie"))
    encoded = vocab.encode(["The movie!", "", "unknown the"])
    assert encoded.type == pa.list_(pa.int32())
    assert encoded.to_pylist() == [[1, 4, 5], [1], [1, 2, 4]]


def test_encode_accepts_a_generator_and_custom_settings():
    vocab = Vocabulary(("x", "y"), start_char=2, oov_char=1, index_from=5)
    assert vocab.encode(t for t in ["y z x"]).to_pylist() == [[2, 7, 1, 6]]
    assert vocab.size == 8
    assert vocab.word_index() == {"x": 6, "y": 7}


def test_test_only_words_are_oov():
    train = ["a good film", "a bad film"]
    test = ["a superb film"]
    vocab, train_enc = Vocabulary.build_encoded(train)
    assert "superb" not in vocab.word_index()
    idx = vocab.word_index()
    assert vocab.encode(test).to_pylist() == [[1, idx["a"], 2, idx["film"]]]
    assert train_enc.to_pylist() == [[1, idx["a"], idx["good"], idx["film"]], [1, idx["a"], idx["bad"], idx["film"]]]


def test_size_is_an_exclusive_bound_of_encoded_indices():
    texts = ["one two three two three three"]
    vocab, encoded = Vocabulary.build_encoded(texts)
    assert vocab.word_index() == {"three": 4, "two": 5, "one": 6}
    assert max(encoded.values.to_pylist()) == vocab.size - 1 == len(vocab) + 3


def test_decode_round_trip():
    vocab = Vocabulary.build(["the cat sat on the mat"])
    enc = vocab.encode(["the dog sat"])
    assert vocab.decode(enc[0].values.to_numpy()) == "<start> the <oov> sat"
    assert vocab.decode([0, 0, 1, 4]) == "<start> the"


def test_json_round_trip_and_validation():
    vocab = Vocabulary(("b", "a"), start_char=1, oov_char=2, index_from=3)
    assert Vocabulary.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError, match="kind"):
        Vocabulary.from_json({"words": ["a"]})
    with pytest.raises(ValueError, match="list of strings"):
        Vocabulary.from_json({**vocab.to_json(), "words": ["a", 3]})
    with pytest.raises(ValueError, match="twice"):
        Vocabulary.from_json({**vocab.to_json(), "words": ["a", "a"]})
    with pytest.raises(ValueError, match="start_char"):
        Vocabulary(("a",), start_char=4, index_from=3)


def test_from_keras_word_index():
    vocab = Vocabulary.from_keras_word_index({"movie": 2, "the": 1, "film": 3})
    assert vocab.words == ("the", "movie", "film")
    assert vocab.word_index() == {"the": 4, "movie": 5, "film": 6}
    with pytest.raises(ValueError, match="rank 2 is missing"):
        Vocabulary.from_keras_word_index({"the": 1, "film": 3})
    with pytest.raises(ValueError, match="share rank 1"):
        Vocabulary.from_keras_word_index({"the": 1, "a": 1})
    with pytest.raises(ValueError, match="int >= 1"):
        Vocabulary.from_keras_word_index({"the": 0})


# ---------------------------------------------------------------------------
# to_matrix vs keras.utils.pad_sequences after load_data's OOV rule

def keras_load_data_oov(seqs, num_words, skip_top, oov_char=2):
    """The list comprehension ``keras.datasets.imdb.load_data`` applies."""
    if num_words is None:
        num_words = max(max(s) for s in seqs if s) + 1
    return [[w if skip_top <= w < num_words else oov_char for w in s] for s in seqs]


_ROWS = [[1, 4, 5, 6, 7, 8, 9, 30], [1, 12], [1], [1, 4, 40, 41, 5, 6, 7, 3, 20, 21, 22, 23], [1, 9, 9, 9]]


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("truncating", ["pre", "post"])
@pytest.mark.parametrize("num_words, skip_top", [(None, 0), (10, 0), (25, 5)])
@pytest.mark.parametrize("sliced", [False, True])
def test_to_matrix_matches_keras_pad_sequences(padding, truncating, num_words, skip_top, sliced):
    keras = pytest.importorskip("keras")
    arr = pa.array([[0, 0]] + _ROWS + [[7]], type=pa.list_(pa.int32()))
    rows = _ROWS + [[7]]
    if sliced:  # offsets of a slice point into the parent's values
        arr, rows = arr[1:5], _ROWS[:4]
    else:
        arr = arr[1:]
    prep = Preprocessing(maxlen=6, padding=padding, truncating=truncating, num_words=num_words, skip_top=skip_top)
    expected = keras.utils.pad_sequences(keras_load_data_oov(rows, num_words, skip_top), maxlen=6,
                                         padding=padding, truncating=truncating, value=0, dtype="int32")
    np.testing.assert_array_equal(to_matrix(arr, prep), expected)


def reference_matrix(rows, prep: Preprocessing) -> np.ndarray:
    upper = prep.input_dim or None
    out = np.zeros((len(rows), prep.maxlen), dtype=np.int32)
    for i, row in enumerate(rows):
        row = [w if w >= prep.skip_top and (upper is None or w < upper) else prep.oov_char for w in (row or [])]
        row = row[-prep.maxlen:] if prep.truncating == "pre" else row[:prep.maxlen]
        if row:
            if prep.padding == "pre":
                out[i, prep.maxlen - len(row):] = row
            else:
                out[i, :len(row)] = row
    return out


@st.composite
def matrix_cases(draw):
    rows = draw(st.lists(st.one_of(st.none(), st.lists(st.integers(0, 60), max_size=15)), max_size=10))
    start = draw(st.integers(0, len(rows)))
    stop = draw(st.integers(start, len(rows)))
    num_words = draw(st.one_of(st.none(), st.integers(3, 70)))
    prep = Preprocessing(
        maxlen=draw(st.integers(1, 12)),
        padding=draw(st.sampled_from(["pre", "post"])),
        truncating=draw(st.sampled_from(["pre", "post"])),
        num_words=num_words,
        skip_top=draw(st.integers(0, 5)),
        vocab_size=draw(st.sampled_from([0, 20, 61])),
    )
    return rows, start, stop, prep


@settings(max_examples=300, deadline=None)
@given(matrix_cases())
def test_to_matrix_property(case):
    rows, start, stop, prep = case
    arr = pa.array(rows, type=pa.list_(pa.int32()))[start:stop]
    np.testing.assert_array_equal(to_matrix(arr, prep), reference_matrix(rows[start:stop], prep))
