"""The gate-table LSTM graph (models/gate_graph.py, models/fast_predictors.py) against Keras' own ``model.predict``.

Tiny models (tests/tinymodel.py's ``lstm_tiny``: vocabulary 30, embedding 5, 3 units) with weights
scaled up so that gates saturate differently per token: any slip in gate order, masking or
direction shows as a difference far above the 1e-5 tolerance.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from models.batching import dense_span, padding_window, window_steps
from models.fast_predictors import BatchParallelOnnxPredictor, FastLstmPredictor
from models.gate_graph import DENSE_NAME, FORMS, LAYOUTS, WINDOW_NAME, build_fast_onnx
from models.lstm_spec import describe, window_exact
from models.predictors import check_parity, keras_reference, probe_batch
from tests.tinymodel import (
    LSTM_CONFIG,
    LSTM_VOCAB,
    lstm_tiny,
    padded,
    parity_inputs,
    scaled,
)

# Keras warns that GlobalMaxPooling1D drops the mask: intended (see models/architecture.py).
pytestmark = pytest.mark.filterwarnings("ignore:Layer '.*' \\(of type GlobalMaxPooling1D\\) was passed an input")

def assert_parity(model, x: np.ndarray | None = None, batch_size: int = 16, **build) -> FastLstmPredictor:
    x = parity_inputs(model.inputs[0].shape[1]) if x is None else x
    reference = keras_reference(model, x)
    predictor = FastLstmPredictor(build_fast_onnx(model, **build), batch_size=batch_size)
    assert predictor.kind == "fast"
    check_parity(predictor, x, reference)
    return predictor


@pytest.mark.parametrize("maxlen", [1, 6, 17])
def test_seed_topology_matches_keras(maxlen):
    assert_parity(lstm_tiny(maxlen=maxlen))


@pytest.mark.parametrize("threads", [1, 3])
def test_sequential_and_concurrent_batches_agree(threads):
    model = lstm_tiny(seed=7, maxlen=5, mask_zero=True)
    x = parity_inputs(5)
    reference = keras_reference(model, x)
    onnx_bytes = build_fast_onnx(model)
    for batch_size in (1, 7, 1024):
        predictor = FastLstmPredictor(onnx_bytes, batch_size=batch_size, threads=threads)
        check_parity(predictor, x, reference)
        check_parity(predictor, x[:0], reference[:0])
        # Concurrent batches of small step tensors would contend for one memory arena (see
        # FastLstmPredictor); the plain export's batch-parallel predictor keeps it.
        assert predictor.session.get_session_options().enable_cpu_mem_arena is (threads == 1)
    plain = BatchParallelOnnxPredictor(onnx_bytes, threads=threads)
    assert plain.session.get_session_options().enable_cpu_mem_arena is True


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_graph_form_matches_keras(form, layout):
    assert_parity(lstm_tiny(seed=1, maxlen=7), form=form, layout=layout)


@pytest.mark.parametrize("overrides", [
    dict(bidirectional=True),
    dict(pooling="max"),
    dict(bidirectional=True, pooling="max", lstm_layers=2, embedding_dropout=0.3, dropout=0.3),
    dict(mask_zero=True),
    dict(mask_zero=True, bidirectional=True, lstm_layers=2),
    dict(mask_zero=True, bidirectional=True, pooling="max", lstm_layers=2, padding="pre"),  # the default preset
], ids=["bi", "max", "bi-max-2", "mask", "mask-bi-2", "mask-bi-max-2"])
@pytest.mark.parametrize("form", FORMS)
def test_architecture_options_match_keras(overrides, form):
    assert_parity(lstm_tiny(seed=2, maxlen=7, **overrides), form=form)


@pytest.mark.parametrize("precision", ["float32", "int8"])
@pytest.mark.parametrize("overrides", [dict(), dict(mask_zero=True, bidirectional=True, lstm_layers=2,
                                                    pooling="max", padding="pre")], ids=["seed", "mask-bi-max-2"])
def test_step_weights_are_initializers_of_the_loop_bodies_that_multiply_by_them(overrides, precision):
    """ONNX Runtime pre-packs a Gemm/MatMul weight only when it is an initializer of the node's own
    graph; an outer-scope weight is packed again at every step."""
    import onnx

    graph = onnx.load_from_string(build_fast_onnx(lstm_tiny(seed=3, **overrides), form="loop", precision=precision)).graph
    bodies = [a.g for n in graph.node if n.op_type == "Loop" for a in n.attribute if a.name == "body"]
    products = 0
    for body in bodies:
        own = {t.name for t in body.initializer}
        for node in body.node:
            if node.op_type in ("Gemm", "MatMul", "MatMulIntegerToFloat"):
                products += 1
                weights = [node.input[1]] + ([node.input[3]] if node.op_type == "MatMulIntegerToFloat" else [])
                assert set(weights) <= own, (body.name, node.name, weights)
    assert products >= len(bodies) >= 1  # every step multiplies by the recurrent weights at least


def test_mask_zero_length_aware_batching_is_exact_and_skips_steps():
    model = lstm_tiny(seed=3, maxlen=12, mask_zero=True, bidirectional=True, pooling="max", lstm_layers=2)
    assert window_exact(describe(model))
    x = np.concatenate([padded(200, 12, "pre", 4), padded(50, 12, "post", 5)])
    x = x[np.random.default_rng(0).permutation(len(x))]
    reference = keras_reference(model, x)
    onnx_bytes = build_fast_onnx(model, form="loop")
    aware = FastLstmPredictor(onnx_bytes, batch_size=32)
    full = FastLstmPredictor(onnx_bytes, batch_size=32, length_aware=False)
    masked = FastLstmPredictor(onnx_bytes, batch_size=32, length_aware=False, dense=False)  # every step masked
    assert aware.length_aware and aware.dense and not full.length_aware and full.dense and not masked.dense
    check_parity(aware, x, reference)
    check_parity(full, x, reference)
    np.testing.assert_array_equal(aware.predict(x), masked.predict(x))  # skipping steps and masks: bit for bit
    np.testing.assert_array_equal(full.predict(x), masked.predict(x))
    steps, total = window_steps(x, 32)
    assert steps < 0.8 * total  # the window really skips padding
    # Results come back in input order even for a single row and for all-padding batches.
    check_parity(aware, x[:1], reference[:1])
    empty = np.zeros((5, 12), np.int32)
    check_parity(aware, empty, keras_reference(model, empty))


def test_window_skips_exactly_the_padding_and_nothing_else():
    model = lstm_tiny(seed=4, maxlen=8, mask_zero=True)
    x = padded(30, 8, "pre", 6)
    x[:, :3] = 0  # no review longer than 5 tokens
    predictor = FastLstmPredictor(build_fast_onnx(model, form="loop"), length_aware=False)
    run = predictor.session.run

    def scores(window):
        return run(None, {"tokens": x, WINDOW_NAME: np.array(window, np.int64)})[0].reshape(-1)

    full = scores([0, 8])
    np.testing.assert_array_equal(scores([3, 8]), full)  # only padding skipped: identical
    assert np.max(np.abs(scores([4, 8]) - full)) > 1e-3  # a real token skipped: caught
    start, stop = padding_window(x)
    assert start.min() >= 3 and stop.max() == 8


def test_dense_span_is_where_no_row_has_padding():
    x = np.array([[0, 0, 3, 4, 5, 6],
                  [0, 7, 8, 9, 1, 2],
                  [0, 0, 0, 5, 5, 5]], np.int32)
    assert dense_span(x, *padding_window(x)) == (3, 6)
    post = x[:, ::-1].copy()
    assert dense_span(post, *padding_window(post)) == (0, 3)
    gap = x.copy()
    gap[1, 4] = 0  # a padding token inside a review: no dense span (the masks are needed)
    assert dense_span(gap, *padding_window(gap)) == (0, 0)
    blank = np.vstack([x, np.zeros((1, 6), np.int32)])
    assert dense_span(blank, *padding_window(blank)) == (0, 0)
    assert dense_span(x[:0], *padding_window(x[:0])) == (0, 0)


def test_graph_without_dense_input_still_scores_length_aware():
    """Versions registered before the ``dense`` input existed have a window only."""
    import onnx

    model = lstm_tiny(seed=3, maxlen=12, mask_zero=True, bidirectional=True, pooling="max", lstm_layers=2)
    graph = onnx.load_from_string(build_fast_onnx(model))
    kept = [i for i in graph.graph.input if i.name != DENSE_NAME]  # its initializer stays: a constant
    del graph.graph.input[:]
    graph.graph.input.extend(kept)
    predictor = FastLstmPredictor(graph.SerializeToString(), batch_size=32)
    assert predictor.length_aware and not predictor.dense
    x = padded(100, 12, "pre", 4)
    assert all(DENSE_NAME not in predictor._feed(x, rows) for rows in predictor._batches(x))
    check_parity(predictor, x, keras_reference(model, x))


def max_pooled_without_relu(maxlen: int, bidirectional: bool, seed: int = 5):
    """A masked model whose max pooling sees the masked steps' outputs: no window."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs_ = keras.Input((maxlen,), dtype="int32")
    h = layers.Embedding(LSTM_VOCAB, 5, mask_zero=True)(inputs_)
    lstm = layers.LSTM(3, return_sequences=True)
    h = (layers.Bidirectional(lstm) if bidirectional else lstm)(h)
    h = layers.GlobalMaxPooling1D()(h)
    return scaled(keras.Model(inputs_, layers.Dense(1, activation="sigmoid")(h)))


@pytest.mark.parametrize("case", ["bi-max-2-pre", "bi-2-post", "no-window"])
def test_dense_span_runs_unmasked_steps_bit_for_bit(case):
    """Inside the dense span the masks are dropped: identical scores when the span holds no
    padding, different ones when it wrongly claims a padded position (so the span is used)."""
    side = "post" if case == "bi-2-post" else "pre"
    if case == "no-window":
        model = max_pooled_without_relu(9, bidirectional=True, seed=8)
    else:
        model = lstm_tiny(seed=8, maxlen=9, mask_zero=True, bidirectional=True, lstm_layers=2, padding=side,
                     pooling="max" if case == "bi-max-2-pre" else "last")
    assert window_exact(describe(model)) == (case != "no-window")
    x = padded(12, 9, side, 9)
    x = x[np.argsort((x != 0).sum(axis=1))][-6:]  # the six longest: a non-empty span
    predictor = FastLstmPredictor(build_fast_onnx(model, form="loop"), length_aware=False, threads=1)
    assert predictor.dense
    start, stop = padding_window(x)
    a, b = dense_span(x, start, stop)
    assert b - a >= 3

    def scores(span):
        return predictor.session.run(None, {"tokens": x, DENSE_NAME: np.array(span, np.int64)})[0].reshape(-1)

    masked = scores([0, 0])
    np.testing.assert_allclose(masked, keras_reference(model, x), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(scores([a, b]), masked)
    np.testing.assert_array_equal(scores([a + 1, b - 1]), masked)   # any sub-span
    np.testing.assert_array_equal(scores([b, a]), masked)           # reversed: empty
    wrong = [a - 1, b] if side == "pre" else [a, b + 1]              # one padded position claimed
    assert np.max(np.abs(scores(wrong) - masked)) > 1e-3
    # The predictor feeds the span of each sorted batch.
    rows, = predictor._batches(x)
    assert tuple(predictor._feed(x, rows)[DENSE_NAME]) == (a, b)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_masked_max_pooling_without_relu_has_no_window(bidirectional):
    """Masked steps' outputs (copies, or zeros for Bidirectional: ``zero_output_for_mask``) then
    take part in the max: that must match Keras, and running fewer steps would not be exact."""
    model = max_pooled_without_relu(7, bidirectional)
    assert not window_exact(describe(model))
    for form in FORMS:
        predictor = assert_parity(model, form=form)
        assert not predictor.length_aware


def test_sequential_go_backwards_without_bias():
    import keras
    from keras import layers

    keras.utils.set_random_seed(6)
    model = scaled(keras.Sequential([
        keras.Input((6,), dtype="int32"),
        layers.Embedding(LSTM_VOCAB, 5, mask_zero=True),
        layers.LSTM(4, go_backwards=True, use_bias=False, return_sequences=True),
        layers.LSTM(3, go_backwards=True),
        layers.Dense(1, activation="sigmoid"),
    ]))
    assert not window_exact(describe(model))  # reversed outputs + unreversed mask: no window
    for form in FORMS:
        assert_parity(model, form=form)


def test_flop_count_of_the_seed_network():
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((50,), dtype="int32"), layers.Embedding(100, 300), layers.LSTM(128),
                              layers.Dense(1, activation="sigmoid")])
    plain, fast = describe(model).step_flops()
    assert plain == 4 * 128 * (300 + 128) * 2 and fast == 4 * 128 * 128 * 2


def _model(*body, maxlen=6, head=None):
    import keras
    from keras import layers

    x = inp = keras.Input((maxlen,), dtype="int32")
    for layer in body:
        x = layer(x)
    out = (head or layers.Dense(1, activation="sigmoid"))(x)
    return keras.Model(inp, out)


def _refusals():
    import keras
    from keras import layers as L

    emb = lambda: L.Embedding(LSTM_VOCAB, 4)  # noqa: E731
    yield "GRU", _model(emb(), L.GRU(3)), "only LSTM"
    yield "relu LSTM", _model(emb(), L.LSTM(3, activation="relu")), "activation='relu'"
    yield "hard_sigmoid", _model(emb(), L.LSTM(3, recurrent_activation="hard_sigmoid")), "recurrent_activation"
    yield "merge sum", _model(emb(), L.Bidirectional(L.LSTM(3), merge_mode="sum")), "merge_mode='sum'"
    yield "Dense(2)", _model(emb(), L.LSTM(3), head=L.Dense(2, activation="sigmoid")), "Dense\\(1, 'sigmoid'\\)"
    yield "Dense relu", _model(emb(), L.LSTM(3), head=L.Dense(1, activation="relu")), "Dense\\(1, 'sigmoid'\\)"
    yield "average pool", _model(emb(), L.LSTM(3, return_sequences=True), L.GlobalAveragePooling1D()), "not one of"
    yield "conv", _model(emb(), L.Conv1D(3, 2), L.LSTM(3)), "expected an LSTM after the embedding"
    yield "no embedding first", _model(L.Identity(), emb(), L.LSTM(3)), "first layer must be an Embedding"
    yield "leaky relu", _model(emb(), L.LSTM(3), L.ReLU(negative_slope=0.1)), "plain ReLU"
    yield "unpooled sequence", _model(emb(), L.LSTM(3, return_sequences=True), L.Flatten()), "not one of"
    yield "return_state", None, "several outputs"
    # variable-length input
    var = keras.Input((None,), dtype="int32")
    yield "variable maxlen", keras.Model(var, L.Dense(1, activation="sigmoid")(L.LSTM(3)(emb()(var)))), \
        "fixed maxlen"
    # not a chain: two branches concatenated
    inp = keras.Input((6,), dtype="int32")
    e = emb()(inp)
    branch = L.Concatenate()([L.LSTM(3)(e), L.LSTM(2)(e)])
    yield "branches", keras.Model(inp, L.Dense(1, activation="sigmoid")(branch)), "single chain"
    # two inputs
    a, b = keras.Input((6,), dtype="int32"), keras.Input((6,), dtype="int32")
    yield "two inputs", keras.Model([a, b], L.Dense(1, activation="sigmoid")(L.LSTM(3)(emb()(a)))), \
        "exactly one input"


def test_unsupported_models_are_refused_with_a_clear_message():
    import keras
    from keras import layers as L

    for name, model, message in _refusals():
        if model is None:  # return_state: the LSTM's extra outputs make it a multi-output layer
            inp = keras.Input((6,), dtype="int32")
            seq, _, _ = L.LSTM(3, return_state=True)(L.Embedding(LSTM_VOCAB, 4)(inp))
            model = keras.Model(inp, L.Dense(1, activation="sigmoid")(seq))
        with pytest.raises(ValueError, match=message):
            build_fast_onnx(model)
        assert name


def test_score_reviews_on_a_masked_model_matches_keras(tmp_path, prefect_api):
    """End to end through the flow: a default-like masked model, served by the fast predictor with
    length-aware batching and dense spans, scores every review as Keras does."""
    from flows.score import score_reviews
    from infra.dump_writer import dump_table, write_dump
    from models.preprocessing import to_matrix
    from models.registry import ModelRegistry
    from tests.tinymodel import random_tokens, read_output

    default_like = dict(maxlen=7, mask_zero=True, bidirectional=True, pooling="max", lstm_layers=2,
                        padding="pre", truncating="pre")
    model = lstm_tiny(seed=11, **default_like)
    prep = LSTM_CONFIG.with_overrides(**default_like).preprocessing(vocab_size=LSTM_VOCAB)
    reg = ModelRegistry(str(tmp_path / "registry"))
    version = reg.register(model, prep, None, {"preset": "default-like"}, probe_batch(LSTM_VOCAB, 7, n=64, seed=1))
    assert reg.load_predictor(version).dense
    tokens = random_tokens(np.random.default_rng(5), 600, vocab=LSTM_VOCAB)  # 1-11 tokens: padded and cut rows
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write_dump(dump_table(np.arange(600), tokens), src, rows_per_file=300, row_group_size=100)
    summary = score_reviews(input=src, output=out, registry=reg.root.uri, model=version)
    assert summary["rows_scored"] == 600 and summary["rows_rejected"] == 0
    got = read_output(out).sort_by("review_id").column("score").to_numpy()
    np.testing.assert_allclose(got, keras_reference(model, to_matrix(tokens, prep)), atol=1e-5, rtol=0)
