"""int8 inference: the quantised gate-table graph, its approval by accuracy cost, the registry
round trip and scoring a dump with it."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from models.fast_predictors import FastLstmPredictor, Int8LstmPredictor
from models.gate_graph import FORMS, build_fast_onnx
from models.int8_maths import INT8_WEIGHT_MAX, quantize_columns
from models.onnx_graph import TABLES_FILE
from models.predictors import probe_batch
from models.quantization import INT8_FILE, INT8_PROBE_SCORES, INT8_SCHEME, int8_export
from models.registry import ModelRegistry, RegistryError
from tests.int8_reference import (
    EMULATED_CPU,
    emulated_predict,
    emulator,
    reference_predict,
)
from tests.tinymodel import (
    DEFAULT_LIKE,
    DEFAULT_LIKE_CONFIG,
    LSTM_VOCAB,
    float_labelled,
    lstm_tiny,
    parity_inputs,
)

pytestmark = pytest.mark.filterwarnings("ignore:Layer '.*' \\(of type GlobalMaxPooling1D\\) was passed an input")

def _ops(onnx_bytes: bytes) -> list[str]:
    """Op types of the graph and of its Loop bodies."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    out = []
    for node in graph.node:
        out.append(node.op_type)
        for attr in node.attribute:
            if attr.g is not None:
                out.extend(n.op_type for n in attr.g.node)
    return out


def test_quantize_columns_is_within_half_a_step_per_column():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(16, 12)) * np.geomspace(1e-3, 10, 12)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero column must not divide by zero
    q, scale = quantize_columns(w)
    assert q.dtype == np.int8 and scale.shape == (12,) and scale.dtype == np.float32
    assert np.all(np.abs(q.astype(np.float32) * scale - w) <= scale / 2 * (1 + 1e-6))
    assert np.all(np.abs(q[:, [c for c in range(12) if c != 3]]).max(axis=0) == INT8_WEIGHT_MAX)
    assert not q[:, 3].any()


def _int8_weights(onnx_bytes: bytes) -> list[np.ndarray]:
    """The int8 weight initializers of every MatMulIntegerToFloat, also inside Loop bodies."""
    import onnx
    from onnx import numpy_helper

    found = []

    def walk(graph):
        inits = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "MatMulIntegerToFloat":
                found.append(numpy_helper.to_array(inits[node.input[1]]))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(onnx.load_from_string(onnx_bytes).graph)
    return found


@pytest.mark.parametrize("overrides", [dict(), DEFAULT_LIKE], ids=["seed-like", "default-like"])
@pytest.mark.parametrize("form", FORMS)
def test_int8_sums_cannot_saturate_on_any_cpu(overrides, form):
    """Kernels without VNNI add adjacent u8 x s8 product pairs in int16: with inputs up to 255,
    every pair of weights along the reduced axis must stay within 32,767 / 255."""
    weights = _int8_weights(build_fast_onnx(lstm_tiny(seed=5, maxlen=7, **overrides), form=form, precision="int8"))
    assert weights and all(w.dtype == np.int8 for w in weights)
    for w in weights:
        k = np.abs(w.astype(np.int32))
        if len(k) % 2:  # an odd reduced axis: the last row is paired with padding
            k = np.vstack([k, np.zeros_like(k[:1])])
        assert 255 * int((k[0::2] + k[1::2]).max()) <= np.iinfo(np.int16).max


@pytest.mark.parametrize("overrides", [dict(), DEFAULT_LIKE], ids=["seed-like", "default-like"])
@pytest.mark.parametrize("form", FORMS)
def test_int8_graph_equals_a_numpy_integer_reference(overrides, form):
    """ONNX Runtime, with whatever kernels this CPU gets, against exact integer sums of the
    same graph (ONNX's NumPy reference evaluator): equal within float32 rounding."""
    model = lstm_tiny(seed=5, maxlen=7, **overrides)
    x = parity_inputs(7)
    data = build_fast_onnx(model, form=form, precision="int8")
    np.testing.assert_allclose(Int8LstmPredictor(data, batch_size=16).predict(x), reference_predict(data, x),
                               rtol=0, atol=1e-6)


def test_int8_scores_on_an_emulated_cpu_without_vnni_equal_the_reference(tmp_path, monkeypatch):
    """The same graph, scored under QEMU emulating an AVX2-only CPU (ONNX Runtime's int16-pair
    kernels), equals the integer reference; a full-range graph (the scheme before) does not -
    which shows the emulated run does take the saturating kernels."""
    if emulator() is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-x86_64 is missing: .ci/run installs qemu-user for this test")
        pytest.skip("qemu-x86_64 (Debian's qemu-user) is not installed")
    import models.int8_maths as int8_maths

    model = lstm_tiny(seed=5, maxlen=7, **DEFAULT_LIKE)
    x = parity_inputs(7)
    data = build_fast_onnx(model, precision="int8")
    np.testing.assert_allclose(emulated_predict(data, x, tmp_path), reference_predict(data, x), rtol=0, atol=1e-6)

    monkeypatch.setattr(int8_maths, "INT8_WEIGHT_MAX", 127)
    full_range = build_fast_onnx(model, precision="int8")
    saturated = np.abs(emulated_predict(full_range, x, tmp_path) - reference_predict(full_range, x)).max()
    assert saturated > 1e-3, f"{EMULATED_CPU}: a full-range int8 graph should saturate, max |delta| {saturated}"


@pytest.mark.parametrize("overrides", [dict(), DEFAULT_LIKE], ids=["seed-like", "default-like"])
@pytest.mark.parametrize("form", FORMS)
def test_int8_graph_is_close_to_float32_deterministic_and_batch_independent(overrides, form):
    model = lstm_tiny(seed=5, maxlen=7, **overrides)
    x = parity_inputs(7)
    exact = FastLstmPredictor(build_fast_onnx(model, form=form), batch_size=16).predict(x)
    data = build_fast_onnx(model, form=form, precision="int8")
    ops = _ops(data)
    assert "MatMulIntegerToFloat" in ops and "QuantizeLinear" in ops
    # Only the head's Gemm stays float32 (and, for stacked layers, nothing else).
    assert ops.count("Gemm") == 1
    predictor = Int8LstmPredictor(data, batch_size=16)
    assert predictor.kind == "int8"
    got = predictor.predict(x)
    assert 0 < np.max(np.abs(got - exact)) <= 0.03, "approximate, but close"
    # A fixed quantisation scale: a row's score does not depend on the rows batched with it.
    one_by_one = np.concatenate([Int8LstmPredictor(data, batch_size=1).predict(x[i:i + 1]) for i in range(20)])
    np.testing.assert_array_equal(one_by_one, got[:20])
    np.testing.assert_array_equal(Int8LstmPredictor(data, batch_size=7, threads=3).predict(x), got)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        build_fast_onnx(lstm_tiny(maxlen=4), precision="int4")


def _stored_int8(files: dict[str, bytes]) -> Int8LstmPredictor:
    """The int8 graph int8_export stored, with the gate tables it references."""
    return Int8LstmPredictor(files[INT8_FILE], external_data={TABLES_FILE: files[TABLES_FILE]})


def test_int8_export_is_approved_within_the_accuracy_bound_only():
    model = lstm_tiny(seed=6, maxlen=7, **DEFAULT_LIKE)
    x, y = float_labelled(model)
    probe = probe_batch(LSTM_VOCAB, 7, n=32, seed=1)
    files, record = int8_export(model, x, y, 1.0, probe, max_drop=1.0)
    int8 = _stored_int8(files)
    expected_accuracy = float(np.mean((int8.predict(x) >= 0.5) == y))
    assert record["approved"] and record["accuracy_int8"] == pytest.approx(expected_accuracy, abs=1e-6)
    assert record["accuracy_drop"] == pytest.approx(1.0 - expected_accuracy, abs=1e-6)
    assert record["test_rows"] == len(x)
    np.testing.assert_array_equal(np.load(io.BytesIO(files[INT8_PROBE_SCORES])), int8.predict(probe))

    refused, record = int8_export(model, x, y, 1.0, probe, max_drop=-0.001)  # any cost is too much
    assert refused == {} and not record["approved"] and "points below" in record["reason"]
    assert record["accuracy_int8"] == pytest.approx(expected_accuracy, abs=1e-6)

    nothing, record = int8_export(model, x[:0], y[:0], 1.0, probe)
    assert nothing == {} and "no labelled test reviews" in record["reason"]


def test_int8_export_of_an_unsupported_topology_says_why():
    import keras

    inputs_ = keras.Input((7,), dtype="int32")
    h = keras.layers.GRU(3)(keras.layers.Embedding(LSTM_VOCAB, 4)(inputs_))
    model = keras.Model(inputs_, keras.layers.Dense(1, activation="sigmoid")(h))
    x = probe_batch(LSTM_VOCAB, 7, n=20)
    files, record = int8_export(model, x, np.zeros(20, np.int8), 1.0, x)
    assert files == {} and not record["approved"] and "GRU" in record["reason"]


def test_int8_export_that_onnx_runtime_cannot_run_leaves_registration_alone(monkeypatch):
    import models.gate_graph as gate_graph

    monkeypatch.setattr(gate_graph, "build_fast_parts", lambda model, precision: (b"not an onnx model", b""))
    model = lstm_tiny(seed=6, maxlen=7)
    x = probe_batch(LSTM_VOCAB, 7, n=20)
    files, record = int8_export(model, x, np.zeros(20, np.int8), 1.0, x)
    assert files == {} and not record["approved"] and record["reason"].startswith("ONNX Runtime cannot run")


@pytest.fixture(scope="module")
def int8_registry(tmp_path_factory):
    """A registry with one version that has an approved int8 graph and one that has none."""
    model = lstm_tiny(seed=6, maxlen=7, **DEFAULT_LIKE)
    x, y = float_labelled(model)
    prep = DEFAULT_LIKE_CONFIG.preprocessing(vocab_size=LSTM_VOCAB)
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    reg = ModelRegistry(str(tmp_path_factory.mktemp("registry")))
    files, record = int8_export(model, x, y, 1.0, probe, max_drop=1.0)
    with_int8 = reg.register(model, prep, None, {"preset": "default", "int8": record}, probe, extra_files=files)
    _, refused = int8_export(model, x, y, 1.0, probe, max_drop=-0.001)
    without = reg.register(model, prep, None, {"preset": "default", "int8": refused}, probe)
    return {"registry": reg, "model": model, "with": with_int8, "without": without, "x": x, "files": files}


def test_registry_serves_int8_only_when_approved_and_checks_it(int8_registry):
    reg, x = int8_registry["registry"], int8_registry["x"]
    predictor = reg.load_predictor(int8_registry["with"], kind="int8")
    assert predictor.kind == "int8"
    np.testing.assert_array_equal(predictor.predict(x), _stored_int8(int8_registry["files"]).predict(x))
    assert reg.load_predictor(int8_registry["with"]).kind == "fast", "auto stays exact"
    with pytest.raises(RegistryError, match="no approved int8 predictor .*points below"):
        reg.load_predictor(int8_registry["without"], kind="int8")


def test_versions_with_a_full_range_int8_graph_are_refused_for_int8(tmp_path):
    """Graphs registered before scheme 2 give CPU-dependent scores: never served, with a reason."""
    model = lstm_tiny(seed=6, maxlen=7, **DEFAULT_LIKE)
    x, y = float_labelled(model)
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    files, record = int8_export(model, x, y, 1.0, probe, max_drop=1.0)
    assert record["scheme"] == INT8_SCHEME
    old = {k: v for k, v in record.items() if k != "scheme"}  # what earlier registrations wrote
    reg = ModelRegistry(str(tmp_path))
    version = reg.register(model, DEFAULT_LIKE_CONFIG.preprocessing(vocab_size=LSTM_VOCAB), None, {"int8": old}, probe,
                           extra_files=files)
    with pytest.raises(RegistryError, match="refused for predictor=int8: .*no recorded int8 scheme.*VNNI.*auto"):
        reg.load_predictor(version, kind="int8")
    assert reg.load_predictor(version).kind == "fast", "the exact predictors still serve it"


def test_int8_probe_scores_that_do_not_reproduce_are_refused(tmp_path):
    model = lstm_tiny(seed=6, maxlen=7, **DEFAULT_LIKE)
    x, y = float_labelled(model)
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    files, record = int8_export(model, x, y, 1.0, probe, max_drop=1.0)
    scores = np.load(io.BytesIO(files[INT8_PROBE_SCORES]))
    buf = io.BytesIO()
    np.save(buf, scores + np.float32(1e-3))  # what a runtime computing something else would give
    files[INT8_PROBE_SCORES] = buf.getvalue()
    reg = ModelRegistry(str(tmp_path))
    version = reg.register(model, DEFAULT_LIKE_CONFIG.preprocessing(vocab_size=LSTM_VOCAB), None, {"int8": record}, probe,
                           extra_files=files)
    with pytest.raises(RegistryError, match="int8 predictor differs"):
        reg.load_predictor(version, kind="int8")


def test_score_reviews_with_the_int8_predictor(tmp_path, int8_registry, prefect_api):
    from flows.score import score_reviews
    from infra import storage
    from infra.dump_writer import dump_table, write_dump
    from models.preprocessing import to_matrix
    from tests.tinymodel import random_tokens, read_output

    reg = int8_registry["registry"]
    tokens = random_tokens(np.random.default_rng(4), 400, vocab=LSTM_VOCAB)
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    write_dump(dump_table(np.arange(400), tokens), src, rows_per_file=200, row_group_size=50)
    summary = score_reviews(input=src, output=out, registry=reg.root.uri, model=int8_registry["with"],
                            predictor="int8", max_rows_per_unit=100)
    assert summary["rows_scored"] == 400 and summary["rows_rejected"] == 0
    got = read_output(out).sort_by("review_id").column("score").to_numpy()
    x = to_matrix(tokens, reg.preprocessing(int8_registry["with"]))
    np.testing.assert_array_equal(got, _stored_int8(int8_registry["files"]).predict(x))
    exact = FastLstmPredictor(build_fast_onnx(int8_registry["model"])).predict(x)
    assert 0 < np.max(np.abs(got - exact)) <= 0.03
    manifest = storage.read_json(storage.resolve(out).join("_manifest.json"))
    assert manifest["parameters"]["predictor"] == "int8"


def test_predictor_kinds_agree_across_registry_flow_and_cli():
    import typing

    from flows.cli import build_parser
    from flows.score import score_reviews
    from models.registry import PREDICTOR_KINDS

    flow_kinds = typing.get_args(typing.get_type_hints(score_reviews.fn)["predictor"])
    parser = build_parser()
    score = next(a for a in parser._subparsers._group_actions[0].choices["score"]._actions if a.dest == "predictor")
    assert set(flow_kinds) == set(score.choices) == set(PREDICTOR_KINDS)
