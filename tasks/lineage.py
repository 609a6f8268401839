"""The run's data snapshot and code version, and the skip when neither they nor the config changed."""

from __future__ import annotations

from typing import Any

from infra import storage
from infra.code_version import running_code_version
from infra.labelled_inputs import list_labelled
from models.data_snapshot import RunInputs, skip_markdown, snapshot, unchanged
from models.imdb_dataset import ImdbData
from models.presets import TrainConfig
from models.registry import ModelRegistry
from tasks.lazy_task import task
from tasks.reporting import logger, markdown


@task(name="data-snapshot", retries=2, retry_delay_seconds=[2, 10],
      retry_on=storage.is_transient)
def snapshot_inputs(imdb: ImdbData, labelled: list[str], holdout_share: float) -> RunInputs:
    """List the labelled files and fingerprint the run's inputs (nothing is read but the listing)."""
    if not 0.0 <= holdout_share < 1.0:
        raise ValueError(f"holdout_share must be in [0, 1), got {holdout_share}")
    files = list_labelled(labelled)
    snap = snapshot(imdb.source, imdb.fingerprint({}), files, holdout_share)
    logger().info("data snapshot %s: IMDB %s + %d labelled file(s)", snap["fingerprint"][:12], imdb.source,
                  len(files))
    return RunInputs(files, holdout_share, snap, running_code_version())


@task(name="skip-if-unchanged", retries=2, retry_delay_seconds=[2, 10])
def skip_if_unchanged(registry_uri: str, inputs: RunInputs, config: TrainConfig,
                      force: bool = False) -> dict[str, Any] | None:
    """The run's summary when the latest version was trained on the same snapshot, config and code
    (audited, with a markdown artifact); None when the run should train."""
    registry = ModelRegistry(registry_uri)
    versions = registry.versions()
    same, why = unchanged(versions[-1] if versions else None, inputs, config.to_dict())
    log = logger()
    if not same:
        log.info("training: %s", why)
        return None
    if force:
        log.info("%s; training anyway (force)", why)
        return None
    matched = versions[-1]["version"]
    record = {"matched_version": matched, "reason": why, "snapshot_fingerprint": inputs.snapshot["fingerprint"],
              "code_version": inputs.code_version["key"], "actor": "retrain-sentiment"}
    registry.audit("skip", record)
    log.info("skipped: %s", why)
    markdown("retrain-skipped", skip_markdown(matched, why, inputs.snapshot), "Retrain skipped: nothing changed")
    return {"skipped": True, "reason": f"skipped: {why}", "matched_version": matched,
            "champion": registry.champion(), "snapshot_fingerprint": inputs.snapshot["fingerprint"]}
