"""``score-reviews``: Parquet review dumps in, predictions out (local disk or S3)."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from typing import Any, Literal

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from infra import progress
from infra.settings import default_registry
from models.preprocessing import Preprocessing
from models.registry import ModelRegistry
from models.scoring import ScoringSpec
from tasks.scoring import clear_output, finalize, plan_scoring, resolve_model, score_unit


def _load_vocabulary(registry_uri: str, version: str):
    from models.text import Vocabulary

    vocab = ModelRegistry(registry_uri).vocabulary(version)
    return Vocabulary.from_json(vocab) if vocab is not None else None


@flow(name="score-reviews", validate_parameters=True, log_prints=True,
      task_runner=ThreadPoolTaskRunner(max_workers=2))
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
    predictor: Literal["auto", "onnx", "keras"] = "auto",
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
    spec = ScoringSpec(
        preprocessing=Preprocessing.from_dict(chosen["preprocessing"]),
        model_version=chosen["version"],
        threshold=threshold,
        id_column=id_column,
        tokens_column=tokens_column,
        text_column=text_column,
        vocabulary=_load_vocabulary(registry_uri, chosen["version"]) if text_column else None,
    )
    if overwrite:
        clear_output(output)
    plan = plan_scoring(input, output, spec, max_rows_per_unit, overwrite)
    bar = progress.bar(plan["rows"])
    with bar if bar is not None else contextlib.nullcontext():
        futures = score_unit.map(plan["units"], unmapped(output), unmapped(spec), unmapped(registry_uri),
                                 unmapped(batch_size), unmapped(predictor))
        results = [f.result() for f in futures]
    manifest = finalize(output, plan, results, chosen, parameters, started_at, time.perf_counter() - start,
                        max_reject_fraction)
    t = manifest["totals"]
    return {"rows_in": t["rows_in"], "rows_scored": t["rows_scored"], "rows_rejected": t["rows_rejected"],
            "files": t["files"], "files_failed": t["files_failed"], "model_version": chosen["version"],
            "seconds": manifest["timings"]["seconds"], "output": manifest["output"]}

