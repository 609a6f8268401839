"""Training: presets, length bucketing with masking (exactly the padded matrix's scores),
reproducible fits, and the default architecture registering with ONNX parity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models.architecture import build_model
from models.predictors import keras_reference, probe_batch
from models.presets import PRESETS, TrainConfig, get_preset
from models.training import bucketed_dataset, fit, length_batches, row_lengths, trim_batch

INPUT_DIM = 50

# GlobalMaxPooling1D drops the mask on purpose (see models.architecture); pytest resets the
# module-level filter for each test.
pytestmark = pytest.mark.filterwarnings("ignore:Layer 'max_pool':UserWarning")


def tiny(config: TrainConfig, **kw) -> TrainConfig:
    """The same architecture, a few units wide (the n-gram bag a few buckets)."""
    bag = {"ngram_buckets": 61} if config.ngram_buckets else {}
    return config.with_overrides(**{"maxlen": 24, "embedding_dim": 6, "lstm_units": 4, **bag, **kw})


def test_seed_preset_is_the_tutorial():
    seed = PRESETS["seed"]
    assert seed == TrainConfig(preset="seed")
    assert (seed.maxlen, seed.padding, seed.truncating, seed.num_words, seed.embedding_dim, seed.lstm_units,
            seed.bidirectional, seed.pooling, seed.epochs, seed.batch_size, seed.learning_rate) == \
        (50, "post", "post", None, 300, 128, False, "last", 1, 100, 1e-3)
    assert (seed.mask_zero, seed.bucket_width, seed.lstm_layers, seed.embedding_dropout, seed.dropout) == \
        (False, 0, 1, 0.0, 0.0)


def test_default_preset_is_valid_and_bucketed():
    config = get_preset("default")
    assert config.preset == "default" and config.mask_zero and config.bucket_width > 0
    assert 0 < config.validation_split < 1 and config.early_stopping_patience is not None
    assert dataclasses.replace(config) == config
    # The n-gram bag trained apart, with the validation split to weigh it against the BiLSTM.
    assert config.ngram_buckets and config.ngram_epochs
    assert not get_preset("deep").ngram_buckets


@pytest.mark.parametrize("bad", [
    {"bucket_width": 16, "mask_zero": False},  # cutting batches without a mask changes scores
    {"bucket_width": -1},
    {"lstm_layers": 0},
    {"dropout": 1.0},
    {"pooling": "mean"},
    {"padding": "sideways"},
    {"ema_momentum": 1.0},
    {"early_stopping_monitor": "accuracy"},  # only validation metrics select epochs
    {"ema_momentum": -0.1},
])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        get_preset("default", lstm_unitz=3)


def test_trim_batch_drops_only_padding_columns():
    x = np.zeros((3, 20), dtype=np.int32)
    x[0, -5:] = 7  # pre-padded
    x[1, -3:] = 8
    x[2, -1:] = 9
    t = trim_batch(x, 4)
    assert t.shape == (3, 8) and t.shape[1] % 4 == 0
    np.testing.assert_array_equal(row_lengths(t), row_lengths(x))
    np.testing.assert_array_equal(t[:, -5:], x[:, -5:])
    post = x[:, ::-1].copy()  # post-padded
    np.testing.assert_array_equal(trim_batch(post, 4), post[:, :8])
    assert trim_batch(x, 64).shape == x.shape, "never wider than the matrix"
    assert trim_batch(np.zeros((2, 20), np.int32), 4).shape == (2, 4), "all-padding rows"


def test_length_batches_cover_every_row_once_and_are_seeded():
    lengths = np.random.default_rng(0).integers(1, 300, size=1003)
    a = length_batches(lengths, 32, np.random.default_rng(5), pool_batches=4)
    b = length_batches(lengths, 32, np.random.default_rng(5), pool_batches=4)
    assert all(np.array_equal(i, j) for i, j in zip(a, b)) and len(a) == len(b) == 32
    np.testing.assert_array_equal(np.sort(np.concatenate(a)), np.arange(1003))
    # Batches are length-homogeneous: far less padding than random batches.
    spread = np.mean([np.ptp(lengths[i]) for i in a])
    assert spread < 0.5 * np.ptp(lengths)
    sorted_batches = length_batches(lengths, 100, None)
    assert np.all(np.diff(lengths[np.concatenate(sorted_batches)]) >= 0)


def _reviews(n: int, maxlen: int, padding: str, seed: int = 0) -> np.ndarray:
    """Padded rows of every length from 0 to maxlen, the layout to_matrix produces."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, maxlen), dtype=np.int32)
    for i, length in enumerate(rng.integers(0, maxlen + 1, size=n)):
        tokens = rng.integers(1, INPUT_DIM, size=length)
        if length:
            if padding == "pre":
                x[i, maxlen - length:] = tokens
            else:
                x[i, :length] = tokens
    x[0] = 0
    x[1] = rng.integers(1, INPUT_DIM, size=maxlen)  # an empty row and a full one
    return x


@pytest.mark.parametrize("padding", ["pre", "post"])
@pytest.mark.parametrize("arch", [
    {"bidirectional": True, "pooling": "max"},
    {"bidirectional": True, "pooling": "last", "lstm_layers": 2},
    {"bidirectional": False, "pooling": "max"},
    {"bidirectional": False, "pooling": "last"},
])
def test_masked_model_scores_cut_batches_like_the_padded_matrix(padding, arch):
    import keras

    config = tiny(get_preset("default"), padding=padding, truncating=padding, **arch)
    keras.utils.set_random_seed(0)
    variable = build_model(config, INPUT_DIM, sequence_length=None)
    fixed = build_model(config, INPUT_DIM)
    fixed.set_weights(variable.get_weights())
    x = _reviews(64, config.maxlen, padding)
    full = keras_reference(fixed, x)
    assert np.all(np.isfinite(full))
    cut = np.empty_like(full)
    for idx in length_batches(row_lengths(x), 16, np.random.default_rng(1)):
        xb = trim_batch(x[idx], 4)
        assert xb.shape[1] < config.maxlen or row_lengths(x[idx]).max() > config.maxlen - 4
        cut[idx] = np.asarray(variable(xb, training=False)).reshape(-1)
    np.testing.assert_allclose(cut, full, atol=1e-6, rtol=0)
    # More padding on the left or right of the same reviews changes nothing either.
    wider = np.zeros((len(x), config.maxlen + 9), dtype=np.int32)
    if padding == "pre":
        wider[:, 9:] = x
    else:
        wider[:, :config.maxlen] = x
    np.testing.assert_allclose(np.asarray(variable(wider, training=False)).reshape(-1), full, atol=1e-6, rtol=0)


def test_bucketed_dataset_shapes_and_epochs():
    x = _reviews(70, 24, "pre")
    y = (np.arange(70) % 2).astype(np.int8)
    ds = bucketed_dataset(x, y, 16, 4, seed=3)
    assert int(ds.cardinality()) == 5
    first = [(xb.numpy(), yb.numpy()) for xb, yb in ds]
    second = [(xb.numpy(), yb.numpy()) for xb, yb in ds]
    assert sum(len(yb) for _, yb in first) == 70
    assert all(xb.shape[1] % 4 == 0 or xb.shape[1] == 24 for xb, _ in first)
    assert any(xb.shape[1] < 24 for xb, _ in first), "short batches are cut"
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, second)), "reshuffled every epoch"
    assert sum(int(np.sum(yb)) for _, yb in first) == int(y.sum())


def _toy_data(n: int, maxlen: int, seed: int = 0):
    """Tokens 3..9 lean negative, 10..16 positive; varied lengths, pre-padded."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n).astype(np.int8)
    x = np.zeros((n, maxlen), dtype=np.int32)
    for i in range(n):
        length = int(rng.integers(3, maxlen + 1))
        lo = 10 if y[i] else 3
        x[i, maxlen - length:] = np.where(rng.random(length) < 0.6, rng.integers(lo, lo + 7, length),
                                          rng.integers(17, INPUT_DIM, length))
    return x, y


def test_bucketed_fit_is_reproducible_and_returns_the_fixed_length_model():
    config = tiny(get_preset("default"), epochs=2, batch_size=16, learning_rate=0.01, early_stopping_patience=None)
    x, y = _toy_data(240, config.maxlen)
    runs = [fit(config, INPUT_DIM, x[:200], y[:200], x[200:], y[200:], verbose=0) for _ in range(2)]
    for r in runs:
        assert r.model.input_shape == (None, config.maxlen), "served with the fixed maxlen matrix"
        assert len(r.epoch_seconds) == r.epochs_run == 2 and all(s > 0 for s in r.epoch_seconds)
        assert set(r.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    a, b = (keras_reference(r.model, x[200:]) for r in runs)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # val_accuracy from the cut batches is the fixed model's accuracy on the padded matrix.
    acc = float(np.mean((a > 0.5) == y[200:]))
    assert abs(acc - runs[0].history["val_accuracy"][-1]) < 1e-6
    assert acc > 0.75, "the sentiment tokens are easy to learn"


@pytest.mark.parametrize("bucketed", [False, True], ids=["numpy", "bucketed"])
def test_weight_averaging_is_what_validation_sees_and_what_is_kept(bucketed):
    """ema_momentum: at every epoch's end the model takes over the optimizer's moving average, so
    the validation metric (and early stopping, and the saved model) are about the averaged weights."""
    overrides = dict(epochs=2, batch_size=16, learning_rate=0.01, early_stopping_patience=None, ema_momentum=0.9)
    if not bucketed:
        overrides.update(bucket_width=0)
    config = tiny(get_preset("default"), **overrides)
    x, y = _toy_data(240, config.maxlen, seed=2)
    averaged = fit(config, INPUT_DIM, x[:200], y[:200], x[200:], y[200:], verbose=0)
    plain = fit(config.with_overrides(ema_momentum=0.0), INPUT_DIM, x[:200], y[:200], x[200:], y[200:], verbose=0)
    scores = keras_reference(averaged.model, x[200:])
    acc = float(np.mean((scores > 0.5) == y[200:]))
    assert abs(acc - averaged.history["val_accuracy"][-1]) < 1e-6, "validated weights are the kept weights"
    assert not np.allclose(scores, keras_reference(plain.model, x[200:]), atol=1e-4), "averaging changed them"
    again = fit(config, INPUT_DIM, x[:200], y[:200], x[200:], y[200:], verbose=0)
    np.testing.assert_allclose(keras_reference(again.model, x[200:]), scores, atol=1e-5)  # reproducible


def test_early_stopping_on_validation_accuracy_keeps_the_most_accurate_epoch():
    config = tiny(get_preset("default"), epochs=4, batch_size=16, learning_rate=0.03, early_stopping_patience=4,
                  early_stopping_monitor="val_accuracy")
    x, y = _toy_data(240, config.maxlen, seed=3)
    result = fit(config, INPUT_DIM, x[:200], y[:200], x[200:], y[200:], verbose=0)
    val = result.history["val_accuracy"]
    assert result.epochs_run == 4 and result.best_epoch == int(np.argmax(val)) + 1
    kept = float(np.mean((keras_reference(result.model, x[200:]) > 0.5) == y[200:]))
    assert abs(kept - max(val)) < 1e-6, "the kept weights are the most accurate epoch's"


def test_deep_preset_trains_on_every_row_for_a_fixed_number_of_epochs():
    deep = get_preset("deep")
    assert deep.lstm_layers == 2 and deep.validation_split == 0.0 and deep.early_stopping_patience is None
    config = tiny(deep, batch_size=16, learning_rate=0.01)
    x, y = _toy_data(120, config.maxlen, seed=4)
    result = fit(config, INPUT_DIM, x, y, x[:0], y[:0], verbose=0)  # no validation rows
    assert result.epochs_run == result.best_epoch == deep.epochs
    assert "val_loss" not in result.history
    assert result.model.input_shape == (None, config.maxlen)


@pytest.mark.parametrize("preset", ["default", "deep"])
def test_shipped_architectures_register_with_onnx_parity(tmp_path, preset):
    import keras

    from models.registry import ModelRegistry

    config = tiny(get_preset(preset))
    keras.utils.set_random_seed(2)
    model = build_model(config, INPUT_DIM)
    # Real-looking reviews (both paddings, empty and full rows) plus the registry's random probe.
    probe = np.concatenate([_reviews(32, config.maxlen, "pre"), probe_batch(INPUT_DIM, config.maxlen, n=64)])
    registry = ModelRegistry(str(tmp_path / "registry"))
    version = registry.register(model, config.preprocessing(vocab_size=INPUT_DIM), None,
                                {"preset": preset}, probe)
    meta = registry.metadata(version)
    assert meta["export"]["parity_max_abs_delta"] <= 1e-5
    # Masked [stacked] BiLSTMs with ReLU and max pooling get the gate-table graph too.
    assert meta["export"]["fast"].startswith("model.fast.onnx"), meta["export"]
    x = _reviews(50, config.maxlen, "pre", seed=9)
    for kind in ("auto", "fast"):
        predictor = registry.load_predictor(version, kind=kind)
        assert predictor.kind == "fast"
        np.testing.assert_allclose(predictor.predict(x), keras_reference(model, x), atol=1e-5, rtol=0)
    assert "model.onnx" not in meta["files"], meta["export"]["plain"]


def test_predict_scores_buckets_masked_models_exactly():
    import keras

    from models.training import predict_scores

    config = tiny(get_preset("default"))
    keras.utils.set_random_seed(4)
    model = build_model(config, INPUT_DIM)
    x = _reviews(300, config.maxlen, "pre", seed=5)
    np.testing.assert_allclose(predict_scores(model, x, batch_size=32), keras_reference(model, x), atol=1e-6, rtol=0)


def test_token_dropout_hides_a_fresh_share_of_words_each_epoch_and_only_in_training():
    rng = np.random.default_rng(0)
    x = np.zeros((400, 30), np.int32)
    for i, n in enumerate(rng.integers(5, 30, size=400)):
        x[i, 30 - n] = 1  # start marker
        x[i, 31 - n:] = rng.integers(2, 50, size=n - 1)  # words and some OOV already
    y = np.zeros(400, np.float32)
    words = int(np.sum(x > 2))

    def epochs(ds, n=2):
        it = iter(ds.repeat(n))
        return [np.concatenate([np.sort(b[0].numpy()[b[0].numpy() > 0]) for b in (next(it) for _ in range(25))])
                for _ in range(n)]

    plain = bucketed_dataset(x, y, 16, 4, seed=3)
    dropped = bucketed_dataset(x, y, 16, 4, seed=3, token_dropout=0.25)
    for base, hidden in zip(epochs(plain), epochs(dropped)):
        assert len(base) == len(hidden), "nothing is removed: padding and positions stay"
        assert np.sum(hidden == 1) == np.sum(base == 1) == 400, "start markers stay"
        became_oov = int(np.sum(hidden == 2) - np.sum(base == 2))
        assert 0.2 * words < became_oov < 0.3 * words
    seeded = [epochs(bucketed_dataset(x, y, 16, 4, seed=3, token_dropout=0.25)) for _ in range(2)]
    np.testing.assert_array_equal(seeded[0][0], seeded[1][0])  # a fresh pipeline: the same epochs again
    np.testing.assert_array_equal(seeded[0][1], seeded[1][1])
    evaluation = bucketed_dataset(x, y, 16, 4, seed=None, token_dropout=0.25)
    assert sum(int(np.sum(b[0].numpy() == 2)) for b in evaluation) == int(np.sum(x == 2)), "no seed: untouched"
    with pytest.raises(ValueError, match="token_dropout needs bucket_width"):
        TrainConfig(token_dropout=0.1)


def test_training_is_reproducible_while_other_threads_draw_from_pythons_random():
    """Keras seeds unseeded layers from Python's global ``random``; Prefect's and boto3's threads
    draw from it too.  A run must not depend on them (this failed in CI before fit drew layer
    seeds from a stream of its own)."""
    import random
    import threading

    config = tiny(get_preset("default"), epochs=1, batch_size=16, learning_rate=0.01, early_stopping_patience=None)
    x, y = _toy_data(120, config.maxlen, seed=4)
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()

    first = fit(config, INPUT_DIM, x[:100], y[:100], verbose=0).model.get_weights()
    thread = threading.Thread(target=draw, daemon=True)
    thread.start()
    try:
        second = fit(config, INPUT_DIM, x[:100], y[:100], verbose=0).model.get_weights()
    finally:
        stop.set()
        thread.join()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("preset,padding", [("seed", "post"), ("default", "pre")])
def test_evaluation_scores_come_from_the_gate_table_graph_and_match_keras(preset, padding):
    import keras

    from models.onnx_export import gate_graph_scores

    config = tiny(get_preset(preset))
    keras.utils.set_random_seed(6)
    model = build_model(config, INPUT_DIM)
    x = _reviews(700, config.maxlen, padding, seed=7)
    scores = gate_graph_scores(model, x, check_rows=64)
    assert scores is not None and scores.dtype == np.float32 and scores.shape == (len(x),)
    np.testing.assert_allclose(scores, keras_reference(model, x), atol=1e-6, rtol=0)


def test_evaluation_falls_back_to_keras_without_a_gate_table_graph():
    import keras

    from models.onnx_export import gate_graph_scores

    inputs = keras.Input((8,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(INPUT_DIM, 4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(pooled))
    assert gate_graph_scores(model, _reviews(50, 8, "post", seed=1)) is None


def test_evaluation_refuses_a_gate_table_graph_that_differs_from_keras(monkeypatch):
    import keras

    import models.gate_graph as gate_graph
    from models.onnx_export import gate_graph_scores

    config = tiny(get_preset("seed"))
    keras.utils.set_random_seed(8)
    model, other = build_model(config, INPUT_DIM), build_model(config, INPUT_DIM)
    real = gate_graph.build_fast_parts
    monkeypatch.setattr(gate_graph, "build_fast_parts", lambda m, **kw: real(other, **kw))
    assert gate_graph_scores(model, _reviews(100, config.maxlen, "post", seed=2)) is None
