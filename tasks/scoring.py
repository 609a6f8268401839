"""Scoring tasks: resolve the model, plan units, score a unit, publish the manifest."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task
from prefect.cache_policies import NO_CACHE

from infra import dumps, progress, storage
from models import output_accounting as accounting
from models.predictors import rows_per_batch
from models.registry import ModelRegistry, cached_predictor
from models.scoring import (
    BatchResult,
    ScoringSpec,
    check_schema,
    output_schema,
    rejected_schema,
    score_batch,
)
from tasks.reporting import logger, markdown, table
from tasks.retries import TRANSIENT_RETRIES


class ScoringError(RuntimeError):
    """The scoring run cannot go on or must fail (mixed outputs, too many rejects)."""


@task(name="resolve-model", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def resolve_model(registry_uri: str, model: str = "champion") -> dict[str, Any]:
    """``champion``/``latest``/a version -> the exact version, resolved once per run."""
    registry = ModelRegistry(registry_uri)
    version = registry.resolve(model)
    meta = registry.metadata(version)
    logger().info("scoring with model %s (%s) from %s", version, model, registry.root.uri)
    return {"version": version, "registry": registry.root.uri, "preset": meta.get("preset"),
            "preprocessing": meta["preprocessing"], "has_vocabulary": "vocabulary.json" in meta.get("files", {})}


def part_name(unit_id: str) -> str:
    return f"part-{unit_id}.parquet"


@task(name="plan-scoring", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def plan_scoring(input_uri: str, output_uri: str, spec: ScoringSpec, max_rows_per_unit: int,
                 overwrite: bool) -> dict[str, Any]:
    """Find the inputs, read their footers, cut row-group units; refuse to mix outputs."""
    base, files = dumps.find_inputs(input_uri)
    fs = base.fs
    plans = [dumps.plan_file(fs, f, max_rows_per_unit, lambda s: check_schema(s, spec)) for f in files]
    for p in plans:
        if p.error:
            logger().error("cannot score %s", p.error)
    readable = [p for p in plans if not p.error]
    try:
        id_type = accounting.unify_id_types([(p.file.uri, p.schema.field(spec.id_column).type) for p in readable],
                                            spec.id_column)
    except ValueError as exc:
        raise ScoringError(str(exc)) from exc
    duplicates = accounting.duplicates_in_plan(fs, readable, spec.id_column, id_type) \
        if spec.on_duplicate_id == "reject" else {}
    units = [u for p in plans for u in p.units]
    out = storage.resolve(output_uri)
    wanted = {part_name(u.unit_id) for u in units}
    existing = {i.base_name for i in storage.list_files(out, recursive=False)
                if i.base_name.startswith("part-")}
    stray = sorted(existing - wanted)
    if stray and not overwrite:
        raise ScoringError(
            f"{out.uri} already holds {len(stray)} part(s) from other inputs (e.g. {stray[0]}); "
            "use overwrite=true or another output")
    return {
        "input": input_uri,
        "files": [{**asdict(p.file), "rows": p.rows, "row_groups": p.row_groups,
                   "units": [u.unit_id for u in p.units], "error": p.error} for p in plans],
        "units": [u.to_dict() for u in units],
        "rows": sum(p.rows for p in plans if not p.error),
        "id_type": id_type,
        "duplicates": duplicates,
    }


CLAIM_TTL_SECONDS = 120.0
CLAIM_HEARTBEAT_SECONDS = 30.0


def _claim_is_live(claim: dict[str, Any], now: datetime, ttl_seconds: float) -> bool:
    age = (now - datetime.fromisoformat(claim["heartbeat_at"])).total_seconds()
    if age > ttl_seconds:
        return False
    if claim.get("host") == socket.gethostname() and claim.get("pid"):
        try:
            os.kill(int(claim["pid"]), 0)  # a run killed on this machine frees its claim at once
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def _write_claim(out: storage.Location, name: str, claim: dict[str, Any]) -> None:
    claim["heartbeat_at"] = datetime.now(timezone.utc).isoformat()
    try:
        storage.write_json(out.join("_claims", name), claim)
    except FileNotFoundError:  # on disk: another run removed the emptied _claims/ just now
        storage.write_json(out.join("_claims", name), claim)


def _release_claim(out: storage.Location, name: str) -> None:
    """Delete a claim; on disk also ``_claims/`` once empty, so a finished output holds no marker."""
    storage.delete_file(out.join("_claims", name))
    storage.remove_empty_dir(out.join("_claims"))


@task(name="claim-output", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def claim_output(output_uri: str, model_version: str, run_id: str, layout: str = "",
                 ttl_seconds: float = CLAIM_TTL_SECONDS) -> str:
    """Stake a claim on ``output_uri`` so that no two incompatible runs write into it at once.

    Object stores have no atomic create-if-absent, so every run writes its claim first
    and then reads all claims back; any live claim of a different model version or unit
    layout makes this run fail (if two such runs race, both may fail - they never mix).
    Runs with the same model and layout write identical parts and may share an output.
    A claim is live while its run refreshes it (see :class:`ClaimHeartbeat`).
    """
    out = storage.resolve(output_uri)
    name = f"{run_id}.json"
    claim = {"run_id": run_id, "model_version": model_version, "layout": layout, "host": socket.gethostname(),
             "pid": os.getpid(), "created_at": datetime.now(timezone.utc).isoformat()}
    _write_claim(out, name, claim)
    now = datetime.now(timezone.utc)
    for info in storage.list_files(out.join("_claims")):
        if info.base_name == name:
            continue
        try:
            other = storage.read_json(storage.Location(out.fs, info.path, info.path))
        except FileNotFoundError:  # released while we listed
            continue
        if not _claim_is_live(other, now, ttl_seconds):
            # A dead run (killed, or silent past the TTL) never releases its claim: nobody else would.
            try:
                storage.delete_file(storage.Location(out.fs, info.path, info.path))
            except storage.StorageError as exc:  # harmless: it stays dead and is tried again next run
                logger().warning("could not remove the dead run's claim %s: %s", info.path, exc)
            continue
        if (other["model_version"], other.get("layout", "")) != (model_version, layout):
            _release_claim(out, name)
            what = ("model " + other["model_version"]) if other["model_version"] != model_version \
                else "another unit layout"
            raise ScoringError(f"{out.uri} is being written by another run ({what}, run {other['run_id']}); "
                               "one output never mixes runs: wait for it or choose another output")
    return name


class ClaimHeartbeat:
    """Keeps a claim live while the run works; releases it (best effort) at the end."""

    def __init__(self, output_uri: str, name: str, interval: float = CLAIM_HEARTBEAT_SECONDS):
        self.out, self.name, self.interval = storage.resolve(output_uri), name, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def _beat(self) -> None:
        loc = self.out.join("_claims", self.name)
        claim = None
        while not self._stop.wait(self.interval):
            try:
                # Kept in memory after the first read: a claim another run wrongly took for dead
                # (a beat late past the TTL) and deleted comes back with the next beat.
                claim = claim or storage.read_json(loc)
                _write_claim(self.out, self.name, claim)
            except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the claim's life
                logger().warning("could not refresh the output claim %s: %s", loc.uri, exc)

    def __enter__(self) -> "ClaimHeartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            _release_claim(self.out, self.name)
        except Exception as err:  # noqa: BLE001 - never mask the error that ended the run
            logger().warning("could not release the output claim %s: %s", self.name, err)
        return False


@task(name="clear-output", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def clear_output(output_uri: str) -> int:
    """overwrite=true: remove earlier parts, rejects and markers before scoring again."""
    out = storage.resolve(output_uri)
    removed = 0
    for info in storage.list_files(out):
        rel = info.path[len(out.path):].lstrip("/")
        if rel.startswith(("part-", "_rejected/", "_manifest.json", "_SUCCESS")):
            storage.delete_file(storage.Location(out.fs, info.path, info.path))
            removed += 1
    return removed


def _unit_result(unit: dumps.Unit, meta: dict[str, Any], skipped: bool, seconds: float,
                 model_seconds: float = 0.0) -> dict[str, Any]:
    # model_seconds: time spent getting the predictor (loading it, or waiting for another unit of
    # this process to load it); the rest of ``seconds`` is this unit's own work.
    return {"unit_id": unit.unit_id, "file": unit.file_uri, "row_groups": unit.row_groups,
            "rows_in": meta["rows_in"], "rows_scored": meta["rows_scored"], "rows_rejected": meta["rows_rejected"],
            "skipped": skipped, "seconds": round(seconds, 3), "model_seconds": round(model_seconds, 3),
            "error": meta.get("error")}


# A record batch's working set (its padded matrix, the predictor's reordered copy) grows with
# rows x maxlen: cap the rows so that long-maxlen models do not hold more memory per batch.
# 4,096 rows at the default preset's maxlen 500 (an 8 MB matrix): the fast predictor sorts each
# record batch by length, and a pool of 4,096 gives tighter windows and longer padding-free spans
# than 1,048 rows (bench/README.md), while 8,192 was no faster and held more memory.
BATCH_TOKENS = 4096 * 512


def record_batch_rows(batch_size: int, maxlen: int) -> int:
    """Rows per record batch: ``batch_size``, fewer when ``maxlen`` makes rows wide."""
    return rows_per_batch(maxlen, tokens=BATCH_TOKENS, cap=batch_size, floor=256)


@task(name="score-unit", task_run_name="score-unit-{unit[unit_id]}", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def score_unit(unit: dict[str, Any], output_uri: str, spec: ScoringSpec, registry_uri: str,
               batch_size: int = 8192, predictor_kind: str = "auto",
               duplicates: dict[int, str] | None = None) -> dict[str, Any]:
    """Score one file x row-group range; publish its part atomically; return counts only.

    ``duplicates``: this unit's rows (file row -> reason) to reject as later occurrences of an id.
    """
    start = time.perf_counter()
    u = dumps.Unit(**unit)
    out = storage.resolve(output_uri)
    part = out.join(part_name(u.unit_id))
    done = dumps.part_metadata(part)
    if done is not None:
        if done.get("model_version") != spec.model_version:
            raise ScoringError(
                f"{part.uri} was scored by model {done.get('model_version')}, this run uses "
                f"{spec.model_version}; use overwrite=true or another output")
        if done.get("on_duplicate_id", "keep") != spec.on_duplicate_id:
            raise ScoringError(f"{part.uri} was scored with on_duplicate_id={done.get('on_duplicate_id', 'keep')}, "
                               f"this run uses {spec.on_duplicate_id}; use overwrite=true or another output")
        if spec.output_id_type is not None and done.get("id_type") not in (None, str(spec.output_id_type)):
            # e.g. files with wider ids were added to the input since: reusing the part would mix types
            raise ScoringError(f"{part.uri} has {done['id_type']} ids, this run's inputs need "
                               f"{spec.output_id_type}; use overwrite=true or another output")
        progress.advance(done["rows_in"])
        return _unit_result(u, done, skipped=True, seconds=time.perf_counter() - start)

    t = time.perf_counter()
    predictor = cached_predictor(registry_uri, spec.model_version, predictor_kind)
    model_seconds = time.perf_counter() - t
    fs = storage.resolve(u.file_uri).fs
    base = {"model_version": spec.model_version, "unit_id": u.unit_id, "source": u.file_uri,
            "on_duplicate_id": spec.on_duplicate_id,
            "id_type": str(spec.output_id_type) if spec.output_id_type is not None else None}
    rejects = accounting.RowRejects(duplicates)

    def writers(id_type: pa.DataType) -> tuple[dumps.PartWriter, dumps.PartWriter]:
        return (dumps.PartWriter(part, output_schema(id_type), base),
                dumps.PartWriter(out.join("_rejected", part_name(u.unit_id)), rejected_schema(id_type), base))

    error = None
    id_type = spec.output_id_type or pa.string()
    try:
        pf = dumps.open_parquet(fs, u.path)
        # Every part has the run's one id type (unified at planning), even when a unit yields no rows.
        id_type = spec.output_id_type or pf.schema_arrow.field(spec.id_column).type
        scored, rejected = writers(id_type)
        rows = record_batch_rows(batch_size, spec.preprocessing.maxlen)
        for first_row, batch in dumps.iter_unit_batches(pf, u, [spec.id_column, spec.input_column], rows):
            result: BatchResult = score_batch(batch, spec, predictor, source=u.file_uri, first_row=first_row,
                                              extra_rejects=rejects.for_batch(first_row, batch.num_rows))
            scored.write(result.scored)
            rejected.write(result.rejected)
            progress.advance(batch.num_rows)
    except (OSError, pa.ArrowException) as exc:
        if storage.is_transient(exc):
            raise
        # Corrupt data inside a row group: the unit's rows cannot be read, so they are
        # reported (not silently dropped) and the rest of the dump still scores.
        error = f"{u.file_uri} row groups {u.row_groups[0]}-{u.row_groups[-1]}: {dumps._one_line(exc)}"
        logger().error("cannot read %s", error)
        scored, rejected = writers(id_type)  # an empty part: the unit is accounted for
    counts = {"rows_in": u.rows, "rows_scored": scored.rows,
              "rows_rejected": u.rows - scored.rows if error else rejected.rows, "error": error}
    if error is None and scored.rows + rejected.rows != u.rows:
        raise ScoringError(f"{u.file_uri}: unit {u.unit_id} read {scored.rows + rejected.rows} rows, "
                           f"footer says {u.rows}")
    if rejected.rows:
        rejected.commit(counts)
    scored.commit(counts)  # the unit's commit point: its existence means "done"
    return _unit_result(u, counts, skipped=False, seconds=time.perf_counter() - start, model_seconds=model_seconds)


def _histogram(output_uri: str, bins: int = 10) -> list[int]:
    import pyarrow.dataset as ds

    out = storage.resolve(output_uri)
    counts = np.zeros(bins, dtype=np.int64)
    dataset = ds.dataset(out.path, filesystem=out.fs, format="parquet")
    if dataset.schema.get_field_index("score") < 0:  # no parts: every input file failed
        return counts.tolist()
    for batch in dataset.to_batches(columns=["score"]):
        s = batch.column(0).to_numpy(zero_copy_only=False)
        counts += np.histogram(s, bins=bins, range=(0.0, 1.0))[0]
    return counts.tolist()


@task(name="finalize-scoring", cache_policy=NO_CACHE, **TRANSIENT_RETRIES)
def finalize(output_uri: str, plan: dict[str, Any], results: list[dict[str, Any]], model: dict[str, Any],
             parameters: dict[str, Any], started_at: str, seconds: float,
             max_reject_fraction: float, units_seconds: float | None = None,
             allow_failed_files: bool = False) -> dict[str, Any]:
    """Write ``_manifest.json`` and ``_SUCCESS``; publish artifacts; enforce the reject limit.

    ``_SUCCESS`` means every input row is accounted for: files or units that could not be read
    fail the run unless ``allow_failed_files``, and then their rows count as rejected.
    """
    out = storage.resolve(output_uri)
    files = accounting.account_files(plan["files"], results)
    totals = accounting.totals(files, results)
    hist = _histogram(output_uri)
    manifest = {
        "model": {"version": model["version"], "registry": model["registry"], "preset": model["preset"]},
        "input": plan["input"],
        "output": out.uri,
        "parameters": parameters,
        "inputs": files,
        "units": results,
        "id_type": str(plan["id_type"]) if plan.get("id_type") is not None else None,
        "totals": {**totals, "duplicate_ids": accounting.output_duplicate_ids(out)},
        "score_histogram": {"bins": [f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)], "counts": hist},
        "timings": {"started_at": started_at, "finished_at": datetime.now(timezone.utc).isoformat(),
                    "seconds": round(seconds, 3),
                    # wall time of the units phase (first unit submitted to last result back)
                    "units_seconds": round(units_seconds, 3) if units_seconds is not None else None,
                    "rows_per_second": round(totals["rows_in"] / seconds, 1) if seconds > 0 else None},
    }
    storage.write_json(out.join("_manifest.json"), manifest)
    table("scoring-files", [{k: f[k] for k in ("uri", "rows_in", "rows_scored", "rows_rejected", "error")}
                            for f in files], "Rows in / scored / rejected per input file")
    markdown("scoring-summary", _summary_markdown(manifest), "Scoring totals, throughput and score histogram")
    wanted = {part_name(r["unit_id"]) for r in results}
    stray = sorted(i.base_name for i in storage.list_files(out, recursive=False)
                   if i.base_name.startswith("part-") and i.base_name not in wanted)
    if stray:
        raise ScoringError(f"{out.uri} holds {len(stray)} part(s) this run did not plan (e.g. {stray[0]}): another "
                           "run wrote into it; not marking it complete")
    failed = accounting.failed_input_message(files, out.uri)
    if failed and not allow_failed_files:
        raise ScoringError(failed)
    fraction = totals["rows_rejected"] / totals["rows_in"] if totals["rows_in"] else 0.0
    if fraction > max_reject_fraction:
        raise ScoringError(f"{fraction:.1%} of rows were rejected (limit {max_reject_fraction:.1%}); "
                           f"see {out.uri}/_rejected/ and _manifest.json")
    storage.atomic_write(out.join("_SUCCESS"), b"")
    return manifest


def _summary_markdown(m: dict[str, Any]) -> str:
    t, tm = m["totals"], m["timings"]
    peak = max(m["score_histogram"]["counts"]) or 1
    hist = "\n".join(f"| {b} | {c:,} | {'█' * round(20 * c / peak)} |"
                     for b, c in zip(m["score_histogram"]["bins"], m["score_histogram"]["counts"]))
    return (f"## Scoring with model `{m['model']['version']}`\n\n"
            f"| rows in | scored | rejected | files | failed files | seconds | rows/s |\n|---|---|---|---|---|---|---|\n"
            f"| {t['rows_in']:,} | {t['rows_scored']:,} | {t['rows_rejected']:,} | {t['files']} | "
            f"{t['files_failed']} | {tm['seconds']} | {tm['rows_per_second']} |\n\n"
            f"### Score histogram\n\n| score | reviews | |\n|---|---|---|\n{hist}\n\nOutput: `{m['output']}`")
