"""Drift profiles (models/dump_profile.py): counts by hand, merging, JSON, PSI/JS maths, and the
drift verdicts on the real IMDB splits (``realdata``) and on Zipf-like synthetic reviews."""

from __future__ import annotations

import json
import time
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pytest

from models.dump_profile import (DRIFT_THRESHOLD, EPS, FEATURES, DumpProfile, compare, drift_markdown,
                                 js_divergence, psi)

NUM_WORDS = 20_000  # the default preset's vocabulary cut


def list_array(offsets: np.ndarray, values: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.asarray(offsets, dtype=np.int32)),
                                    pa.array(np.asarray(values, dtype=np.int32)))


def zipf_reviews(n: int, seed: int, vocab: int = 88_000, oov_rate: float = 0.01) -> pa.ListArray:
    """Reviews shaped like IMDB's: log-normal lengths (median ~175), start marker, Zipf word ranks, some OOV."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(175), 0.6, n).astype(np.int64), 8, 3000)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.minimum(rng.zipf(1.15, offsets[-1]), vocab - 4) + 3
    values[rng.random(offsets[-1]) < oov_rate] = 2
    values[offsets[:-1]] = 1
    return list_array(offsets, values)


def flat(tokens: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    return tokens.offsets.to_numpy().astype(np.int64), tokens.values.to_numpy()


def cut(tokens: pa.ListArray, keep: int) -> pa.ListArray:
    """Every review cut to its first ``keep`` tokens."""
    offsets, values = flat(tokens)
    kept = np.minimum(np.diff(offsets), keep)
    new = np.concatenate([[0], np.cumsum(kept)])
    pos = np.arange(new[-1]) - np.repeat(new[:-1], kept)
    return list_array(new, values[np.repeat(offsets[:-1], kept) + pos])


def shuffle_ids(tokens: pa.ListArray, vocab_size: int, seed: int) -> pa.ListArray:
    """A random permutation of the word ids (>= 3): a dump encoded with the wrong vocabulary."""
    table = np.arange(vocab_size)
    table[3:] = 3 + np.random.default_rng(seed).permutation(vocab_size - 3)
    offsets, values = flat(tokens)
    return list_array(offsets, table[values])


def psi_of(report, feature: str) -> float:
    return next(f.psi for f in report.features if f.feature == feature)


# --------------------------------------------------------------------------- maths and counting

def test_psi_and_js_against_numpy_on_a_hand_example():
    ref, cur = np.array([10, 0, 30, 60]), np.array([20, 20, 0, 60])
    p, q = ref / 100, cur / 100
    pe, qe = np.where(p == 0, EPS, p), np.where(q == 0, EPS, q)
    expected_psi = ((qe - pe) * np.log(qe / pe)).sum()
    m = (p + q) / 2
    kl_p = sum(a * np.log2(a / b) for a, b in zip(p, m) if a > 0)
    kl_q = sum(a * np.log2(a / b) for a, b in zip(q, m) if a > 0)
    assert psi(ref, cur) == pytest.approx(expected_psi, rel=1e-12)
    assert js_divergence(ref, cur) == pytest.approx((kl_p + kl_q) / 2, rel=1e-12)
    # The two empty bins cost (0.2 - 1e-4) ln(0.2 / 1e-4) and (0.3 - 1e-4) ln(0.3 / 1e-4).
    assert expected_psi == pytest.approx(0.1 * np.log(2) + 0.1999 * np.log(2000) + 0.2999 * np.log(3000), rel=1e-12)
    assert psi(ref, ref * 7) == 0.0 and js_divergence(ref, ref * 7) == 0.0  # shares, not counts
    assert js_divergence([5, 0], [0, 5]) == pytest.approx(1.0)  # disjoint: one bit


def test_compare_uses_those_values_per_feature():
    ref = DumpProfile.from_dict({**DumpProfile.empty().to_dict(), "rows": 1000, "score": [100] * 10})
    cur = DumpProfile.from_dict({**ref.to_dict(), "score": [0] * 5 + [200] * 5})
    report = compare(ref, cur)
    score = next(f for f in report.features if f.feature == "score")
    assert score.psi == pytest.approx(psi([100] * 10, [0] * 5 + [200] * 5)) and score.psi > DRIFT_THRESHOLD
    assert score.js == pytest.approx(js_divergence([100] * 10, [0] * 5 + [200] * 5))
    assert report.drifted == ["score"] and report.verdict == "drift"
    assert {f.feature: f.note for f in report.features if f.psi is None} == {
        "length": "no data", "oov_share": "no data", "beyond_num_words": "full vocabulary: no ids beyond num_words",
        "token_ids": "no data"}


def test_from_batch_counts_by_hand():
    tokens = pa.array([[1, 5, 2, 30000], [1, 2], [1, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]],
                      pa.list_(pa.int32()))
    scores = np.array([0.05, 0.5, 1.0], dtype=np.float32)
    p = DumpProfile.from_batch(tokens, scores, num_words=NUM_WORDS)
    assert (p.rows, p.tokens, p.oov_tokens, p.beyond_tokens) == (3, 23, 2, 1)
    length = dict(zip(FEATURES["length"][1], p.length))
    assert (length["2-3"], length["4-7"], length["16-23"], sum(p.length)) == (1, 1, 1, 3)
    shares = dict(zip(FEATURES["oov_share"][1], p.oov_share))
    assert (shares["0"], shares["(20%, 50%]"], sum(p.oov_share)) == (1, 2, 3)  # 1/4 and 1/2 (upper-inclusive)
    assert dict(zip(FEATURES["beyond_num_words"][1], p.beyond_num_words))["(20%, 50%]"] == 1  # 30000: 1 of 4
    ids = dict(zip(FEATURES["token_ids"][1], p.token_ids))
    # Word ids only (start markers and OOV are other features): 5, 7 | 8-15 | 16-22 | 30000.
    assert (ids["3-7"], ids["8-15"], ids["16-31"], ids["16,384-32,767"], sum(p.token_ids)) == (2, 8, 7, 1, 18)
    assert p.score == tuple(np.histogram(scores, bins=10, range=(0.0, 1.0))[0])  # the manifest's histogram
    assert DumpProfile.from_batch(tokens, scores).beyond_num_words is None  # full vocabulary


def test_every_token_encoding_gives_the_same_profile():
    tokens = zipf_reviews(300, seed=1)
    scores = np.random.default_rng(1).random(300).astype(np.float32)
    want = DumpProfile.from_batch(tokens, scores, NUM_WORDS)
    for t in (pa.list_(pa.int64()), pa.list_(pa.uint32()), pa.list_(pa.float64()), pa.large_list(pa.int32())):
        assert DumpProfile.from_batch(tokens.cast(t), scores, NUM_WORDS) == want, t
    chunked = pa.chunked_array([tokens.slice(0, 100), tokens.slice(100)])
    assert DumpProfile.from_batch(chunked, scores, NUM_WORDS) == want
    # Null ids read as OOV (as to_matrix reads them); null rows count as empty reviews.
    with_nulls = pa.array([[1, None, 4], None, [1, 4]], pa.list_(pa.int64()))
    p = DumpProfile.from_batch(with_nulls, np.zeros(3), NUM_WORDS)
    assert (p.rows, p.tokens, p.oov_tokens, p.length[0]) == (3, 5, 1, 1)
    with pytest.raises(ValueError, match="3 token rows but 2 scores"):
        DumpProfile.from_batch(with_nulls, np.zeros(2))


def test_merging_unit_profiles_equals_the_profile_of_the_whole():
    tokens, rng = zipf_reviews(5000, seed=2), np.random.default_rng(2)
    scores = rng.random(5000).astype(np.float32)
    whole = DumpProfile.from_batch(tokens, scores, NUM_WORDS)
    cuts = [0, 0, 1, 17, 2500, 2500, 4096, 4999, 5000]  # empty and one-row units included
    units = [DumpProfile.from_batch(tokens.slice(a, b - a), scores[a:b], NUM_WORDS) for a, b in pairwise(cuts)]
    assert DumpProfile.merge_all(units) == whole
    assert DumpProfile.merge_all(reversed(units)) == whole
    assert DumpProfile.merge_all([], NUM_WORDS) == DumpProfile.empty(NUM_WORDS)
    assert DumpProfile.empty(NUM_WORDS).merge(whole) == whole
    with pytest.raises(ValueError, match="num_words 20000 and None"):
        whole.merge(DumpProfile.empty())


def test_json_round_trip_is_exact():
    tokens = zipf_reviews(2000, seed=3)
    scores = np.random.default_rng(3).random(2000).astype(np.float32)
    for num_words in (None, NUM_WORDS):
        p = DumpProfile.from_batch(tokens, scores, num_words)
        text = json.dumps(p.to_dict())
        assert DumpProfile.from_dict(json.loads(text)) == p
        assert len(text) < 800  # small enough for part metadata, manifests and Prefect results
        report = compare(p, p)
        json.dumps(report.to_dict(), allow_nan=False)
        assert report.to_dict()["verdict"] == "no drift"
    with pytest.raises(ValueError, match="format 0"):
        DumpProfile.from_dict({**p.to_dict(), "format": 0})
    with pytest.raises(ValueError, match="score: 9 bins, expected 10"):
        DumpProfile.from_dict({**p.to_dict(), "score": [1] * 9})


# --------------------------------------------------------------------------- verdicts, synthetic reviews

@pytest.fixture(scope="module")
def synthetic():
    ref, cur = zipf_reviews(20_000, seed=10), zipf_reviews(20_000, seed=11)
    rng = np.random.default_rng(12)
    return ref, rng.beta(2, 2, 20_000), cur, rng.beta(2, 2, 20_000)


def test_synthetic_same_population_no_drift(synthetic):
    ref, ref_scores, cur, cur_scores = synthetic
    report = compare(DumpProfile.from_batch(ref, ref_scores, NUM_WORDS),
                     DumpProfile.from_batch(cur, cur_scores, NUM_WORDS))
    assert report.verdict == "no drift", drift_markdown(report)
    assert max(f.psi for f in report.features) < 0.02


def test_synthetic_cut_and_shuffled(synthetic):
    ref_tokens, ref_scores, cur, cur_scores = synthetic
    ref = DumpProfile.from_batch(ref_tokens, ref_scores, NUM_WORDS)
    short = compare(ref, DumpProfile.from_batch(cut(cur, 10), cur_scores, NUM_WORDS))
    assert "length" in short.drifted and psi_of(short, "length") == max(f.psi for f in short.features)
    shuffled = compare(ref, DumpProfile.from_batch(shuffle_ids(cur, 88_000, seed=13), cur_scores, NUM_WORDS))
    assert set(shuffled.drifted) == {"token_ids", "beyond_num_words"}, drift_markdown(shuffled)
    assert psi_of(shuffled, "length") < 0.02 and psi_of(shuffled, "oov_share") < 0.02


def test_too_few_rows_are_reported_not_flagged(synthetic):
    ref_tokens, ref_scores, cur, cur_scores = synthetic
    ref = DumpProfile.from_batch(ref_tokens, ref_scores, NUM_WORDS)
    report = compare(ref, DumpProfile.from_batch(cut(cur.slice(0, 50), 10), cur_scores[:50], NUM_WORDS))
    assert report.verdict == "too few rows" and report.drifted == []
    assert psi_of(report, "length") > DRIFT_THRESHOLD
    assert "fewer than 500 rows: not flagged" in drift_markdown(report)
    other = compare(ref, DumpProfile.from_batch(cur, cur_scores, None))
    assert next(f.note for f in other.features if f.feature == "beyond_num_words").startswith("num_words differ")


def test_markdown_has_the_verdict_the_features_and_bars(synthetic):
    ref_tokens, ref_scores, cur, cur_scores = synthetic
    ref = DumpProfile.from_batch(ref_tokens, ref_scores, NUM_WORDS)
    md = drift_markdown(compare(ref, DumpProfile.from_batch(cut(cur, 10), cur_scores, NUM_WORDS)))
    assert md.startswith("## Drift report: **drift**")
    assert "| review length (tokens) |" in md and "### review length (tokens) (drifted)" in md
    assert "| 8-15 | 0.0% | 100.0% |" in md and "█" * 20 in md


def test_from_batch_speed_on_a_full_record_batch(capsys):
    n, width = 8192, 500
    rng = np.random.default_rng(5)
    tokens = list_array(np.arange(0, n * width + 1, width), np.minimum(rng.zipf(1.15, n * width), 88_000) + 3)
    scores = rng.random(n).astype(np.float32)
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        DumpProfile.from_batch(tokens, scores, NUM_WORDS)
        seconds.append(time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nfrom_batch, {n} rows x {width} tokens: median {1000 * np.median(seconds):.1f} ms")
    assert min(seconds) < 1.0  # ~20 ms measured; scoring the same batch takes seconds


# --------------------------------------------------------------------------- the real IMDB data

@pytest.fixture(scope="module")
def imdb():
    from infra.imdb import default_cache_dir
    from models.imdb_dataset import load_imdb

    return load_imdb("npm", cache_dir=default_cache_dir())


def _naive_bayes(tokens: pa.ListArray, labels: np.ndarray, vocab_size: int) -> np.ndarray:
    """Per-id log-count ratio of positive to negative reviews: a real, cheap sentiment model."""
    offsets, values = flat(tokens)
    positive = np.repeat(labels == 1, np.diff(offsets))
    pos = np.bincount(values[positive], minlength=vocab_size) + 1.0
    neg = np.bincount(values[~positive], minlength=vocab_size) + 1.0
    return np.log(pos / pos.sum()) - np.log(neg / neg.sum())


def _scores(ratio: np.ndarray, tokens: pa.ListArray) -> np.ndarray:
    offsets, values = flat(tokens)
    mean = np.add.reduceat(ratio[np.minimum(values, len(ratio) - 1)], offsets[:-1]) / np.diff(offsets)
    return (1 / (1 + np.exp(-8 * mean))).astype(np.float32)


@pytest.fixture(scope="module")
def real(imdb):
    """Out-of-sample scores for both splits: two models, each fitted on one half of train."""
    n = len(imdb.train_labels)
    order = np.random.default_rng(0).permutation(n)
    halves = [np.sort(order[: n // 2]), np.sort(order[n // 2:])]
    models = [_naive_bayes(imdb.train_tokens.take(pa.array(h)), imdb.train_labels[h], imdb.vocab_size) for h in halves]
    train_scores = np.empty(n, dtype=np.float32)
    for h, model in zip(halves, reversed(models)):
        train_scores[h] = _scores(model, imdb.train_tokens.take(pa.array(h)))

    def score(tokens: pa.ListArray) -> np.ndarray:
        return _scores(models[0], tokens)

    reference = DumpProfile.from_batch(imdb.test_tokens, score(imdb.test_tokens), NUM_WORDS)  # what registration stores
    return reference, train_scores, score


@pytest.mark.realdata
def test_real_train_split_against_the_test_split_reference(imdb, real):
    reference, train_scores, _ = real
    report = compare(reference, DumpProfile.from_batch(imdb.train_tokens, train_scores, NUM_WORDS))
    # The vocabulary is built from the train split, so it holds no OOV id at all (the test split:
    # 1.1% of tokens, in 66% of reviews): that feature must differ; every other one must not.
    assert reference.oov_tokens > 0.01 * reference.tokens
    assert report.drifted == ["oov_share"], drift_markdown(report)
    assert all(f.psi < 0.1 for f in report.features if f.feature != "oov_share"), drift_markdown(report)


@pytest.mark.realdata
def test_real_halves_of_the_test_split_no_drift(imdb, real):
    _, _, score = real
    order = np.random.default_rng(1).permutation(len(imdb.test_labels))
    a, b = (imdb.test_tokens.take(pa.array(np.sort(h))) for h in np.array_split(order, 2))
    report = compare(DumpProfile.from_batch(a, score(a), NUM_WORDS), DumpProfile.from_batch(b, score(b), NUM_WORDS))
    assert report.verdict == "no drift" and max(f.psi for f in report.features) < 0.02, drift_markdown(report)


@pytest.mark.realdata
def test_real_reviews_cut_to_10_tokens_drift_on_length(imdb, real):
    reference, _, score = real
    short = cut(imdb.test_tokens, 10)
    report = compare(reference, DumpProfile.from_batch(short, score(short), NUM_WORDS))
    assert "length" in report.drifted and psi_of(report, "length") == max(f.psi for f in report.features)


@pytest.mark.realdata
def test_real_shuffled_token_ids_drift_on_token_ids_not_length(imdb, real):
    reference, _, score = real
    shuffled = shuffle_ids(imdb.test_tokens, imdb.vocab_size, seed=2)
    report = compare(reference, DumpProfile.from_batch(shuffled, score(shuffled), NUM_WORDS))
    assert {"token_ids", "beyond_num_words"} <= set(report.drifted), drift_markdown(report)
    assert psi_of(report, "length") == 0.0 and psi_of(report, "oov_share") == 0.0  # lengths, OOV untouched
    full_vocabulary = compare(DumpProfile.from_batch(imdb.test_tokens, score(imdb.test_tokens)),
                              DumpProfile.from_batch(shuffled, score(shuffled)))
    assert "token_ids" in full_vocabulary.drifted and "length" not in full_vocabulary.drifted


@pytest.mark.realdata
def test_real_units_merge_to_the_profile_of_the_split(imdb, real):
    reference, _, score = real
    scores = score(imdb.test_tokens)
    units = [DumpProfile.from_batch(imdb.test_tokens.slice(s, 8192), scores[s:s + 8192], NUM_WORDS)
             for s in range(0, len(scores), 8192)]
    assert DumpProfile.merge_all(units) == reference
    assert DumpProfile.from_dict(json.loads(json.dumps(reference.to_dict()))) == reference
