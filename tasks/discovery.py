"""Thin tasks of ``score-new-dumps``: find the partitions to score, score one of them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from infra import storage
from models import dump_discovery
from models.dump_discovery import Partition
from tasks.lazy_task import task
from tasks.reporting import logger
from tasks.retries import TRANSIENT_RETRIES

# Set by score-new-dumps itself; the rest of score-reviews' parameters may be forwarded.
OWN_PARAMETERS = ("input", "output", "overwrite", "registry")


def slot_name(output_root: str) -> str:
    """The global concurrency limit that runs over ``output_root`` share (a hash: limit names are short)."""
    return "score-new-dumps-" + hashlib.sha256(output_root.rstrip("/").encode()).hexdigest()[:16]


def _ensure_limit(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return  # a limit an operator changed stays as it is
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass  # another run created it first


@contextmanager
def output_root_slot(output_root: str) -> Iterator[None]:
    """One score-new-dumps run at a time per output root, whichever deployment started it.

    The deployments' own limits only keep one of *their* runs at a time: an after-promotion run
    overwriting a partition that an hourly run is scoring would lose the claim and fail that
    partition, leaving the older model's scores until the next promotion.  So the runs queue
    on one global concurrency limit per output root, and a run that waited discovers afresh.
    """
    from prefect.concurrency.sync import concurrency

    name = slot_name(output_root)
    _ensure_limit(name)
    logger().info("waiting for concurrency limit %s (one score-new-dumps run per output root %s)",
                  name, output_root)
    with concurrency(name, occupy=1, strict=True):
        yield


class PartitionScoringError(RuntimeError):
    """A partition's score-reviews run did not complete; the message says how it ended."""


@task(name="discover-partitions", **TRANSIENT_RETRIES)
def discover_partitions(input_root: str, output_root: str, champion: str | None = None,
                        model: str | None = None) -> dict[str, Any]:
    found = dump_discovery.discover(input_root, output_root, champion, model=model)
    log = logger()
    log.info("%d partition(s) to score, %d complete, %d not ready under %s",
             len(found.to_score), len(found.skipped_complete), len(found.not_ready), input_root)
    for name in found.not_ready:
        log.info("partition %s has no %s marker yet: left for a later run", name, dump_discovery.READY)
    return found.to_dict()


def score_run_parameters(partition: Partition, registry: str | None,
                         score_parameters: dict[str, Any]) -> dict[str, Any]:
    params = {**score_parameters, "input": partition.input, "output": partition.output,
              "overwrite": partition.overwrite}
    if registry:
        # Otherwise left out, so the score-reviews run takes its own default (the worker's REVIEWS_REGISTRY).
        params["registry"] = registry
    return params


def _outcome(partition: Partition, flow_run_id: Any) -> dict[str, Any]:
    # Read from the output, not from the run's return value: a deployment run's result lives in
    # another process and is not persisted, while the manifest is what any reader sees.
    out = storage.resolve(partition.output)
    if not storage.exists(out.join(dump_discovery.SUCCESS)):
        raise PartitionScoringError(f"the run completed but {out.uri} has no {dump_discovery.SUCCESS}")
    m = storage.read_json(out.join(dump_discovery.MANIFEST))
    t = m["totals"]
    return {"reason": partition.reason, "overwrite": partition.overwrite, "scored_by_before": partition.scored_by,
            "model_version": m["model"]["version"], "rows_in": t["rows_in"], "rows_scored": t["rows_scored"],
            "rows_rejected": t["rows_rejected"], "output": partition.output,
            "flow_run_id": str(flow_run_id) if flow_run_id else None}


def _via_deployment(deployment: str, params: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment

    # as_subflow (the default) links the run to this task run, so the UI shows which
    # discovery run started it; timeout=None waits for it however long it takes.
    run = run_deployment(deployment, parameters=params, timeout=None)
    state = run.state
    if state is None or not state.is_completed():
        how = state.name if state is not None else "without a state"
        raise PartitionScoringError(f"{deployment} run {run.name} ({run.id}) ended {how}: "
                                    f"{(state.message if state is not None else '') or 'no message'}")
    return run.id


def _via_subflow(score_reviews: Callable[..., Any], params: dict[str, Any]) -> Any:
    state = score_reviews(**params, return_state=True)
    if not state.is_completed():
        try:
            state.result()
        except Exception as exc:  # re-raised with the run's identity
            raise PartitionScoringError(f"score-reviews subflow ended {state.name}: {exc}") from exc
        raise PartitionScoringError(f"score-reviews subflow ended {state.name}: {state.message}")
    return state.state_details.flow_run_id


# No retries: a scoring run that failed has its own retries inside; the next discovery run
# picks the partition up again (its output still lacks _SUCCESS).
@task(name="score-partition", task_run_name="score-partition-{partition.name}")
def score_partition(partition: Partition, deployment: str | None, registry: str | None,
                    score_parameters: dict[str, Any], subflow: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Score one partition as its own ``score-reviews`` flow run; raises if that run fails.

    ``subflow``: the ``score-reviews`` flow, called in this process when ``deployment`` is None
    (handed in by the flow: tasks do not import the flows layer).
    """
    if not deployment and subflow is None:
        raise ValueError("score_partition needs a deployment name or the score-reviews flow")
    params = score_run_parameters(partition, registry, score_parameters)
    logger().info("scoring %s (%s%s) -> %s", partition.input, partition.reason,
                  f", scored by {partition.scored_by} before" if partition.scored_by else "", partition.output)
    flow_run_id = _via_deployment(deployment, params) if deployment else _via_subflow(subflow, params)
    return _outcome(partition, flow_run_id)
