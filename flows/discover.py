"""``score-new-dumps``: find dump partitions that have no complete scores yet and score them."""

from __future__ import annotations

import inspect
from typing import Any

from prefect import flow, unmapped
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.score import score_reviews
from infra.settings import default_registry
from models.dump_discovery import READY, Partition
from tasks.discovery import OWN_PARAMETERS, discover_partitions, output_root_slot, score_partition
from tasks.reporting import logger, markdown, short_uri

DEFAULT_DEPLOYMENT = "score-reviews/score-reviews"


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"score-new-{short_uri(flow_run.parameters.get('input_root', '?'))}"


def _checked_score_parameters(score_parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse a mistyped or conflicting key before any run starts, not once per partition."""
    params = dict(score_parameters or {})
    accepted = set(inspect.signature(score_reviews.fn).parameters) - set(OWN_PARAMETERS)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"score_parameters: {unknown} are not score-reviews parameters, or are set by "
                         f"score-new-dumps itself ({', '.join(OWN_PARAMETERS)}); accepted: {sorted(accepted)}")
    return params


def _check_deployment(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ValueError(f"no deployment {name!r} on this Prefect server: deploy it (prefect deploy --all) "
                             "or pass deployment=None to score in subflows of this run") from None


def _resolve(registry: str | None, ref: str, required: bool) -> str | None:
    """``ref``'s exact version; None (the runs resolve it and say why not) when it is not required."""
    from models.registry import ModelRegistry, RegistryError

    try:
        return ModelRegistry(registry or default_registry()).resolve(ref)
    except (RegistryError, FileNotFoundError):
        if required:
            raise
        return None


def _summary_markdown(summary: dict[str, Any]) -> str:
    rows = [f"| {n} | scored ({s['reason']}{', overwritten' if s['overwrite'] else ''}) | "
            f"{s['model_version']}, {s['rows_scored']:,} of {s['rows_in']:,} rows |" for n, s in summary["scored"].items()]
    rows += [f"| {n} | **failed** | {r} |" for n, r in summary["failed"].items()]
    rows += [f"| {n} | not ready | no `{READY}` yet |" for n in summary["not_ready"]]
    head = (f"## New-dump scoring\n\n{len(summary['scored'])} scored, {len(summary['failed'])} failed, "
            f"{len(summary['not_ready'])} not ready, {len(summary['skipped_complete'])} already complete\n\n")
    return head + ("| partition | outcome | detail |\n|---|---|---|\n" + "\n".join(rows) if rows else "Nothing to do.")


@flow(name="score-new-dumps", validate_parameters=True, log_prints=True, flow_run_name=_run_name)
def score_new_dumps(
    input_root: str,
    output_root: str,
    deployment: str | None = DEFAULT_DEPLOYMENT,
    max_concurrent: int = 2,
    rescore_on_promotion: bool = False,
    registry: str | None = None,
    score_parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every ready dump partition under ``input_root`` that has no complete output yet.

    Each partition ``<input_root>/<name>/`` is scored into ``<output_root>/<name>/`` by its own
    ``score-reviews`` flow run, at most ``max_concurrent`` at a time: a run of ``deployment``
    (started through ``run_deployment``, so a worker executes it) or, with ``deployment=None``,
    a subflow of this run (no worker needed).

    Producer contract: a partition is ready only once it holds a ``_READY`` marker, written by
    the producer after its last data file; a ready partition is not changed afterwards.  A
    partition without ``_READY`` is left alone and reported as ``not_ready``; a later run scores
    it once the marker appears.

    A partition is picked when its output has no ``_SUCCESS`` (new, or an earlier run that did
    not finish: that one resumes, keeping committed parts).  With ``rescore_on_promotion``, also
    when its ``_manifest.json`` names a model version other than the registry's champion; only
    those are scored with ``overwrite=True``, and every run of this flow then scores with the
    champion's exact version.  ``score_parameters`` go to every score-reviews run (e.g.
    ``{"batch_size": 4096}``); ``registry`` too, when given.

    Returns ``{"scored": {name: {...}}, "skipped_complete": [...], "not_ready": [...],
    "failed": {name: reason}}``.  A failed partition does not stop the others; the run then ends
    Failed, with the same summary as its result.  A second run right after finds nothing to do.
    """
    if max_concurrent < 1:
        raise ValueError("max_concurrent must be >= 1")
    params = _checked_score_parameters(score_parameters)
    # The champion and the partitions are read inside the slot: a run that waited sees the other's work.
    with output_root_slot(output_root):
        champion = None
        if rescore_on_promotion:
            if params.get("model", "champion") != "champion":
                # Outputs of any other model never match the champion: every run would rescore them again.
                raise ValueError("rescore_on_promotion scores with the champion; do not set score_parameters.model")
            champion = _resolve(registry, "champion", required=True)
        # The exact version, not "champion": a promotion during this run must not give some
        # partitions the new champion and leave the rest compared against the old one.  Knowing it
        # also lets discovery restart an output interrupted under another model.
        model = champion or _resolve(registry, params.get("model", "champion"), required=False)
        if model is not None:
            params["model"] = model
        if deployment:
            _check_deployment(deployment)

        found = discover_partitions(input_root, output_root, champion, model)
        partitions = [Partition(**p) for p in found["to_score"]]
        summary: dict[str, Any] = {"scored": {}, "skipped_complete": found["skipped_complete"],
                                   "not_ready": found["not_ready"], "failed": {}}
        if partitions:
            runner = ThreadPoolTaskRunner(max_workers=max_concurrent)
            with runner:
                futures = runner.map(score_partition.prefect, parameters={
                    "partition": partitions, "deployment": unmapped(deployment), "registry": unmapped(registry),
                    "score_parameters": unmapped(params),
                    "subflow": unmapped(None if deployment else score_reviews)})
                for partition, future in zip(partitions, futures):
                    future.wait()
                    if future.state.is_completed():
                        summary["scored"][partition.name] = future.result()
                    else:
                        error = future.result(raise_on_failure=False)
                        summary["failed"][partition.name] = str(error) if isinstance(error, BaseException) \
                            else (future.state.message or future.state.name)
                        logger().error("partition %s failed: %s", partition.name, summary["failed"][partition.name])
    markdown("score-new-dumps", _summary_markdown(summary), "Partitions scored, failed, not ready")
    if summary["failed"]:
        return Failed(message=f"{len(summary['failed'])} of {len(partitions)} partition(s) failed: "
                              f"{', '.join(summary['failed'])}", data=summary)
    return summary
