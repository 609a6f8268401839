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


def _actions(registry: ModelRegistry) -> list[tuple[str, str, str | None]]:
    return [(r["action"], r["version"], r.get("rolled_back_from")) for r in registry.audit_log()
            if r["action"] in ("promote", "rollback")]


def test_rollbacks_walk_back_through_champions(tmp_path, tiny_model):  # noqa: F811
    registry = ModelRegistry(str(tmp_path))
    v1, v2, v3 = (_register(registry, tiny_model) for _ in range(3))  # v1: champion on registration
    registry.promote(v2, reason="better")
    registry.promote(v3, reason="better still")
    assert registry.champion_history() == [v1, v2]

    # Two rollbacks go two champions back (the old `previous` field made the second one return to v3).
    assert registry.rollback(reason="v3 misbehaves") == v2 and registry.champion() == v2
    assert registry.rollback(reason="v2 too") == v1 and registry.champion() == v1
    with pytest.raises(RegistryError, match="first on record"):
        registry.rollback()
    assert registry.champion() == v1

    # A promote after rollbacks pushes onto what is left of the history.
    registry.promote(v3, reason="fixed")
    registry.promote(v3, reason="promoted again")  # the champion itself: no extra step back
    assert registry.champion_history() == [v1]
    assert registry.rollback() == v1
    assert _actions(registry) == [("promote", v1, None), ("promote", v2, None), ("promote", v3, None),
                                  ("rollback", v2, v3), ("rollback", v1, v2), ("promote", v3, None),
                                  ("promote", v3, None), ("rollback", v1, v3)]
    rollbacks = [r for r in registry.audit_log() if r["action"] == "rollback"]
    assert [r["reason"] for r in rollbacks] == ["v3 misbehaves", "v2 too", "rollback"]
    assert all(r["actor"] == "user" and r["updated_at"] for r in rollbacks)


def test_registry_from_before_history_rolls_back_once(tmp_path, tiny_model):  # noqa: F811
    registry = ModelRegistry(str(tmp_path))
    v1, v2 = _register(registry, tiny_model), _register(registry, tiny_model)
    # champion.json as promote wrote it before champion history existed.
    (tmp_path / "champion.json").write_text(json.dumps({
        "version": v2, "previous": v1, "reason": "old", "actor": "user", "updated_at": "2026-01-01T00:00:00+00:00"}))
    assert registry.rollback() == v1 and registry.champion() == v1
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback()


def test_cli_rollback_twice_goes_two_back_and_is_audited(tmp_path, tiny_model, capsys):  # noqa: F811
    from flows.cli import main

    registry = ModelRegistry(str(tmp_path))
    v1, v2, v3 = (_register(registry, tiny_model) for _ in range(3))
    for v in (v2, v3):
        assert main(["models", "promote", v, "--registry", str(tmp_path)]) == 0
    capsys.readouterr()
    champions = []
    for _ in range(2):
        assert main(["models", "rollback", "--registry", str(tmp_path), "--reason", "bad scores"]) == 0
        champions.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["champion"])
    assert champions == [v2, v1] and registry.champion() == v1
    assert main(["models", "rollback", "--registry", str(tmp_path)]) == 2
    assert "reviews: error:" in capsys.readouterr().err and registry.champion() == v1
    rollbacks = [r for r in registry.audit_log() if r["action"] == "rollback"]
    assert [(r["version"], r["rolled_back_from"], r["actor"], r["reason"]) for r in rollbacks] == [
        (v2, v3, "cli", "bad scores"), (v1, v2, "cli", "bad scores")]
