"""The Prefect events of the promotion gate (tasks/events.py), in process on the Prefect test
harness: a real retrain emits reviews.model.promoted, then reviews.model.rejected for an identical
retrain, and both are read back from the API.  Outside a run nothing is emitted and no temporary
server starts.  (The events of scoring runs: tests/test_drift.py; the trigger they drive on a real
server and worker: tests/test_deployments.py.)"""

from __future__ import annotations

from models.promotion import decide
from tasks import events
from tests.events_api import read_events

TINY = {"maxlen": 12, "embedding_dim": 8, "lstm_units": 4, "batch_size": 16, "epochs": 1}


def test_gate_emits_promoted_then_rejected_with_the_decision(tmp_path, tiny_tgz, prefect_api):
    from flows.retrain import retrain_sentiment
    from models.dump_profile import DumpProfile
    from models.registry import ModelRegistry

    registry = str(tmp_path / "registry")
    first = retrain_sentiment(preset="seed", overrides=TINY, registry=registry, data=tiny_tgz)
    again = retrain_sentiment(preset="seed", overrides=TINY, registry=registry, data=tiny_tgz, force=True)
    v1, v2 = first["version"], again["version"]
    assert first["promoted"] and not again["promoted"]

    # The registration path stored the reference profile: the 120 test reviews, uncut.
    ref = DumpProfile.from_dict(ModelRegistry(registry).metadata(v1)["drift_reference"])
    assert ref.rows == 120 and sum(ref.score) == 120 and ref.tokens > 0

    root = ModelRegistry(registry).root.uri
    (promoted,) = read_events(events.MODEL_PROMOTED, f"reviews.model.{v1}")
    p = promoted["payload"]
    assert (p["version"], p["champion_before"], p["champion_after"], p["registry"]) == (v1, None, v1, root)
    assert p["reason"] == "already champion (first registered version)"
    assert round(p["metrics"]["test_accuracy"], 4) == first["test_accuracy"]
    assert promoted["resource"]["reviews.registry"] == root
    assert "prefect.flow-run." in str(promoted["related"]), "the retrain run that promoted it"

    (rejected,) = read_events(events.MODEL_REJECTED, f"reviews.model.{v2}")
    p = rejected["payload"]
    assert (p["version"], p["champion_before"], p["champion_after"]) == (v2, v1, v1)
    assert p["reason"].startswith("identical predictions on all 120 evaluation reviews")
    assert p["metrics"]["n"] == 120 and p["metrics"]["accuracy_difference"] == 0
    assert p["metrics"]["challenger_accuracy"] == p["metrics"]["champion_accuracy"]
    assert {r["prefect.resource.role"]: r["prefect.resource.id"] for r in rejected["related"]}[
        "champion-before"] == f"reviews.model.{v1}"
    assert not read_events(events.MODEL_PROMOTED, f"reviews.model.{v2}", timeout=0)


def test_gate_event_payload_of_a_promotion_over_a_champion():
    comparison = {"n": 1000, "challenger_accuracy": 0.9, "champion_accuracy": 0.85, "accuracy_difference": 0.05,
                  "accuracy_difference_ci95": [0.03, 0.07], "challenger_auc": 0.95, "champion_auc": 0.92,
                  "auc_difference": 0.03, "auc_difference_ci95": [0.01, 0.05], "mcnemar_p_value": 1e-6,
                  "identical_predictions": False, "only_challenger_correct": 80, "only_champion_correct": 30}
    decision = decide("v2", "v1", True, comparison=comparison)
    name, resource, payload, related = events.gate_decision(decision, "s3://b/registry", {"test_accuracy": 0.9})
    assert name == events.MODEL_PROMOTED
    assert resource == {"prefect.resource.id": "reviews.model.v2", "prefect.resource.name": "v2",
                        "reviews.registry": "s3://b/registry"}
    assert (payload["champion_before"], payload["champion_after"]) == ("v1", "v2")
    assert payload["metrics"]["test_accuracy"] == 0.9 and payload["metrics"]["mcnemar_p_value"] == 1e-6
    assert payload["reason"].startswith("more accurate than the champion")
    assert related == [{"prefect.resource.id": "reviews.model.v1", "prefect.resource.name": "v1",
                        "reviews.registry": "s3://b/registry", "prefect.resource.role": "champion-before"}]


def test_outside_a_run_nothing_is_emitted_and_no_server_starts():
    from prefect.server.api.server import SubprocessASGIServer

    before = dict(SubprocessASGIServer._instances)
    assert events.emit(events.MODEL_PROMOTED, {"prefect.resource.id": "reviews.model.x"}, {}) is None
    assert dict(SubprocessASGIServer._instances) == before
