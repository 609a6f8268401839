"""Registry retention: prune keeps the newest, the champion and its rollback history; commit marker first."""

from __future__ import annotations

import json

import pytest

from infra import storage
from models.registry import ModelRegistry, RegistryError
from models.retention import REMOVING, plan_prune, prune
from tests.cli_process import run_cli, train_tiny
from tests.tinymodel import register_tiny


def _seven(uri: str) -> tuple[ModelRegistry, list[str]]:
    """v0..v6; v0 champion first, then v1, then v2: champion v2 with rollback history [v0, v1]."""
    reg = ModelRegistry(uri)
    versions = [register_tiny(uri) for _ in range(7)]
    reg.promote(versions[1], reason="test")
    reg.promote(versions[2], reason="test")
    assert reg.champion() == versions[2] and reg.champion_history() == versions[:2]
    return reg, versions


def _check_prune(reg: ModelRegistry, v: list[str]) -> None:
    dry = prune(reg, 2, dry_run=True)
    assert dry.remove == v[3:5] and dry.dry_run
    assert [m["version"] for m in reg.versions()] == v, "a dry run removes nothing"
    assert not [r for r in reg.audit_log() if r["action"] == "prune"]

    plan = prune(reg, 2)
    assert plan.remove == [v[3], v[4]]
    assert plan.kept == {v[6]: ["one of the 2 newest"], v[5]: ["one of the 2 newest"], v[2]: ["champion"],
                         v[1]: ["in the champion's rollback history"], v[0]: ["in the champion's rollback history"]}
    assert [m["version"] for m in reg.versions()] == [v[0], v[1], v[2], v[5], v[6]]
    for gone in v[3:5]:
        assert storage.list_files(reg.root.join("versions", gone)) == [], "every file of a removed version goes"
        with pytest.raises(RegistryError, match="no model version"):
            reg.metadata(gone)
    audit = [r for r in reg.audit_log() if r["action"] == "prune"]
    assert len(audit) == 1 and audit[0]["removed"] == v[3:5] and audit[0]["kept"] == plan.kept
    assert audit[0]["keep"] == 2 and audit[0]["actor"] == "user"
    # The rollback history is intact: both steps back still load and score.
    assert reg.rollback() == v[1] and reg.rollback() == v[0]
    assert reg.load_predictor(v[0]).kind == "fast"
    assert prune(reg, 2).remove == [v[1], v[2]], "once out of the history, old champions go too"


def test_prune_keeps_the_newest_the_champion_and_its_rollback_history(tmp_path):
    reg, v = _seven(str(tmp_path / "registry"))
    _check_prune(reg, v)
    assert sorted(p.name for p in (tmp_path / "registry" / "versions").iterdir()) == [v[0], v[5], v[6]]


def test_prune_on_s3(s3_bucket, s3_client):
    reg, v = _seven(f"{s3_bucket}/models")
    _check_prune(reg, v)
    bucket = s3_bucket.removeprefix("s3://")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="models/versions/").get("Contents", [])]
    assert {k.split("/")[2] for k in keys} == {v[0], v[5], v[6]}, keys


def test_an_interrupted_prune_never_leaves_a_loadable_half_version_and_is_finished_later(tmp_path, monkeypatch):
    uri = str(tmp_path / "registry")
    reg = ModelRegistry(uri)
    champion, old, new = (register_tiny(uri) for _ in range(3))
    assert reg.champion() == champion
    # A registration still being written (files, no metadata.json yet) must be left alone.
    writing = reg.root.join("versions", "29990101-000000000000-beef00")
    storage.atomic_write(writing.join("model.keras"), b"partial")

    real_delete = storage.delete_file
    deleted = []

    def crash_after_the_commit_marker(loc):
        if deleted:
            raise OSError("the machine went away")
        real_delete(loc)
        deleted.append(loc.path)

    monkeypatch.setattr(storage, "delete_file", crash_after_the_commit_marker)
    with pytest.raises(OSError, match="went away"):
        prune(reg, 1)
    monkeypatch.undo()
    assert deleted[0].endswith(f"{old}/metadata.json"), "the commit marker is the first thing deleted"
    assert [m["version"] for m in reg.versions()] == [champion, new]
    with pytest.raises(RegistryError, match="no model version"):
        reg.load_predictor(old)
    assert storage.exists(reg.root.join("versions", old, REMOVING))
    assert storage.exists(reg.root.join("versions", old, "model.keras")), "the crash left its files"

    assert plan_prune(reg, 1).unfinished == [old]
    plan = prune(reg, 1)
    assert plan.unfinished == [old] and plan.remove == []
    assert storage.list_files(reg.root.join("versions", old)) == []
    assert storage.exists(writing.join("model.keras")), "an unfinished registration is not a removal"
    assert [r for r in reg.audit_log() if r["action"] == "prune"][-1]["finished_removals"] == [old]


def test_keep_must_be_at_least_one(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    for bad in (0, -3, True, 1.5):
        with pytest.raises(RegistryError, match="keep must be a whole number >= 1"):
            prune(reg, bad)


def test_models_prune_cli(tmp_path):
    uri = str(tmp_path / "registry")
    v = [register_tiny(uri) for _ in range(3)]
    code, out, err = run_cli("models", "prune", "--keep", "1", "--dry-run", "--registry", uri)
    assert code == 0, err
    assert out.splitlines()[0] == f"would remove {v[1]}"
    assert json.loads(out.splitlines()[-1])["remove"] == [v[1]]
    assert len(ModelRegistry(uri).versions()) == 3
    code, out, err = run_cli("models", "prune", "--keep", "1", "--registry", uri)
    assert code == 0 and out.splitlines()[0] == f"removed {v[1]}", err
    assert [m["version"] for m in ModelRegistry(uri).versions()] == [v[0], v[2]]
    code, _, err = run_cli("models", "prune", "--keep", "0", "--registry", uri)
    assert code == 2 and "keep must be a whole number >= 1" in err.strip().splitlines()[-1]


def test_nightly_run_prunes_after_the_gate(tmp_path, tiny_tgz, prefect_api):
    from flows.retrain import retrain_sentiment

    registry = str(tmp_path / "registry")
    first = train_tiny(registry, tiny_tgz, "--epochs", "1")["version"]
    reg = ModelRegistry(registry)
    extra = reg.register(reg.load_keras(first), reg.preprocessing(first), reg.vocabulary(first),
                         {"preset": "seed"}, reg.probe(first)[0])
    summary = retrain_sentiment(preset="seed", registry=registry, data=tiny_tgz, force=True, keep_versions=1,
                                overrides={"maxlen": 12, "embedding_dim": 8, "lstm_units": 8, "batch_size": 16,
                                           "epochs": 1})
    assert summary["version"] not in (first, extra)
    assert [m["version"] for m in reg.versions()] == sorted([first, summary["version"]]), \
        "the newest and the champion stay; the rest goes"
    assert [r for r in reg.audit_log() if r["action"] == "prune"][-1]["removed"] == [extra]
