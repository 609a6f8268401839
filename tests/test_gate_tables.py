"""One gate-table file per version, shared by the float32 and int8 graphs (ONNX external data);
the same scores as the self-contained graphs; versions registered before still load."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest

from models.fast_predictors import FastLstmPredictor, Int8LstmPredictor
from models.gate_graph import build_fast_onnx, build_fast_parts
from models.onnx_graph import TABLES_FILE
from models.predictors import export_onnx, keras_reference, probe_batch
from models.quantization import INT8_FILE, int8_export
from models.registry import ModelRegistry, RegistryError
from tests.tinymodel import (
    DEFAULT_LIKE,
    DEFAULT_LIKE_CONFIG,
    LSTM_VOCAB,
    float_labelled,
    lstm_tiny,
    parity_inputs,
)

pytestmark = pytest.mark.filterwarnings("ignore:Layer '.*' \\(of type GlobalMaxPooling1D\\) was passed an input")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A bidirectional, masked, stacked model registered with its approved int8 graph."""
    model = lstm_tiny(seed=6, maxlen=7, **DEFAULT_LIKE)
    x, y = float_labelled(model)
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    files, record = int8_export(model, x, y, 1.0, probe, max_drop=1.0)
    reg = ModelRegistry(str(tmp_path_factory.mktemp("registry")))
    version = reg.register(model, DEFAULT_LIKE_CONFIG.preprocessing(vocab_size=LSTM_VOCAB), None, {"int8": record}, probe,
                           extra_files=files)
    return {"registry": reg, "version": version, "model": model, "x": np.concatenate([x, parity_inputs(7)])}


def _tables_of(graph: bytes) -> dict[str, dict[str, str]]:
    """Gate-table initializer -> its external data entries (empty when embedded)."""
    model = onnx.load_model_from_string(graph)
    return {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer if "_table" in t.name}


def test_the_float_and_int8_graphs_reference_one_stored_table_file(shared):
    reg, version = shared["registry"], shared["version"]
    meta = reg.metadata(version)
    assert {"model.fast.onnx", INT8_FILE, TABLES_FILE} <= set(meta["files"]) and "model.onnx" not in meta["files"]
    tables = reg.read_file(version, TABLES_FILE)
    spec_tables = 2 * LSTM_VOCAB * 4 * 3 * 4  # two directions of the first layer, V x 4U float32 each
    assert len(tables) == spec_tables
    layouts = [_tables_of(reg.read_file(version, name)) for name in ("model.fast.onnx", INT8_FILE)]
    for layout in layouts:  # two directions x (sigmoid gates, candidate)
        assert len(layout) == 4 and {e["location"] for e in layout.values()} == {TABLES_FILE}
        assert sum(int(e["length"]) for e in layout.values()) == len(tables)
    assert [sorted((e["offset"], e["length"]) for e in layout.values()) for layout in layouts] == \
        [sorted((e["offset"], e["length"]) for e in layouts[0].values())] * 2, "the same bytes for both"
    assert all(not e for e in _tables_of(build_fast_onnx(shared["model"])).values()), "self-contained: embedded"


def test_shared_tables_score_bit_for_bit_like_the_self_contained_graphs(shared):
    reg, version, model, x = shared["registry"], shared["version"], shared["model"], shared["x"]
    fast = reg.load_predictor(version)
    assert fast.kind == "fast"
    np.testing.assert_array_equal(fast.predict(x), FastLstmPredictor(build_fast_onnx(model)).predict(x))
    assert np.max(np.abs(fast.predict(x) - keras_reference(model, x))) <= 1e-5
    int8 = reg.load_predictor(version, kind="int8")
    np.testing.assert_array_equal(int8.predict(x),
                                  Int8LstmPredictor(build_fast_onnx(model, precision="int8")).predict(x))


def test_a_tampered_table_file_is_refused(shared, tmp_path):
    reg = shared["registry"]
    src = reg.root.path + f"/versions/{shared['version']}"
    copy = ModelRegistry(str(tmp_path))
    shutil.copytree(src, tmp_path / "versions" / shared["version"])
    path = tmp_path / "versions" / shared["version"] / TABLES_FILE
    data = bytearray(path.read_bytes())
    data[7] ^= 1
    path.write_bytes(bytes(data))
    for kind in ("auto", "int8"):
        with pytest.raises(RegistryError, match=f"{TABLES_FILE} does not match the checksum"):
            copy.load_predictor(shared["version"], kind=kind)


def test_versions_registered_with_embedded_tables_and_a_plain_export_still_load(shared, tmp_path):
    """What registrations before shared tables wrote: self-contained graphs and model.onnx."""
    version, model, x = shared["version"], shared["model"], shared["x"]
    vdir = tmp_path / "versions" / version
    shutil.copytree(shared["registry"].root.path + f"/versions/{version}", vdir)
    (vdir / TABLES_FILE).unlink()
    (vdir / "model.fast.onnx").write_bytes(build_fast_onnx(model))
    (vdir / INT8_FILE).write_bytes(build_fast_onnx(model, precision="int8"))
    export_onnx(model, str(vdir / "model.onnx"))
    meta = json.loads((vdir / "metadata.json").read_text())
    del meta["files"][TABLES_FILE]
    for name in ("model.fast.onnx", INT8_FILE, "model.onnx"):
        meta["files"][name] = hashlib.sha256((vdir / name).read_bytes()).hexdigest()
    meta["export"] = {k: v for k, v in meta["export"].items() if k != "plain"}
    (vdir / "metadata.json").write_text(json.dumps(meta))

    old = ModelRegistry(str(tmp_path))
    np.testing.assert_array_equal(old.load_predictor(version).predict(x), shared["registry"].load_predictor(
        version).predict(x))
    np.testing.assert_array_equal(old.load_predictor(version, kind="int8").predict(x),
                                  shared["registry"].load_predictor(version, kind="int8").predict(x))
    plain = old.load_predictor(version, kind="onnx")
    assert plain.kind == "onnx" and np.max(np.abs(plain.predict(x) - keras_reference(model, x))) <= 1e-5


def test_int8_tables_of_another_model_are_refused_at_registration(tmp_path):
    model, other = lstm_tiny(seed=6, maxlen=7), lstm_tiny(seed=7, maxlen=7)
    probe = probe_batch(LSTM_VOCAB, 7, n=48, seed=2)
    _, wrong_tables = build_fast_parts(other, precision="int8")
    reg = ModelRegistry(str(tmp_path))
    with pytest.raises(RegistryError, match=f"the given {TABLES_FILE} .* does not serve this model"):
        reg.register(model, DEFAULT_LIKE_CONFIG.preprocessing(vocab_size=LSTM_VOCAB), None, {}, probe,
                     extra_files={TABLES_FILE: wrong_tables})
    assert reg.versions() == []
    with pytest.raises(ValueError, match="gate tables hold 3 bytes"):
        build_fast_parts(model, tables=b"abc")
