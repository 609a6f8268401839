"""Model registry: save -> load -> same predictions, export parity, champion, safety."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from infra import storage
from models.onnx_graph import TABLES_FILE
from models.predictors import (
    KerasPredictor,
    check_parity,
    keras_reference,
    l2_cache_bytes,
    probe_batch,
    rows_per_batch,
    step_rows,
)
from models.presets import TrainConfig
from models.registry import ModelRegistry, RegistryError
from tests.tinymodel import build_tiny

CONFIG = TrainConfig(preset="seed", maxlen=8, embedding_dim=8, lstm_units=4)
INPUT_DIM = 40


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny(1, config=CONFIG, vocab_size=INPUT_DIM)


def _register(registry: ModelRegistry, model, **meta) -> str:
    prep = CONFIG.preprocessing(vocab_size=INPUT_DIM)
    probe = probe_batch(INPUT_DIM, CONFIG.maxlen, n=64)
    vocab = {"words": [f"w{i}" for i in range(INPUT_DIM - 3)], "start_char": 1, "oov_char": 2, "index_from": 3}
    return registry.register(model, prep, vocab, {"preset": "seed", "metrics": {"test_accuracy": 0.5}, **meta},
                             probe)


def _registry_roundtrip(uri: str, model) -> None:
    registry = ModelRegistry(uri)
    assert registry.versions() == []
    with pytest.raises(RegistryError, match="no champion"):
        registry.resolve("champion")

    v1 = _register(registry, model)
    assert registry.champion() == v1, "the first version becomes champion"
    v2 = _register(registry, model)
    assert registry.champion() == v1, "later versions do not take over without a promote step"
    assert [m["version"] for m in registry.versions()] == [v1, v2]
    assert registry.resolve("latest") == v2

    meta = registry.metadata(v2)
    assert meta["export"]["parity_max_abs_delta"] <= 1e-5
    assert set(meta["files"]) >= {"model.keras", "model.fast.onnx", TABLES_FILE, "preprocessing.json",
                                  "vocabulary.json"}
    assert "model.onnx" not in meta["files"], "no tf2onnx export next to the exact gate-table graph"
    assert meta["preprocessing"]["maxlen"] == CONFIG.maxlen
    assert "keras" in meta["libraries"] and meta["created_at"]

    x = probe_batch(INPUT_DIM, CONFIG.maxlen, n=100, seed=7)
    expected = keras_reference(model, x)
    loaded = registry.load_keras(v2)
    np.testing.assert_allclose(keras_reference(loaded, x), expected, atol=1e-6)
    assert meta["export"]["fast"].startswith("model.fast.onnx"), meta["export"]
    fast = registry.load_predictor(v2)
    assert fast.kind == "fast", "auto prefers the gate-table graph"
    assert np.max(np.abs(fast.predict(x) - expected)) <= 1e-5
    with pytest.raises(RegistryError, match=f"version {v2} has no plain ONNX graph .*predictor=auto or fast"):
        registry.load_predictor(v2, kind="onnx")
    assert registry.load_predictor(v2, kind="keras").kind == "keras"
    assert registry.preprocessing(v2).maxlen == CONFIG.maxlen
    assert registry.vocabulary(v2)["words"][0] == "w0"

    registry.promote(v2, reason="test")
    assert registry.champion() == v2
    log = registry.audit_log()
    assert [r["version"] for r in log if r["action"] == "promote"] == [v1, v2]


def test_registry_roundtrip_local(tmp_path, tiny_model):
    _registry_roundtrip(str(tmp_path / "registry"), tiny_model)
    leftovers = [f for _, _, fs in os.walk(tmp_path) for f in fs if f.startswith(".tmp-")]
    assert leftovers == []


def test_registry_roundtrip_s3(s3_bucket, tiny_model):
    _registry_roundtrip(f"{s3_bucket}/models", tiny_model)


def test_unfinished_registration_is_invisible(tmp_path, tiny_model):
    registry = ModelRegistry(str(tmp_path))
    v1 = _register(registry, tiny_model)
    # A crash before metadata.json is written leaves files but no version.
    storage.atomic_write(registry.root.join("versions", "20990101-000000-dead00", "model.keras"), b"partial")
    assert [m["version"] for m in registry.versions()] == [v1]
    with pytest.raises(RegistryError, match="no model version"):
        registry.resolve("20990101-000000-dead00")


def test_tampered_file_is_refused(tmp_path, tiny_model):
    registry = ModelRegistry(str(tmp_path))
    for name, kind in ((TABLES_FILE, "auto"), ("model.fast.onnx", "auto"), ("model.keras", "keras")):
        v1 = _register(registry, tiny_model)
        path = tmp_path / "versions" / v1 / name
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
        with pytest.raises(RegistryError, match="checksum"):
            registry.load_predictor(v1, kind=kind)


def test_lambda_layer_is_refused(tmp_path):
    import keras

    inputs = keras.Input((CONFIG.maxlen,), dtype="int32")
    x = keras.layers.Embedding(INPUT_DIM, 4)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    registry = ModelRegistry(str(tmp_path))
    with pytest.raises(RegistryError, match="safe_mode"):
        _register(registry, model)
    assert registry.versions() == []

    # A Lambda model smuggled into a version folder (checksums forged to match) is still refused on load.
    good = build_tiny(1, config=CONFIG, vocab_size=INPUT_DIM)
    v1 = _register(registry, good)
    path = tmp_path / "versions" / v1 / "model.keras"
    model.save(str(path))
    meta_path = tmp_path / "versions" / v1 / "metadata.json"
    meta = json.loads(meta_path.read_text())
    import hashlib

    meta["files"]["model.keras"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="safe_mode"):
        registry.load_keras(v1)


def _averaging_model(seed: int):
    """A topology the gate-table graph does not cover: its versions are served by the plain export."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((CONFIG.maxlen,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(INPUT_DIM, 4)(inputs))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def test_parity_failure_blocks_registration(tmp_path, monkeypatch):
    # Corrupt the export step itself: a model whose ONNX graph differs from Keras must not register.
    import models.onnx_export as export

    other = _averaging_model(seed=2)  # different random weights
    other(np.zeros((1, CONFIG.maxlen), dtype=np.int32))
    real_export = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda model, path: real_export(other, path))
    registry = ModelRegistry(str(tmp_path))
    with pytest.raises(RegistryError, match="parity|differs"):
        _register(registry, _averaging_model(seed=1))
    assert registry.versions() == [] and registry.champion() is None


def test_a_topology_without_gate_table_graph_gets_the_plain_export(tmp_path):
    model = _averaging_model(seed=1)
    registry = ModelRegistry(str(tmp_path))
    version = _register(registry, model)
    meta = registry.metadata(version)
    assert "model.onnx" in meta["files"] and "model.fast.onnx" not in meta["files"] and TABLES_FILE not in meta["files"]
    assert meta["export"]["plain"].startswith("model.onnx (tf2onnx)") and meta["export"]["parity_max_abs_delta"] <= 1e-5
    x = probe_batch(INPUT_DIM, CONFIG.maxlen, n=40, seed=3)
    for kind in ("auto", "onnx"):
        predictor = registry.load_predictor(version, kind=kind)
        assert predictor.kind == "onnx"
        np.testing.assert_allclose(predictor.predict(x), keras_reference(model, x), atol=1e-5, rtol=0)
    with pytest.raises(RegistryError, match="has no fast predictor"):
        registry.load_predictor(version, kind="fast")


def test_check_parity_detects_drift(tiny_model):
    x = probe_batch(INPUT_DIM, CONFIG.maxlen, n=16)
    ref = keras_reference(tiny_model, x)
    assert check_parity(KerasPredictor(tiny_model), x, ref) <= 1e-5
    from models.predictors import ParityError

    with pytest.raises(ParityError):
        check_parity(KerasPredictor(tiny_model), x, ref + 1e-3)


def _weights_h5_names(keras_bytes: bytes) -> list[str]:
    import io
    import zipfile

    import h5py

    names: list[str] = []
    with zipfile.ZipFile(io.BytesIO(keras_bytes)) as archive, \
            h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        h5.visit(names.append)
    return names


def test_registered_keras_file_holds_no_optimizer_state(tmp_path):
    model = build_tiny(5, config=CONFIG, vocab_size=INPUT_DIM)  # compiled with Adam
    rng = np.random.default_rng(0)
    model.fit(rng.integers(0, INPUT_DIM, (16, CONFIG.maxlen)), rng.integers(0, 2, (16, 1)), epochs=1, verbose=0)
    # The trained model really has optimizer state, so a clean file is the copy's doing.
    trained = str(tmp_path / "trained.keras")
    model.save(trained)
    with open(trained, "rb") as f:
        assert any(n.startswith("optimizer/vars") for n in _weights_h5_names(f.read()))

    registry = ModelRegistry(str(tmp_path / "registry"))
    version = _register(registry, model)
    names = _weights_h5_names(registry.read_file(version, "model.keras"))
    assert not [n for n in names if "optimizer" in n], names
    assert any(n.startswith("layers/") for n in names), names

    loaded = registry.load_keras(version)  # safe_mode=True
    x = probe_batch(INPUT_DIM, CONFIG.maxlen, n=50, seed=11)
    np.testing.assert_array_equal(keras_reference(loaded, x), keras_reference(model, x))


def test_step_rows_fit_one_steps_gates_in_the_l2_cache():
    assert step_rows(128, cache_bytes=512 << 10) == 256  # AMD Zen 3: 256 rows x 512 gates x 4 bytes
    assert step_rows(128, cache_bytes=2 << 20) == 1024   # a 2 MiB L2: the earlier fixed batch
    assert step_rows(64, cache_bytes=512 << 10) == 512
    assert step_rows(4, cache_bytes=512 << 10) == 1024 and step_rows(4096, cache_bytes=512 << 10) == 64
    assert l2_cache_bytes() >= 64 << 10


def test_the_gate_table_predictor_takes_cache_sized_batches(tmp_path, tiny_model):
    registry = ModelRegistry(str(tmp_path / "reg"))
    # Only the batch size reads lstm_units from the version's hyperparameters.
    version = _register(registry, tiny_model, hyperparameters={"lstm_units": 128})
    fast = registry.load_predictor(version)
    assert fast.kind == "fast" and fast.batch_size == rows_per_batch(CONFIG.maxlen, cap=step_rows(128))
    older = _register(registry, tiny_model)  # no hyperparameters recorded: the token rule alone
    assert registry.load_predictor(older).batch_size == rows_per_batch(CONFIG.maxlen)
