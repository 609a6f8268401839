"""Prefect events the system emits, for automations to react to.

``reviews.dump.scored``
    A scoring run ended: it completed, or it failed only because its dump drifted
    (``fail_on_drift``).  Resource ``reviews.output.<output URI>``; payload: the counts, the model
    version, whether ``_SUCCESS`` was written and the drift verdict with the drifted features.
``reviews.model.promoted`` / ``reviews.model.rejected``
    The retrain's promotion gate decided.  Resource ``reviews.model.<version>`` (label
    ``reviews.registry``); payload: the version, the champion before and after, the metrics
    and the reason.  ``prefect.yaml``'s ``score-new-dumps/after-promotion`` runs on ``promoted``.

Emitted only inside a Prefect run.  Outside one (a task body called as a plain function, an
untracked CLI run) ``emit_event`` would start a temporary Prefect server just to hand it an event
no automation can see, so nothing is sent.  Inside a run, Prefect's events worker adds the flow
run, flow and deployment as related resources, and delivers the event in the background.
"""

from __future__ import annotations

from typing import Any

from tasks.reporting import in_run, logger

DUMP_SCORED = "reviews.dump.scored"
MODEL_PROMOTED = "reviews.model.promoted"
MODEL_REJECTED = "reviews.model.rejected"


def model_resource(version: str, registry: str | None, role: str | None = None) -> dict[str, str]:
    resource = {"prefect.resource.id": f"reviews.model.{version}", "prefect.resource.name": version}
    if registry:
        resource["reviews.registry"] = registry
    if role:
        resource["prefect.resource.role"] = role
    return resource


def dump_scored(manifest: dict[str, Any], complete: bool) -> tuple[dict[str, str], dict[str, Any],
                                                                   list[dict[str, str]]]:
    """``reviews.dump.scored``'s resource, payload and related resources (:func:`emit`'s order),
    from the run's manifest."""
    t, model = manifest["totals"], manifest["model"]
    drift = manifest.get("drift") or {}
    resource = {"prefect.resource.id": f"reviews.output.{manifest['output']}",
                "prefect.resource.name": manifest["output"], "reviews.input": manifest["input"]}
    payload = {
        "output": manifest["output"], "input": manifest["input"], "complete": complete,
        "model_version": model["version"], "registry": model["registry"],
        **{k: t[k] for k in ("rows_in", "rows_scored", "rows_rejected", "rows_failed", "files", "files_failed",
                             "duplicate_ids") if k in t},
        "seconds": manifest["timings"]["seconds"],
        "drift": {"verdict": drift.get("verdict", "unavailable"), "drifted": drift.get("drifted", []),
                  "threshold": drift.get("threshold"),
                  "psi": {f["feature"]: f["psi"] for f in drift.get("features", []) if f.get("psi") is not None}},
    }
    return resource, payload, [model_resource(model["version"], model["registry"], "model")]


def gate_decision(decision: dict[str, Any], registry: str, metrics: dict[str, Any] | None = None
                  ) -> tuple[str, dict[str, str], dict[str, Any], list[dict[str, str]]]:
    """The event of a promotion-gate decision: name, resource, payload, related resources."""
    version, champion = decision["challenger"], decision["champion"]
    before = champion if champion != version else None  # the first version is champion from registration
    c = decision.get("comparison") or {}
    payload = {
        "version": version, "registry": registry, "champion_before": before,
        "champion_after": version if decision["promote"] else before,
        "reason": decision["reason"], "min_improvement": decision["min_improvement"],
        "parity_ok": decision["parity_ok"],
        "metrics": {**(metrics or {}), **{k: c[k] for k in (
            "n", "challenger_accuracy", "champion_accuracy", "accuracy_difference", "accuracy_difference_ci95",
            "challenger_auc", "champion_auc", "auc_difference", "mcnemar_p_value") if k in c}},
    }
    related = [model_resource(before, registry, "champion-before")] if before else []
    name = MODEL_PROMOTED if decision["promote"] else MODEL_REJECTED
    return name, model_resource(version, registry), payload, related


def emit(event: str, resource: dict[str, str], payload: dict[str, Any],
         related: list[dict[str, str]] | None = None) -> Any:
    """Send ``event`` from the current run; outside a run, nothing.  Returns the Event or None."""
    if not in_run():
        return None
    from prefect.events import emit_event

    try:
        sent = emit_event(event=event, resource=resource, related=related or [], payload=payload)
    except Exception as exc:  # noqa: BLE001 - an event is a notification: never fail the work it reports
        logger().warning("could not emit %s: %s", event, exc)
        return None
    logger().info("emitted %s for %s", event, resource["prefect.resource.id"])
    return sent
