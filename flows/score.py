"""``score-reviews``: Parquet review dumps in, predictions out (local disk or S3)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from infra import progress
from infra.settings import default_registry
from models.preprocessing import Preprocessing
from models.registry import ModelRegistry
from models.scoring import ScoringSpec
from tasks.reporting import rename_run, short_uri
from tasks.scoring import (
    ClaimHeartbeat,
    claim_output,
    clear_output,
    finalize,
    plan_scoring,
    resolve_model,
    score_unit,
)


def unit_runner(dask_address: str | None):
    """Units run on an existing Dask cluster when one is named, else on local threads.

    Units are coarse (file x row-group ranges) and return only counts, so even a large
    dump stays a modest number of task runs with small results.
    """
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=2)


def _run_id() -> str:
    from prefect.runtime import flow_run

    return flow_run.id or uuid.uuid4().hex


def _load_vocabulary(registry_uri: str, version: str):
    from models.text import Vocabulary

    vocab = ModelRegistry(registry_uri).vocabulary(version)
    return Vocabulary.from_json(vocab) if vocab is not None else None


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"score-{short_uri(p.get('input', '?'))}-{p.get('model', 'champion')}"


@flow(name="score-reviews", validate_parameters=True, log_prints=True, flow_run_name=_run_name)
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
) -> dict[str, Any]:
    started_at = datetime.now(timezone.utc).isoformat()
    start = time.perf_counter()
    parameters = {k: v for k, v in locals().items() if k not in ("started_at", "start")}
    if not 0.0 <= threshold <= 1.0 or not 0.0 <= max_reject_fraction <= 1.0:
        raise ValueError("threshold and max_reject_fraction must be within [0, 1]")
    if batch_size < 1 or max_rows_per_unit < 1:
        raise ValueError("batch_size and max_rows_per_unit must be >= 1")
    registry_uri = registry or default_registry()
    chosen = resolve_model(registry_uri, model)
    rename_run(f"score-{short_uri(input)}-{chosen['version']}", only_if_named=_run_name())
    spec = ScoringSpec(
        preprocessing=Preprocessing.from_dict(chosen["preprocessing"]),
        model_version=chosen["version"],
        threshold=threshold,
        id_column=id_column,
        tokens_column=tokens_column,
        text_column=text_column,
        vocabulary=_load_vocabulary(registry_uri, chosen["version"]) if text_column else None,
        on_duplicate_id=on_duplicate_id,
    )
    layout = f"{input}|{max_rows_per_unit}|{id_column}|{tokens_column}|{text_column}|{threshold}|{on_duplicate_id}"
    claim = claim_output(output, chosen["version"], _run_id(), layout)
    with ClaimHeartbeat(output, claim):
        if overwrite:
            clear_output(output)
        plan = plan_scoring(input, output, spec, max_rows_per_unit, overwrite)
        spec = dataclasses.replace(spec, output_id_type=plan["id_type"])
        bar = progress.bar(plan["rows"])
        runner = unit_runner(dask_address or os.environ.get("REVIEWS_DASK_ADDRESS"))
        # No tags on the units: Prefect asks the API for tag concurrency slots for every tagged
        # task run, which cost more than a small unit's scoring (the version is in the run name).
        with runner, bar if bar is not None else contextlib.nullcontext():
            units_start = time.perf_counter()
            futures = runner.map(score_unit, parameters={
                "unit": plan["units"], "output_uri": unmapped(output), "spec": unmapped(spec),
                "registry_uri": unmapped(registry_uri), "batch_size": unmapped(batch_size),
                "predictor_kind": unmapped(predictor),
                "duplicates": [plan["duplicates"].get(u["unit_id"]) for u in plan["units"]]})
            results = [f.result() for f in futures]
            units_seconds = time.perf_counter() - units_start
        manifest = finalize(output, plan, results, chosen, parameters, started_at, time.perf_counter() - start,
                            max_reject_fraction, units_seconds, allow_failed_files)
    t = manifest["totals"]
    return {"rows_in": t["rows_in"], "rows_scored": t["rows_scored"], "rows_rejected": t["rows_rejected"],
            "files": t["files"], "files_failed": t["files_failed"], "duplicate_ids": t["duplicate_ids"],
            "model_version": chosen["version"],
            "seconds": manifest["timings"]["seconds"], "output": manifest["output"]}

