"""Gated promotion: better challenger promoted, worse rejected, parity failure rejected, rollback."""

from __future__ import annotations

import json

import pytest

from models.promotion import decide
from models.registry import ModelRegistry, RegistryError
from tasks.registry import gate
from tests.test_registry import CONFIG, INPUT_DIM, _register, tiny_model  # noqa: F401  (module fixture)


def _set_metrics(tmp_path, version: str, acc: float, auc: float) -> None:
    # Metrics live in metadata.json; the gate reads them from there.
    path = tmp_path / "versions" / version / "metadata.json"
    meta = json.loads(path.read_text())
    meta["metrics"] = {"test_accuracy": acc, "test_auc": auc}
    path.write_text(json.dumps(meta))


def test_decide_rules():
    champ = {"version": "a", "metrics": {"test_accuracy": 0.80, "test_auc": 0.88}}
    better = {"version": "b", "metrics": {"test_accuracy": 0.81, "test_auc": 0.89}}
    worse = {"version": "c", "metrics": {"test_accuracy": 0.79, "test_auc": 0.90}}
    lower_auc = {"version": "d", "metrics": {"test_accuracy": 0.82, "test_auc": 0.87}}
    assert decide(better, champ, True)["promote"]
    assert not decide(worse, champ, True)["promote"]
    assert decide(worse, champ, True, accuracy_tolerance=0.02)["promote"]
    d = decide(lower_auc, champ, True)
    assert not d["promote"] and "AUC" in d["reason"]
    assert decide(lower_auc, champ, True, auc_tolerance=0.02)["promote"]
    d = decide(better, champ, False, "max |delta| = 0.1")
    assert not d["promote"] and "parity" in d["reason"]
    assert decide(better, None, True)["reason"] == "no champion yet"


def test_gate_task_promotes_rejects_and_audits(tmp_path, tiny_model):  # noqa: F811
    registry = ModelRegistry(str(tmp_path))
    v1 = _register(registry, tiny_model)
    _set_metrics(tmp_path, v1, 0.80, 0.88)
    first = gate.fn(str(tmp_path), v1)
    assert first["promote"] and registry.champion() == v1

    v2 = _register(registry, tiny_model)
    _set_metrics(tmp_path, v2, 0.78, 0.90)
    rejected = gate.fn(str(tmp_path), v2)
    assert not rejected["promote"] and registry.champion() == v1
    assert "accuracy" in rejected["reason"]

    v3 = _register(registry, tiny_model)
    _set_metrics(tmp_path, v3, 0.83, 0.91)
    promoted = gate.fn(str(tmp_path), v3)
    assert promoted["promote"] and registry.champion() == v3

    # A challenger whose export no longer matches Keras (here: probe scores tampered) is rejected.
    v4 = _register(registry, tiny_model)
    _set_metrics(tmp_path, v4, 0.90, 0.95)
    import io
    import hashlib

    import numpy as np

    probe_scores = tmp_path / "versions" / v4 / "probe_scores.npy"
    ref = np.load(probe_scores) + 0.01
    buf = io.BytesIO()
    np.save(buf, ref)
    probe_scores.write_bytes(buf.getvalue())
    meta_path = tmp_path / "versions" / v4 / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["probe_scores.npy"] = hashlib.sha256(buf.getvalue()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    parity = gate.fn(str(tmp_path), v4)
    assert not parity["promote"] and "parity" in parity["reason"] and registry.champion() == v3

    decisions = [r for r in registry.audit_log() if r["action"] == "gate"]
    assert [d["challenger"] for d in decisions] == [v1, v2, v3, v4]
    assert [d["promote"] for d in decisions] == [True, False, True, False]

    # Rollback restores the previous champion, with an audit record.
    assert registry.rollback() == v1
    assert registry.champion() == v1
    assert registry.audit_log()[-1]["reason"] == "rollback"


def test_rollback_without_history_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="no champion"):
        ModelRegistry(str(tmp_path)).rollback()
