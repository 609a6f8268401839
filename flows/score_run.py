"""The ``score-reviews`` run: its parameters (one signature), its body and how tracked steps run.

:func:`score_run` is the whole body, told by a ``steps`` object how to run each step.  The
flow (``flows/score.py``) is :func:`score_reviews` under Prefect's ``@flow`` and passes
:class:`TrackedSteps`: every step a Prefect task run, the units on a Prefect task runner.
``reviews score`` with no Prefect API passes ``flows.untracked.UntrackedSteps``: the same
tasks' bodies (``task.fn``) with their retry policy, the units on local threads.  Nothing here
imports Prefect until a tracked step runs, so the untracked run never loads it (about 1 s).
"""

# No ``from __future__ import annotations``: flows/score.py's wrapper carries these annotations as
# objects, and Prefect would otherwise resolve their names in that module.
import contextlib
import dataclasses
import os
import time
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, Literal, Protocol

from infra.run_storage import RunStorage
from infra.settings import default_registry
from models.dump_profile import DRIFT_THRESHOLD
from models.output_dataset import ClaimHeartbeat, OutputDataset
from models.scoring_steps import scoring_spec, unit_layout
from tasks import progress
from tasks.lazy_task import LazyTask
from tasks.reporting import in_run, logger, rename_run, short_uri, tag_run
from tasks.scoring import (
    claim_output,
    clear_output,
    finalize,
    plan_scoring,
    resolve_model,
    score_unit,
)

# Units at once on one machine: two cores, and a unit mostly computes (ONNX Runtime, Arrow).
UNIT_THREADS = 2


def unit_runner(dask_address: str | None):
    """Units run on an existing Dask cluster when one is named, else on local threads.

    Units are coarse (file x row-group ranges) and return only counts, so even a large
    dump stays a modest number of task runs with small results.
    """
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=UNIT_THREADS)


class Steps(Protocol):
    """How :func:`score_run` runs its steps: one task at a time, and the units all together."""

    def run(self, task: LazyTask, *args: Any, **kwargs: Any) -> Any: ...

    def map(self, task: LazyTask, mapped: dict[str, list[Any]], shared: dict[str, Any],
            dask_address: str | None) -> list[Any]:
        """``task`` once per position of the ``mapped`` lists (all of one length), with ``shared``."""
        ...


class TrackedSteps:
    """Every step a Prefect task run of the current flow run; units on :func:`unit_runner`'s runner."""

    def run(self, task: LazyTask, *args: Any, **kwargs: Any) -> Any:
        return task(*args, **kwargs)

    def map(self, task: LazyTask, mapped: dict[str, list[Any]], shared: dict[str, Any],
            dask_address: str | None) -> list[Any]:
        from prefect import unmapped

        runner = unit_runner(dask_address)
        with runner:
            futures = runner.map(task.prefect, parameters={**mapped, **{k: unmapped(v) for k, v in shared.items()}})
            return [f.result() for f in futures]


def _run_id() -> str:
    if not in_run():
        return uuid.uuid4().hex
    from prefect.runtime import flow_run

    return flow_run.id or uuid.uuid4().hex


def run_name() -> str:
    """The flow run's name until the model version is known (``flow_run_name``)."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"score-{short_uri(p.get('input', '?'))}-{p.get('model', 'champion')}"


def score_run(parameters: dict[str, Any], steps: Steps) -> dict[str, Any]:
    """A score-reviews run with the flow's ``parameters`` (all of them, defaults applied).

    Tracked or not, this is the one body: what differs is only how ``steps`` runs a task.
    """
    started_at = datetime.now(UTC).isoformat()
    start = time.perf_counter()
    p = SimpleNamespace(**parameters)
    if not 0.0 <= p.threshold <= 1.0 or not 0.0 <= p.max_reject_fraction <= 1.0:
        raise ValueError("threshold and max_reject_fraction must be within [0, 1]")
    if p.batch_size < 1 or p.max_rows_per_unit < 1:
        raise ValueError("batch_size and max_rows_per_unit must be >= 1")
    registry_uri = p.registry or default_registry()
    # S3 settings once for the whole run (a credential chain or a Prefect block load each time).
    run_storage = RunStorage.for_uris(p.input, p.output, registry_uri)
    chosen = steps.run(resolve_model, registry_uri, p.model, vocabulary=bool(p.text_column), run_storage=run_storage)
    if in_run():
        rename_run(f"score-{short_uri(p.input)}-{chosen['version']}", only_if_named=run_name())
    tag_run("reviews", "scoring")  # README: runs started from the CLI are tagged as deployments' are
    spec = scoring_spec(chosen, p.threshold, p.id_column, p.tokens_column, p.text_column, p.on_duplicate_id)
    out = OutputDataset(p.output, run_storage)
    claim = steps.run(claim_output, out, chosen["version"], _run_id(),
                      unit_layout(p.input, p.max_rows_per_unit, spec))
    with ClaimHeartbeat(out, claim, log=logger()):
        if p.overwrite:
            steps.run(clear_output, out)
        plan = steps.run(plan_scoring, p.input, out, spec, p.max_rows_per_unit, p.overwrite)
        spec = dataclasses.replace(spec, output_id_type=plan["id_type"])
        bar = progress.bar(plan["rows"])
        with bar if bar is not None else contextlib.nullcontext():
            units_start = time.perf_counter()
            # No tags on the units: Prefect asks the API for tag concurrency slots for every tagged
            # task run, which cost more than a small unit's scoring (the version is in the run name).
            results = steps.map(
                score_unit,
                mapped={"unit": plan["units"],
                        "duplicates": [plan["duplicates"].get(u["unit_id"]) for u in plan["units"]]},
                shared={"output": out, "spec": spec, "registry_uri": registry_uri, "batch_size": p.batch_size,
                        "predictor_kind": p.predictor},
                dask_address=p.dask_address or os.environ.get("REVIEWS_DASK_ADDRESS"))
            units_seconds = time.perf_counter() - units_start
        manifest = steps.run(finalize, out, plan, results, chosen, parameters, started_at,
                             time.perf_counter() - start, p.max_reject_fraction, units_seconds,
                             p.allow_failed_files, p.drift_threshold, p.fail_on_drift)
    t = manifest["totals"]
    return {"rows_in": t["rows_in"], "rows_scored": t["rows_scored"], "rows_rejected": t["rows_rejected"],
            "files": t["files"], "files_failed": t["files_failed"], "duplicate_ids": t["duplicate_ids"],
            "model_version": chosen["version"],
            "seconds": manifest["timings"]["seconds"], "output": manifest["output"]}


def score_reviews(
    input: str,
    output: str,
    model: str = "champion",
    registry: str | None = None,
    batch_size: int = 8192,
    threshold: float = 0.5,
    id_column: str = "review_id",
    tokens_column: str = "tokens",
    text_column: str | None = None,
    max_rows_per_unit: int = 200_000,
    max_reject_fraction: float = 0.05,
    overwrite: bool = False,
    predictor: Literal["auto", "fast", "onnx", "keras", "int8"] = "auto",
    dask_address: str | None = None,
    allow_failed_files: bool = False,
    on_duplicate_id: Literal["keep", "reject"] = "keep",
    drift_threshold: float = DRIFT_THRESHOLD,
    fail_on_drift: bool = False,
) -> dict[str, Any]:
    """The score-reviews flow's parameters and body (``flows/score.py`` makes it the flow)."""
    # Every parameter, by name: a parameter added to the signature reaches the run (and its
    # manifest) with no second list to update here or in the CLI.
    return score_run(dict(locals()), TrackedSteps())

