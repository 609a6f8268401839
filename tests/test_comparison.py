"""The gate's statistics (models/comparison.py) and evaluation set (models/evaluation_set.py) on
synthetic vectors whose answers can be worked out by hand."""

from __future__ import annotations

from math import comb

import numpy as np
import pyarrow as pa
import pytest

from models.comparison import _SortedScores, compare, mcnemar_exact, paired_bootstrap
from models.evaluation import roc_auc
from models.evaluation_set import NO_VOCABULARY, REENCODED, SAME_VOCABULARY, evaluation_set, tokens_for, version_matrix
from models.preprocessing import Preprocessing, to_matrix
from models.text import Vocabulary


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


@pytest.mark.parametrize("only_a, only_b, expected", [
    (0, 5, 2 / 2 ** 5),                      # n=5, k=0: 2 * C(5,0) / 32 = 0.0625
    (1, 9, 2 * (1 + 10) / 2 ** 10),          # n=10, k=1: 2 * (C(10,0) + C(10,1)) / 1024 = 0.021484375
    (2, 8, 2 * (1 + 10 + 45) / 2 ** 10),     # n=10, k=2: 112 / 1024 = 0.109375
    (3, 3, 1.0),                             # balanced: both tails overlap, capped at 1
    (4, 5, 1.0),                             # n=9, k=4: 2 * 256 / 512 = 1
    (0, 0, 1.0),                             # no discordant pairs
])
def test_mcnemar_exact_matches_the_binomial_tail_by_hand(only_a, only_b, expected):
    a, b = _pairs(7, only_a, only_b, 4)
    got = mcnemar_exact(a, b)
    assert (got["only_a"], got["only_b"]) == (only_a, only_b)
    assert got["p_value"] == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, a)["p_value"] == got["p_value"], "two-sided: symmetric in the models"


def test_mcnemar_exact_stays_exact_for_large_counts():
    # 3,000 discordant pairs: 2^3000 overflows a float; the integer tail does not.
    a, b = _pairs(20_000, 1_400, 1_600, 3_000)
    p = mcnemar_exact(a, b)["p_value"]
    tail = sum(comb(3000, i) for i in range(1401))
    assert p == pytest.approx(2 * tail / 2 ** 3000) and 0 < p < 0.001
    with pytest.raises(ValueError, match="shape"):
        mcnemar_exact(a, b[:-1])


def test_weighted_auc_equals_the_auc_of_the_resampled_rows():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    ranked = _SortedScores(s, y.astype(bool))
    assert ranked.auc(np.ones(500, dtype=np.int64)) == pytest.approx(roc_auc(y, s), abs=1e-12)
    w = np.bincount(rng.integers(0, 500, 500), minlength=500)
    rows = np.repeat(np.arange(500), w)
    assert ranked.auc(w) == pytest.approx(roc_auc(y[rows], s[rows]), abs=1e-12)


def test_bootstrap_of_identical_models_is_exactly_zero_and_reproducible():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = rng.random(400)
    boot = paired_bootstrap(y, s, s.copy(), resamples=200, seed=7)
    assert boot["accuracy_difference"] == 0 and boot["accuracy_difference_ci"] == [0.0, 0.0]
    assert boot["auc_difference"] == 0 and boot["auc_difference_ci"] == [0.0, 0.0]
    s2 = np.clip(s + rng.normal(0, 0.2, 400), 0, 1)
    assert paired_bootstrap(y, s, s2, resamples=200, seed=7) == paired_bootstrap(y, s, s2, resamples=200, seed=7)


def test_compare_sees_a_clearly_better_model_and_brackets_its_gain():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    weak = np.clip(0.5 + (y - 0.5) * 0.2 + rng.normal(0, 0.3, 2000), 0, 1)    # ~ 0.63 accurate
    strong = np.clip(0.5 + (y - 0.5) * 0.8 + rng.normal(0, 0.3, 2000), 0, 1)  # ~ 0.91 accurate
    c = compare(y, weak, strong, resamples=300)
    acc_weak, acc_strong = ((weak >= 0.5) == y).mean(), ((strong >= 0.5) == y).mean()
    assert c["n"] == 2000 and c["champion_accuracy"] == acc_weak and c["challenger_accuracy"] == acc_strong
    assert c["accuracy_difference"] == pytest.approx(acc_strong - acc_weak)
    lo, hi = c["accuracy_difference_ci95"]
    assert 0 < lo < c["accuracy_difference"] < hi
    assert c["mcnemar_p_value"] < 1e-10 and c["only_challenger_correct"] > c["only_champion_correct"]
    assert c["auc_difference_ci95"][0] > 0 and not c["identical_predictions"]
    assert c["challenger_auc"] == pytest.approx(roc_auc(y, strong))
    # Swapped roles: the same evidence, negated.
    back = compare(y, strong, weak, resamples=300)
    assert back["accuracy_difference"] == pytest.approx(-c["accuracy_difference"])
    assert back["mcnemar_p_value"] == c["mcnemar_p_value"]


# ---- evaluation set ------------------------------------------------------------------------

TEXTS = ["a good film", "a bad bad plot", "great acting and a great plot", "boring", "zebra good"]


def test_tokens_are_reencoded_through_words_for_another_vocabulary():
    data_vocab = Vocabulary.build(["good good film bad plot a acting", "great and boring"])
    other = Vocabulary(("plot", "bad", "zebra", "good", "a", "great"))  # other ranks, other words
    es = evaluation_set(data_vocab.encode(TEXTS), np.array([1, 0, 1, 0, 1]), data_vocab)
    tokens, how = tokens_for(es, other.to_json())
    assert how == REENCODED
    # What encoding the text with the other vocabulary gives - except "zebra", which the data's
    # vocabulary never had (already out-of-vocabulary in the data's tokens).
    expected = other.encode(TEXTS).to_pylist()
    expected[4][1] = other.oov_char
    assert tokens.to_pylist() == expected
    assert tokens_for(es, data_vocab.to_json()) == (es.tokens, SAME_VOCABULARY)
    assert tokens_for(es, None)[1] == NO_VOCABULARY


def test_each_version_gets_its_own_matrix_from_the_uncut_tokens():
    vocab = Vocabulary(tuple(f"w{i}" for i in range(30)))
    rows = [[1] + list(range(4, 4 + n)) for n in (3, 12, 20)]
    es = evaluation_set(pa.array(rows), np.array([0, 1, 1]), vocab, holdout_tokens=[[1, 5, 6]],
                        holdout_labels=np.array([1]))
    assert es.parts == {"imdb_test": 3, "holdout": 1} and len(es) == 4 and es.labels.tolist() == [0, 1, 1, 1]
    short = Preprocessing(maxlen=5, padding="post", truncating="post", vocab_size=vocab.size)
    long = Preprocessing(maxlen=16, padding="pre", truncating="pre", num_words=10, vocab_size=vocab.size)
    for prep in (short, long):
        x, _ = version_matrix(es, prep, vocab.to_json())
        np.testing.assert_array_equal(x, to_matrix(pa.array(rows + [[1, 5, 6]]), prep))
    assert version_matrix(es, long, vocab.to_json())[0][2, -1] == 2, "index 23 >= num_words 10: out-of-vocabulary"
    # A padded holdout matrix (what TrainingSet.x_test-style fields hold) loses only its padding.
    padded = evaluation_set(pa.array(rows), np.array([0, 1, 1]), vocab, np.array([[1, 5, 6, 0, 0]]), np.array([1]))
    assert padded.tokens.to_pylist()[-1] == [1, 5, 6]
    with pytest.raises(ValueError, match="holdout"):
        evaluation_set(pa.array(rows), np.array([0, 1, 1]), vocab, [[1, 5]], np.array([1, 0]))
