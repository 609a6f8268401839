"""The steps of a scoring run as plain functions: choose the model, plan the units, score one
unit, assemble the manifest.

``tasks/scoring.py`` wraps each in a Prefect task (retries, the run's logger, artifacts); tests
call them directly.  Everything a step does to the output goes through its
:class:`~models.output_dataset.OutputDataset`, and every URI is resolved with the run's storage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from infra import dump_reader, storage
from infra.dump_reader import Unit
from infra.part_writer import PartWriter
from infra.run_storage import RunStorage
from models import output_accounting as accounting
from models.dump_profile import SCORE_BINS, DumpProfile
from models.output_dataset import HISTOGRAM_BINS, OutputDataset, ScoringError
from models.predictors import Predictor, rows_per_batch
from models.preprocessing import Preprocessing
from models.registry import ModelRegistry
from models.run_drift import Drift
from models.scoring import (
    BatchResult,
    ScoringSpec,
    check_schema,
    output_schema,
    rejected_schema,
    score_batch,
)

Log = logging.Logger | logging.LoggerAdapter
_LOG = logging.getLogger("reviews")


def choose_model(registry_uri: str, model: str = "champion", vocabulary: bool = False,
                 run_storage: RunStorage | None = None, log: Log = _LOG) -> dict[str, Any]:
    """``champion``/``latest``/a version -> the exact version, with what scoring needs of it.

    ``vocabulary``: also return the model's vocabulary (JSON), for scoring raw text.
    """
    registry = ModelRegistry((run_storage or RunStorage()).resolve(registry_uri))
    version = registry.resolve(model)
    meta = registry.metadata(version)
    log.info("scoring with model %s (%s) from %s", version, model, registry.root.uri)
    chosen = {"version": version, "registry": registry.root.uri, "preset": meta.get("preset"),
              "preprocessing": meta["preprocessing"], "has_vocabulary": "vocabulary.json" in meta.get("files", {}),
              # What the version's evaluation data looked like (models/dump_profile.py); None before profiles.
              "drift_reference": meta.get("drift_reference")}
    if vocabulary:
        chosen["vocabulary"] = registry.vocabulary(version)
    return chosen


def scoring_spec(model: dict[str, Any], threshold: float = 0.5, id_column: str = "review_id",
                 tokens_column: str = "tokens", text_column: str | None = None,
                 on_duplicate_id: str = "keep") -> ScoringSpec:
    """The run's spec from the chosen model (see :func:`choose_model`) and the flow's options."""
    vocabulary = None
    if text_column and model.get("vocabulary") is not None:
        from models.text import Vocabulary

        vocabulary = Vocabulary.from_json(model["vocabulary"])
    return ScoringSpec(preprocessing=Preprocessing.from_dict(model["preprocessing"]), model_version=model["version"],
                       threshold=threshold, id_column=id_column, tokens_column=tokens_column,
                       text_column=text_column, vocabulary=vocabulary, on_duplicate_id=on_duplicate_id)


def unit_layout(input_uri: str, max_rows_per_unit: int, spec: ScoringSpec) -> str:
    """What decides a run's part names and contents besides the model: part of its output claim.

    The string is compared with other runs' claims, including runs of older code: keep its form.
    """
    return (f"{input_uri}|{max_rows_per_unit}|{spec.id_column}|{spec.tokens_column}|{spec.text_column}|"
            f"{spec.threshold}|{spec.on_duplicate_id}")


def plan(input_uri: str, output: OutputDataset, spec: ScoringSpec, max_rows_per_unit: int,
         overwrite: bool, log: Log = _LOG) -> dict[str, Any]:
    """Find the inputs, read their footers, cut row-group units; refuse to mix outputs."""
    base, files = dump_reader.find_inputs(input_uri, output.storage.resolve)
    fs = base.fs
    plans = [dump_reader.plan_file(fs, f, max_rows_per_unit, lambda s: check_schema(s, spec)) for f in files]
    for p in plans:
        if p.error:
            log.error("cannot score %s", p.error)
    readable = [p for p in plans if not p.error]
    try:
        id_type = accounting.unify_id_types([(p.file.uri, p.schema.field(spec.id_column).type) for p in readable],
                                            spec.id_column)
    except ValueError as exc:
        raise ScoringError(str(exc)) from exc
    duplicates = accounting.duplicates_in_plan(fs, readable, spec.id_column, id_type) \
        if spec.on_duplicate_id == "reject" else {}
    units = [u for p in plans for u in p.units]
    output.check_no_other_inputs([u.unit_id for u in units], overwrite)
    return {
        "input": input_uri,
        "files": [{**asdict(p.file), "rows": p.rows, "row_groups": p.row_groups,
                   "units": [u.unit_id for u in p.units], "error": p.error} for p in plans],
        "units": [u.to_dict() for u in units],
        "rows": sum(p.rows for p in plans if not p.error),
        "id_type": id_type,
        "duplicates": duplicates,
    }


# A record batch's working set (its padded matrix, the predictor's reordered copy) grows with
# rows x maxlen: cap the rows so that long-maxlen models do not hold more memory per batch.
# 4,096 rows at the default preset's maxlen 500 (an 8 MB matrix): the fast predictor sorts each
# record batch by length, and a pool of 4,096 gives tighter windows and longer padding-free spans
# than 1,048 rows (bench/README.md), while 8,192 was no faster and held more memory.
BATCH_TOKENS = 4096 * 512


def record_batch_rows(batch_size: int, maxlen: int) -> int:
    """Rows per record batch: ``batch_size``, fewer when ``maxlen`` makes rows wide."""
    return rows_per_batch(maxlen, tokens=BATCH_TOKENS, cap=batch_size, floor=256)


def unit_result(unit: Unit, meta: dict[str, Any], skipped: bool, seconds: float,
                model_seconds: float = 0.0) -> dict[str, Any]:
    # model_seconds: time spent getting the predictor (loading it, or waiting for another unit of
    # this process to load it); the rest of ``seconds`` is this unit's own work.
    return {"unit_id": unit.unit_id, "file": unit.file_uri, "row_groups": unit.row_groups,
            "rows_in": meta["rows_in"], "rows_scored": meta["rows_scored"], "rows_rejected": meta["rows_rejected"],
            "skipped": skipped, "seconds": round(seconds, 3), "model_seconds": round(model_seconds, 3),
            "error": meta.get("error"), "profile": meta.get("profile")}


def score_unit(unit: dict[str, Any], output: OutputDataset, spec: ScoringSpec,
               load_predictor: Callable[[], Predictor], batch_size: int = 8192,
               duplicates: dict[int, str] | None = None, on_rows: Callable[[int], None] = lambda rows: None,
               log: Log = _LOG) -> dict[str, Any]:
    """Score one file x row-group range; publish its part atomically; return counts only.

    A unit whose part is already committed is skipped (a resumed run).  ``load_predictor`` is
    called only for a unit that needs scoring; ``on_rows`` hears of every batch of rows done.
    ``duplicates``: this unit's rows (file row -> reason) to reject as later occurrences of an id.
    """
    start = time.perf_counter()
    u = Unit(**unit)
    done = output.finished_part(u.unit_id, spec)
    if done is not None:
        on_rows(done["rows_in"])
        return unit_result(u, done, skipped=True, seconds=time.perf_counter() - start)

    t = time.perf_counter()
    predictor = load_predictor()
    model_seconds = time.perf_counter() - t
    fs = output.storage.resolve(u.file_uri).fs
    base = {"model_version": spec.model_version, "unit_id": u.unit_id, "source": u.file_uri,
            "on_duplicate_id": spec.on_duplicate_id,
            "id_type": str(spec.output_id_type) if spec.output_id_type is not None else None}
    rejects = accounting.RowRejects(duplicates)

    def writers(id_type: pa.DataType) -> tuple[PartWriter, PartWriter]:
        return (PartWriter(output.part(u.unit_id), output_schema(id_type), base),
                PartWriter(output.rejected_part(u.unit_id), rejected_schema(id_type), base))

    error = None
    id_type = spec.output_id_type or pa.string()
    profile = DumpProfile.empty(spec.preprocessing.num_words)
    try:
        pf = dump_reader.open_parquet(fs, u.path)
        # Every part has the run's one id type (unified at planning), even when a unit yields no rows.
        id_type = spec.output_id_type or pf.schema_arrow.field(spec.id_column).type
        scored, rejected = writers(id_type)
        rows = record_batch_rows(batch_size, spec.preprocessing.maxlen)
        for first_row, batch in dump_reader.iter_unit_batches(pf, u, [spec.id_column, spec.input_column], rows):
            result: BatchResult = score_batch(batch, spec, predictor, source=u.file_uri, first_row=first_row,
                                              extra_rejects=rejects.for_batch(first_row, batch.num_rows))
            scored.write(result.scored)
            rejected.write(result.rejected)
            profile = profile.merge(result.profile)
            on_rows(batch.num_rows)
    except (OSError, pa.ArrowException) as exc:
        if storage.is_transient(exc):
            raise
        # Corrupt data inside a row group: the unit's rows cannot be read, so they are
        # reported (not silently dropped) and the rest of the dump still scores.
        error = f"{u.file_uri} row groups {u.row_groups[0]}-{u.row_groups[-1]}: {dump_reader.one_line(exc)}"
        log.error("cannot read %s", error)
        scored, rejected = writers(id_type)  # an empty part: the unit is accounted for
        profile = DumpProfile.empty(spec.preprocessing.num_words)  # and none of its rows were scored
    counts = {"rows_in": u.rows, "rows_scored": scored.rows,
              "rows_rejected": u.rows - scored.rows if error else rejected.rows, "error": error}
    if error is None and scored.rows + rejected.rows != u.rows:
        raise ScoringError(f"{u.file_uri}: unit {u.unit_id} read {scored.rows + rejected.rows} rows, "
                           f"footer says {u.rows}")
    if rejected.rows:
        rejected.commit(counts)
    # The profile travels in the part's footer, so a resumed run that skips this unit still has it.
    counts["profile"] = profile.to_dict()
    scored.commit(counts)  # the unit's commit point: its existence means "done"
    return unit_result(u, counts, skipped=False, seconds=time.perf_counter() - start, model_seconds=model_seconds)


def build_manifest(output: OutputDataset, plan: dict[str, Any], results: list[dict[str, Any]],
                   model: dict[str, Any], parameters: dict[str, Any], started_at: str, seconds: float,
                   units_seconds: float | None = None, drift: Drift | None = None) -> dict[str, Any]:
    """``_manifest.json``'s content: inputs, units, totals, score histogram, drift and timings.

    ``drift``: the run's drift step (models/run_drift.py); its merged profile holds the same score
    counts as a re-read of the output (the same float32 scores, the same bins), so the output is
    read again only when some unit's part carries no profile.
    """
    files = accounting.account_files(plan["files"], results)
    totals = accounting.totals(files, results)
    if drift is not None and drift.profile is not None and SCORE_BINS == HISTOGRAM_BINS:
        hist = list(drift.profile.score)
    else:
        hist = output.histogram()
    return {
        "model": {"version": model["version"], "registry": model["registry"], "preset": model["preset"]},
        "input": plan["input"],
        "output": output.location.uri,
        "parameters": parameters,
        "inputs": files,
        # A unit's profile stays in its part's footer; the merged one is in "drift".
        "units": [{k: v for k, v in r.items() if k != "profile"} for r in results],
        "id_type": str(plan["id_type"]) if plan.get("id_type") is not None else None,
        "totals": {**totals, "duplicate_ids": output.duplicate_ids()},
        "score_histogram": {"bins": [f"{i / HISTOGRAM_BINS:.1f}-{(i + 1) / HISTOGRAM_BINS:.1f}"
                                     for i in range(HISTOGRAM_BINS)], "counts": hist},
        "drift": drift.section if drift is not None else None,
        "timings": {"started_at": started_at, "finished_at": datetime.now(UTC).isoformat(),
                    "seconds": round(seconds, 3),
                    # wall time of the units phase (first unit submitted to last result back)
                    "units_seconds": round(units_seconds, 3) if units_seconds is not None else None,
                    "rows_per_second": round(totals["rows_in"] / seconds, 1) if seconds > 0 else None},
    }
