"""Pruning the registry after a nightly run (``keep_versions``)."""

from __future__ import annotations

from typing import Any

from models.registry import ModelRegistry
from models.retention import prune
from tasks.lazy_task import task
from tasks.reporting import logger, table


@task(name="prune-registry", retries=2, retry_delay_seconds=[2, 10])
def prune_registry(registry_uri: str, keep_versions: int) -> dict[str, Any]:
    """Keep the ``keep_versions`` newest versions, the champion and its rollback history (audited).

    A retry after a failure part-way finishes the removals the first attempt began."""
    plan = prune(ModelRegistry(registry_uri), keep_versions, actor="retrain-sentiment")
    logger().info("registry %s pruned to the %d newest versions plus champion and rollback history: removed %s",
                  registry_uri, keep_versions, plan.remove + plan.unfinished or "nothing")
    table("registry-retention", [{"version": v, "kept": "; ".join(why)} for v, why in plan.kept.items()] +
          [{"version": v, "kept": "removed"} for v in plan.remove], "Model versions kept and removed")
    return plan.to_dict()
