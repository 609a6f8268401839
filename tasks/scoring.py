"""Scoring tasks: resolve the model, claim and plan the output, score a unit, publish the manifest.

Each body is a few lines around :mod:`models.scoring_steps` and
:class:`models.output_dataset.OutputDataset`: the tasks add retries, the run's logger, the
progress line and artifacts.  ``output`` is an ``OutputDataset`` (it carries the run's storage,
resolved once by the flow) or, for a caller outside the flow, a bare URI.
"""

from __future__ import annotations

from typing import Any

from infra.run_storage import RunStorage
from models import run_drift, scoring_steps
from models.dump_profile import DRIFT_THRESHOLD
from models.output_dataset import CLAIM_TTL_SECONDS, OutputDataset, ScoringError
from models.predictor_cache import cached_predictor
from models.scoring import ScoringSpec
from tasks import events, progress
from tasks.lazy_task import task
from tasks.reporting import in_run, inline_png, logger, markdown, table
from tasks.retries import TRANSIENT_RETRIES

__all__ = ["ScoringError", "claim_output", "clear_output", "finalize", "plan_scoring", "resolve_model",
           "score_unit"]


@task(name="resolve-model", **TRANSIENT_RETRIES)
def resolve_model(registry_uri: str, model: str = "champion", vocabulary: bool = False,
                  run_storage: RunStorage | None = None) -> dict[str, Any]:
    """``champion``/``latest``/a version -> the exact version, resolved once per run."""
    return scoring_steps.choose_model(registry_uri, model, vocabulary, run_storage, logger())


@task(name="plan-scoring", **TRANSIENT_RETRIES)
def plan_scoring(input_uri: str, output: str | OutputDataset, spec: ScoringSpec, max_rows_per_unit: int,
                 overwrite: bool) -> dict[str, Any]:
    """Find the inputs, read their footers, cut row-group units; refuse to mix outputs."""
    return scoring_steps.plan(input_uri, OutputDataset.of(output), spec, max_rows_per_unit, overwrite, logger())


@task(name="claim-output", **TRANSIENT_RETRIES)
def claim_output(output: str | OutputDataset, model_version: str, run_id: str, layout: str = "",
                 ttl_seconds: float = CLAIM_TTL_SECONDS) -> str:
    """Stake a claim on the output so that no two incompatible runs write into it at once."""
    return OutputDataset.of(output).claim(model_version, run_id, layout, ttl_seconds, logger())


@task(name="clear-output", **TRANSIENT_RETRIES)
def clear_output(output: str | OutputDataset) -> int:
    """overwrite=true: remove earlier parts, rejects and markers before scoring again."""
    return OutputDataset.of(output).clear()


@task(name="score-unit", task_run_name="score-unit-{unit[unit_id]}", **TRANSIENT_RETRIES)
def score_unit(unit: dict[str, Any], output: str | OutputDataset, spec: ScoringSpec, registry_uri: str,
               batch_size: int = 8192, predictor_kind: str = "auto",
               duplicates: dict[int, str] | None = None) -> dict[str, Any]:
    """Score one file x row-group range; publish its part atomically; return counts only."""
    out = OutputDataset.of(output)
    return scoring_steps.score_unit(
        unit, out, spec, lambda: cached_predictor(registry_uri, spec.model_version, predictor_kind, out.storage),
        batch_size, duplicates, progress.advance, logger())


@task(name="finalize-scoring", **TRANSIENT_RETRIES)
def finalize(output: str | OutputDataset, plan: dict[str, Any], results: list[dict[str, Any]],
             model: dict[str, Any], parameters: dict[str, Any], started_at: str, seconds: float,
             max_reject_fraction: float, units_seconds: float | None = None,
             allow_failed_files: bool = False, drift_threshold: float = DRIFT_THRESHOLD,
             fail_on_drift: bool = False) -> dict[str, Any]:
    """Write ``_manifest.json`` and ``_SUCCESS``; publish artifacts; enforce the reject limit and,
    with ``fail_on_drift``, the drift threshold; emit ``reviews.dump.scored``.

    The manifest and artifacts are published even when the output cannot be marked complete:
    they say why.
    """
    out = OutputDataset.of(output)
    drift = run_drift.assess(results, model.get("drift_reference"), model["version"],
                             model["preprocessing"].get("num_words"), drift_threshold, fail_on_drift)
    manifest = scoring_steps.build_manifest(out, plan, results, model, parameters, started_at, seconds,
                                            units_seconds, drift)
    out.write_manifest(manifest)
    files = manifest["inputs"]
    table("scoring-files", [{k: f[k] for k in ("uri", "rows_in", "rows_scored", "rows_rejected", "error")}
                            for f in files], "Rows in / scored / rejected per input file")
    if in_run():  # the picture costs a matplotlib import: only for a run someone can look at
        markdown("scoring-summary", _summary_markdown(manifest, drift),
                 "Scoring totals, throughput, score histogram and the dump's profile against the model's")
    markdown("drift-report", drift.markdown, "This dump against the model's evaluation data: PSI and JS per feature")
    (logger().warning if drift.drifted else logger().info)(
        "drift: %s%s", drift.verdict, f" ({', '.join(drift.drifted)})" if drift.drifted else "")
    try:
        out.commit(files, manifest["totals"], [r["unit_id"] for r in results], max_reject_fraction,
                   allow_failed_files, refuse=run_drift.failure(drift, out.location.uri))
    except run_drift.DriftFailure:
        # Scored in full, only not accepted: automations hear of it like of a finished dump.
        events.emit(events.DUMP_SCORED, *events.dump_scored(manifest, complete=False))
        raise
    events.emit(events.DUMP_SCORED, *events.dump_scored(manifest, complete=True))
    return manifest


def _summary_markdown(m: dict[str, Any], drift: run_drift.Drift | None = None) -> str:
    t, tm = m["totals"], m["timings"]
    peak = max(m["score_histogram"]["counts"]) or 1
    hist = "\n".join(f"| {b} | {c:,} | {'█' * round(20 * c / peak)} |"
                     for b, c in zip(m["score_histogram"]["bins"], m["score_histogram"]["counts"]))
    return (f"## Scoring with model `{m['model']['version']}`\n\n"
            f"| rows in | scored | rejected | files | failed files | seconds | rows/s |\n|---|---|---|---|---|---|---|\n"
            f"| {t['rows_in']:,} | {t['rows_scored']:,} | {t['rows_rejected']:,} | {t['files']} | "
            f"{t['files_failed']} | {tm['seconds']} | {tm['rows_per_second']} |\n\n"
            f"### Score histogram\n\n{_profile_picture(drift)}"
            f"| score | reviews | |\n|---|---|---|\n{hist}\n\nOutput: `{m['output']}`"
            + (f"\n\nDrift: **{d['verdict']}**{' (' + ', '.join(d['drifted']) + ')' if d['drifted'] else ''}; "
               "see the drift-report artifact" if (d := m.get("drift")) else ""))


def _profile_picture(drift: run_drift.Drift | None) -> str:
    """The dump's scores, lengths and token ids beside the model's evaluation data, as markdown."""
    if drift is None or drift.profile is None:
        return ""
    from models.profile_chart import profile_png

    return inline_png("score histogram, review lengths and token ids: this dump and the model's evaluation data",
                      profile_png(drift.profile, drift.reference)) + "\n\n"
