"""The n-gram bag branch (models/ngram_layers.py): its ids, training, saving, and its gate-table graph.

The bag's embedding is drawn with a large spread in these tests, so a wrong id, a lost mask or a
mean over the wrong count moves a score far past the 1e-5 parity tolerance.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from models.fast_predictors import FastLstmPredictor
from models.gate_graph import FORMS, build_fast_onnx
from models.lstm_spec import describe
from models.ngram_layers import PRIME, HashedNgrams
from models.predictors import check_parity, keras_reference, probe_batch
from tests.tinymodel import (
    DEFAULT_LIKE,
    LSTM_CONFIG,
    LSTM_VOCAB,
    build_tiny,
    parity_inputs,
    scaled,
)

pytestmark = pytest.mark.filterwarnings("ignore:Layer '.*' \\(of type GlobalMaxPooling1D\\) was passed an input")

BUCKETS = 53
BAG = dict(ngram_buckets=BUCKETS, ngram_order=3, ngram_dim=4)
# The NBSVM-like bag: one weight per bucket, summed over each review's distinct n-grams.
NB_BAG = dict(BAG, ngram_dim=1, ngram_weighting="nb", ngram_distinct=True, ngram_epochs=1)


def bag_model(seed: int = 0, **overrides):
    """A tiny LSTM_CONFIG network with the n-gram bag; gates saturate, bag rows spread widely."""
    model = scaled(build_tiny(seed, config=LSTM_CONFIG, vocab_size=LSTM_VOCAB, **{**BAG, **overrides}))
    table = model.get_layer("ngram_embedding")
    rng = np.random.default_rng(seed)
    table.embeddings.assign(rng.normal(0.0, 2.0, table.embeddings.shape).astype(np.float32))
    return model


def test_ids_are_the_documented_hash_and_padding_gets_id_0():
    x = np.array([[0, 0, 3, 5, 7], [4, 0, 0, 0, 0]], np.int32)
    ids = np.asarray(HashedNgrams(BUCKETS, (1, 2, 3))(x))
    T = x.shape[1]

    def bucket(*tokens):
        h = 0
        for t in tokens:
            h = h * PRIME + t
        return 1 + h % (BUCKETS - 1)

    expected = np.zeros_like(ids)
    expected[0, :T] = [0, 0, bucket(3), bucket(5), bucket(7)]
    expected[0, T:2 * T] = [0, 0, bucket(3, 5), bucket(5, 7), 0]
    expected[0, 2 * T:] = [0, 0, bucket(3, 5, 7), 0, 0]
    expected[1, 0] = bucket(4)
    np.testing.assert_array_equal(ids, expected)
    assert ids.max() < BUCKETS
    # The largest token ids do not overflow int64 at order 3.
    big = np.array([[2**31 - 1] * 3], np.int32)
    assert (np.asarray(HashedNgrams(BUCKETS, (3,))(big))[0, 0]
            == 1 + ((2**31 - 1) * PRIME * PRIME + (2**31 - 1) * PRIME + 2**31 - 1) % (BUCKETS - 1))


def test_distinct_ids_hold_each_n_gram_of_a_review_once():
    x = np.array([[3, 5, 3, 5, 3, 0, 0], [0, 0, 4, 4, 4, 4, 4], [0] * 7], np.int32)
    every = np.asarray(HashedNgrams(BUCKETS, (1, 2, 3))(x))
    once = np.asarray(HashedNgrams(BUCKETS, (1, 2, 3), distinct=True)(x))
    assert once.shape == every.shape
    for row_every, row_once in zip(every, once):
        kept = row_once[row_once != 0]
        assert sorted(kept.tolist()) == sorted(set(row_every[row_every != 0].tolist()))
    # Row 0: 3, 5, (3,5), (5,3), (3,5,3), (5,3,5); row 1: 4, (4,4), (4,4,4).
    assert [(r != 0).sum() for r in once] == [6, 3, 0]


def test_bad_bag_settings_are_refused():
    with pytest.raises(ValueError, match="orders within 1..3"):
        HashedNgrams(BUCKETS, (4,))
    with pytest.raises(ValueError, match="ngram_order in 1..3"):
        LSTM_CONFIG.with_overrides(ngram_buckets=10, ngram_order=4)
    with pytest.raises(ValueError, match="needs ngram_dim 1 and ngram_epochs"):
        LSTM_CONFIG.with_overrides(**{**NB_BAG, "ngram_dim": 4})
    with pytest.raises(ValueError, match="needs ngram_dim 1 and ngram_epochs"):
        LSTM_CONFIG.with_overrides(**{**NB_BAG, "ngram_epochs": 0})
    with pytest.raises(ValueError, match="ngram_c must be > 0"):
        LSTM_CONFIG.with_overrides(**NB_BAG, ngram_c=0.0)


@pytest.mark.parametrize("overrides", [dict(), dict(DEFAULT_LIKE, maxlen=7), dict(DEFAULT_LIKE, maxlen=7, **NB_BAG)],
                         ids=["seed", "default-like", "nb-bag"])
@pytest.mark.parametrize("form", FORMS)
def test_the_gate_table_graph_with_the_bag_matches_keras(overrides, form):
    model = bag_model(1, **overrides)
    x = parity_inputs(model.inputs[0].shape[1])
    spec = describe(model)
    nb = overrides.get("ngram_weighting") == "nb"
    assert spec.ngram is not None and spec.ngram.orders == (1, 2, 3) and spec.ngram.width == (1 if nb else 4)
    assert (spec.ngram.distinct, spec.ngram.pooling) == ((True, "sum") if nb else (False, "mean"))
    reference = keras_reference(model, x)
    graph = build_fast_onnx(model, form=form)
    for batch_size in (1, 16):
        check_parity(FastLstmPredictor(graph, batch_size=batch_size), x, reference)
    # The bag's rows are folded into their share of the logit: one float per bucket, not d.
    import onnx

    (table,) = [t for t in onnx.load_from_string(graph).graph.initializer if t.name.startswith("ngram_table")]
    assert list(table.dims) == [BUCKETS, 1]
    # The bag is in the score: without it the same LSTM scores differently.
    table = model.get_layer("ngram_embedding").embeddings
    table.assign(np.zeros(table.shape, np.float32))
    assert np.abs(keras_reference(model, x) - reference).max() > 1e-2


def test_bucketed_training_twin_scores_the_bag_like_the_fixed_model():
    from models.training import predict_scores

    model = bag_model(2, **DEFAULT_LIKE, maxlen=7)
    x = parity_inputs(7)
    x = x[(x[:, 0] == 0) | (x != 0).all(axis=1)]  # pre-padded rows: trimming drops only padding
    np.testing.assert_allclose(predict_scores(model, x, batch_size=8, bucket_width=2), keras_reference(model, x),
                               atol=1e-6)


def test_a_bag_model_trains_registers_and_is_served_by_the_gate_table_graph(tmp_path):
    from models.quantization import int8_export
    from models.registry import ModelRegistry
    from models.training import fit

    config = LSTM_CONFIG.with_overrides(**BAG, **DEFAULT_LIKE, maxlen=7, bucket_width=2, epochs=2, batch_size=8)
    x = probe_batch(LSTM_VOCAB, 7, n=64, seed=4)
    y = (np.isin(x, [3, 4, 5]).sum(axis=1) > 1).astype(np.float32)
    before = build_tiny(config.seed, config=config, vocab_size=LSTM_VOCAB).get_layer("ngram_embedding").get_weights()
    model = fit(config, LSTM_VOCAB, x[:48], y[:48], x[48:], y[48:]).model
    assert model.inputs[0].shape[1] == 7  # the fixed-maxlen serving model
    assert np.abs(model.get_layer("ngram_embedding").get_weights()[0] - before[0]).max() > 0  # the bag trained
    reg = ModelRegistry(str(tmp_path / "registry"))
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    # The int8 graph too (the bag stays float32 in it), sharing the one tables file with the float32 graph.
    files, record = int8_export(model, x, y, 0.5, probe, max_drop=1.0)
    version = reg.register(model, config.preprocessing(vocab_size=LSTM_VOCAB), None, {"int8": record}, probe,
                           extra_files=files)
    meta = reg.metadata(version)
    assert meta["export"]["fast"].startswith("model.fast.onnx"), meta["export"]
    assert meta["export"]["parity_max_abs_delta"] <= 1e-5
    served = reg.load_predictor(version)
    assert served.kind == "fast"
    loaded = reg.load_keras(version)  # safe_mode=True with the registered layer classes
    np.testing.assert_allclose(served.predict(probe), keras_reference(loaded, probe), atol=1e-5)
    int8 = reg.load_predictor(version, "int8")
    assert int8.kind == "int8"
    assert np.abs(int8.predict(probe) - served.predict(probe)).max() < 0.05


def test_a_relu_after_the_join_or_a_bag_first_join_is_refused():
    import keras
    from keras import layers as L

    from models.ngram_layers import MaskedMean

    def network(relu_after: bool, bag_first: bool):
        tokens = keras.Input((6,), dtype="int32")
        lstm = L.LSTM(3)(L.Embedding(LSTM_VOCAB, 4)(tokens))
        bag = MaskedMean()(L.Embedding(BUCKETS, 2, mask_zero=True)(HashedNgrams(BUCKETS)(tokens)))
        x = L.Concatenate()([bag, lstm] if bag_first else [lstm, bag])
        if relu_after:
            x = L.ReLU()(x)
        return keras.Model(tokens, L.Dense(1, activation="sigmoid")(x))

    assert describe(network(False, False)).ngram is not None
    with pytest.raises(ValueError, match="ReLU after the n-gram bag"):
        describe(network(True, False))
    with pytest.raises(ValueError, match="pooled LSTM features and the n-gram bag, in that order"):
        describe(network(False, True))


def test_the_lstm_weight_is_the_validation_split_s_choice():
    from models.training import lstm_weight

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(np.float32)
    good = np.where(y > 0, 0.8, 0.2) + rng.normal(0, 0.05, 400)
    noise = rng.uniform(0.05, 0.95, 400)
    assert lstm_weight(good, noise, y)[0] == 1.0
    w, figures = lstm_weight(noise, good, y)
    assert w == 0.0 and figures["joined"] == figures["ngram_bag"]
    assert figures["ngram_bag"]["accuracy"] == 1.0
    # Two parts with independent errors: a mix beats either.
    a = np.clip(good + rng.normal(0, 0.3, 400), 0.01, 0.99)
    b = np.clip(good + rng.normal(0, 0.3, 400), 0.01, 0.99)
    w, figures = lstm_weight(a, b, y)
    assert 0.0 < w < 1.0
    assert figures["joined"]["log_loss"] < min(figures["lstm"]["log_loss"], figures["ngram_bag"]["log_loss"])


@pytest.mark.parametrize("overrides", [dict(BAG), dict(BAG, **DEFAULT_LIKE, maxlen=7), dict(NB_BAG, **DEFAULT_LIKE, maxlen=7)],
                         ids=["seed", "default-like", "nb-bag"])
def test_the_joined_network_scores_the_weighted_sum_of_its_parts_logits_and_is_served(overrides):
    from dataclasses import replace

    from models.architecture import join_apart
    from models.ngram_bag import build_bag_model

    config = LSTM_CONFIG.with_overrides(**{**overrides, "ngram_epochs": 1})
    lstm = scaled(build_tiny(1, config=replace(config, ngram_buckets=0, ngram_epochs=0), vocab_size=LSTM_VOCAB))
    rng = np.random.default_rng(1)
    ratios = rng.normal(0.0, 1.5, BUCKETS).astype(np.float32)
    bag = build_bag_model(config, ratios, n_train=40)
    table = bag.get_layer("ngram_embedding")
    # The nb bag sums ~15 rows times their ratios: a smaller spread keeps its logits off float32's 1.0.
    spread = 0.3 if config.ngram_weighting == "nb" else 2.0
    table.embeddings.assign(rng.normal(0.0, spread, table.embeddings.shape).astype(np.float32))
    if config.ngram_weighting == "nb":
        # The penalty is on the learned factors, liblinear's 1/(2 C n) |theta|^2; the ratios are fixed.
        theta = table.get_weights()[0]
        assert float(sum(bag.losses)) == pytest.approx((theta ** 2).sum() / (2 * config.ngram_c * 40), rel=1e-5)
        assert [w.name for w in bag.trainable_weights] == ["embeddings"]
    joined = join_apart(config, LSTM_VOCAB, lstm, bag, 0.3)
    if config.ngram_weighting == "nb":
        np.testing.assert_allclose(joined.get_layer("ngram_embedding").get_weights()[0],
                                   table.get_weights()[0] * ratios[:, None], rtol=1e-6)
    x = parity_inputs(config.maxlen)

    def logit(p):
        p = np.asarray(p, np.float64).reshape(-1)
        return np.log(p) - np.log1p(-p)

    np.testing.assert_allclose(logit(keras_reference(joined, x)),
                               0.3 * logit(keras_reference(lstm, x)) + 0.7 * logit(keras_reference(bag, x)),
                               atol=1e-4)
    assert describe(joined).ngram is not None
    fast = FastLstmPredictor(build_fast_onnx(joined))
    check_parity(fast, x, keras_reference(joined, x), tolerance=1e-5)


@pytest.mark.parametrize("bag", [BAG, NB_BAG], ids=["mean-bag", "nb-bag"])
def test_a_network_trained_apart_keeps_the_lstm_of_a_plain_run_and_records_its_parts(tmp_path, bag):
    from dataclasses import replace

    from models.registry import ModelRegistry
    from models.training import fit

    config = LSTM_CONFIG.with_overrides(**{**bag, **DEFAULT_LIKE, "maxlen": 7, "bucket_width": 2, "epochs": 2,
                                           "batch_size": 8, "ngram_epochs": 3, "ngram_batch_size": 16,
                                           "early_stopping_patience": 1})
    x = probe_batch(LSTM_VOCAB, 7, n=96, seed=4)
    y = (np.isin(x, [3, 4, 5]).sum(axis=1) > 1).astype(np.float32)
    result = fit(config, LSTM_VOCAB, x[:64], y[:64], x[64:], y[64:])
    plain = fit(replace(config, ngram_buckets=0, ngram_epochs=0), LSTM_VOCAB, x[:64], y[:64], x[64:], y[64:])
    # The LSTM trains exactly as without the bag: the same seed stream, the same batches.
    for name in ("embedding", "bilstm", "bilstm_1"):
        for a, b in zip(result.model.get_layer(name).get_weights(), plain.model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert result.history == plain.history
    parts = result.parts
    assert 1 <= parts["ngram_bag"]["epochs_run"] <= 3 and "val_loss" in parts["ngram_bag"]["history"]
    assert 0.0 <= parts["lstm_weight"] <= 1.0
    assert set(parts["validation"]) == {"lstm", "ngram_bag", "joined"}
    assert parts["validation"]["joined"]["log_loss"] <= min(parts["validation"]["lstm"]["log_loss"],
                                                             parts["validation"]["ngram_bag"]["log_loss"]) + 1e-4
    reg = ModelRegistry(str(tmp_path / "registry"))
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    version = reg.register(result.model, config.preprocessing(vocab_size=LSTM_VOCAB), None, {}, probe)
    assert reg.metadata(version)["export"]["parity_max_abs_delta"] <= 1e-5
    assert reg.load_predictor(version).kind == "fast"


def test_ngram_epochs_needs_the_bag():
    with pytest.raises(ValueError, match="ngram_epochs needs ngram_buckets"):
        LSTM_CONFIG.with_overrides(ngram_epochs=2)


def test_the_train_task_logs_the_bag_s_epochs_and_how_the_parts_were_joined(caplog):
    import logging

    from tasks.data import TrainingSet
    from tasks.training import train

    config = LSTM_CONFIG.with_overrides(**BAG, maxlen=7, epochs=1, batch_size=16, ngram_epochs=2,
                                        ngram_batch_size=16, early_stopping_patience=1)
    x = probe_batch(LSTM_VOCAB, 7, n=64, seed=5)
    y = (np.isin(x, [3, 4, 5]).sum(axis=1) > 1).astype(np.float32)
    ts = TrainingSet(config.preprocessing(vocab_size=LSTM_VOCAB), "f", x[:48], y[:48], x[48:], y[48:], x[48:],
                     y[48:], np.full(16, 7))
    log = logging.getLogger("reviews")  # Prefect's logging setup does not propagate it to the root
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="reviews"):
            result = train.fn(ts, config, verbose=0)
    finally:
        log.removeHandler(caplog.handler)
    text = caplog.text
    assert "n-gram bag epoch 1/2: ngram_accuracy=" in text and "epoch 1/1: accuracy=" in text
    assert f"the BiLSTM's logit weighted {result.parts['lstm_weight']:.2f}" in text


def test_nb_ratios_are_the_log_count_ratios_of_the_reviews_holding_each_bucket():
    from models.ngram_bag import nb_ratios

    config = LSTM_CONFIG.with_overrides(**NB_BAG, maxlen=7)
    x = probe_batch(LSTM_VOCAB, 7, n=64, seed=3)
    y = (np.isin(x, [3, 4]).sum(axis=1) > 1).astype(np.float32)
    ids = np.asarray(HashedNgrams(BUCKETS, (1, 2, 3))(x))
    p, q = np.ones(BUCKETS), np.ones(BUCKETS)
    for row, label in zip(ids, y):
        for bucket in set(row.tolist()) - {0}:  # each review counts once per bucket it holds
            (p if label else q)[bucket] += 1
    expected = np.log(p / p.sum()) - np.log(q / q.sum())
    expected[0] = 0.0
    np.testing.assert_allclose(nb_ratios(config, x, y, batch_size=10), expected, rtol=1e-5, atol=1e-6)
