"""One scoring output, the dataset under one URI, and everything a run does to it.

Layout under the output URI::

    part-<unit>.parquet             the scored rows of one unit; its footer says who wrote it
    _rejected/part-<unit>.parquet   that unit's rejected rows, each with its reason
    _claims/<run>.json              one per run writing here right now (see OutputDataset.claim)
    _manifest.json                  what the run read, scored and rejected
    _SUCCESS                        written last: every input row is accounted for

In ``models/`` rather than ``infra/`` because besides storage it holds the rules of a scoring
run: which runs may share an output, when a finished part may be reused, the reject limit and
the failed-files rule.  Nothing here talks to Prefect: ``tasks/scoring.py`` calls it, and so can
tests.  An :class:`OutputDataset` pickles (URI plus the run's storage), so units on Dask workers
get the same one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from infra import storage
from infra.part_writer import part_metadata
from infra.run_storage import RunStorage
from models import output_accounting as accounting

if TYPE_CHECKING:
    from models.scoring import ScoringSpec

CLAIM_TTL_SECONDS = 120.0
CLAIM_HEARTBEAT_SECONDS = 30.0
# What overwrite=true removes: the outputs of earlier runs, never another run's live claim.
_EARLIER_OUTPUT = ("part-", "_rejected/", "_manifest.json", "_SUCCESS")
HISTOGRAM_BINS = 10

Log = logging.Logger | logging.LoggerAdapter
_LOG = logging.getLogger("reviews")  # outside a Prefect run; tasks pass their run logger


class ScoringError(RuntimeError):
    """The scoring run cannot go on or must fail (mixed outputs, too many rejects)."""


def part_name(unit_id: str) -> str:
    return f"part-{unit_id}.parquet"


def claim_is_live(claim: dict[str, Any], now: datetime, ttl_seconds: float) -> bool:
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


class OutputDataset:
    """The output at ``uri``, resolved with the run's storage (once per set of S3 settings)."""

    def __init__(self, uri: str, run_storage: RunStorage | None = None):
        self.uri = uri
        self.storage = run_storage or RunStorage()

    @classmethod
    def of(cls, output: str | OutputDataset) -> OutputDataset:
        """Tasks take either; a bare URI (a test, an older caller) resolves its own settings."""
        return output if isinstance(output, OutputDataset) else cls(output)

    @property
    def location(self) -> storage.Location:
        return self.storage.resolve(self.uri)

    def __repr__(self) -> str:
        return f"OutputDataset({self.uri!r})"

    # -- claims: no two incompatible runs write into one output at once ---------------------------

    def _write_claim(self, name: str, claim: dict[str, Any]) -> None:
        claim["heartbeat_at"] = datetime.now(UTC).isoformat()
        loc = self.location.join("_claims", name)
        try:
            storage.write_json(loc, claim)
        except FileNotFoundError:  # on disk: another run removed the emptied _claims/ just now
            storage.write_json(loc, claim)

    def release(self, name: str) -> None:
        """Delete a claim; on disk also ``_claims/`` once empty, so a finished output holds no marker."""
        out = self.location
        storage.delete_file(out.join("_claims", name))
        storage.remove_empty_dir(out.join("_claims"))

    def claim(self, model_version: str, run_id: str, layout: str = "",
              ttl_seconds: float = CLAIM_TTL_SECONDS, log: Log = _LOG) -> str:
        """Stake this run's claim; returns its name (for :meth:`heartbeat`).

        Object stores have no atomic create-if-absent, so every run writes its claim first
        and then reads all claims back; any live claim of a different model version or unit
        layout makes this run fail (if two such runs race, both may fail - they never mix).
        Runs with the same model and layout write identical parts and may share an output.
        A claim is live while its run refreshes it (see :class:`ClaimHeartbeat`).
        """
        out = self.location
        name = f"{run_id}.json"
        claim = {"run_id": run_id, "model_version": model_version, "layout": layout, "host": socket.gethostname(),
                 "pid": os.getpid(), "created_at": datetime.now(UTC).isoformat()}
        self._write_claim(name, claim)
        now = datetime.now(UTC)
        for info in storage.list_files(out.join("_claims")):
            if info.base_name == name:
                continue
            try:
                other = storage.read_json(storage.Location(out.fs, info.path, info.path))
            except FileNotFoundError:  # released while we listed
                continue
            if not claim_is_live(other, now, ttl_seconds):
                # A dead run (killed, or silent past the TTL) never releases its claim: nobody else would.
                try:
                    storage.delete_file(storage.Location(out.fs, info.path, info.path))
                except storage.StorageError as exc:  # harmless: it stays dead and is tried again next run
                    log.warning("could not remove the dead run's claim %s: %s", info.path, exc)
                continue
            if (other["model_version"], other.get("layout", "")) != (model_version, layout):
                self.release(name)
                what = ("model " + other["model_version"]) if other["model_version"] != model_version \
                    else "another unit layout"
                raise ScoringError(f"{out.uri} is being written by another run ({what}, run {other['run_id']}); "
                                   "one output never mixes runs: wait for it or choose another output")
        return name

    # -- parts -------------------------------------------------------------------------------------

    def clear(self) -> int:
        """overwrite=true: remove earlier parts, rejects and markers before scoring again."""
        out = self.location
        removed = 0
        for info in storage.list_files(out):
            rel = info.path[len(out.path):].lstrip("/")
            if rel.startswith(_EARLIER_OUTPUT):
                storage.delete_file(storage.Location(out.fs, info.path, info.path))
                removed += 1
        return removed

    def stray_parts(self, unit_ids: Iterable[str]) -> list[str]:
        """Parts in the output that belong to none of ``unit_ids`` (other inputs, another layout)."""
        wanted = {part_name(u) for u in unit_ids}
        return sorted(i.base_name for i in storage.list_files(self.location, recursive=False)
                      if i.base_name.startswith("part-") and i.base_name not in wanted)

    def check_no_other_inputs(self, unit_ids: Iterable[str], overwrite: bool) -> None:
        """At planning: refuse an output that holds parts of other inputs (unless they will be cleared)."""
        stray = self.stray_parts(unit_ids)
        if stray and not overwrite:
            raise ScoringError(
                f"{self.location.uri} already holds {len(stray)} part(s) from other inputs (e.g. {stray[0]}); "
                "use overwrite=true or another output")

    def part(self, unit_id: str) -> storage.Location:
        return self.location.join(part_name(unit_id))

    def rejected_part(self, unit_id: str) -> storage.Location:
        return self.location.join("_rejected", part_name(unit_id))

    def finished_part(self, unit_id: str, spec: ScoringSpec) -> dict[str, Any] | None:
        """The metadata of the unit's committed part (it can be skipped), or None if there is none.

        A part written with another model, duplicate rule or id type is refused, not reused.
        """
        part = self.part(unit_id)
        done = part_metadata(part)
        if done is None:
            return None
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
        return done

    # -- the finished output ------------------------------------------------------------------------

    def histogram(self, bins: int = HISTOGRAM_BINS) -> list[int]:
        """Scores of every committed part, counted in ``bins`` equal bins over [0, 1]."""
        import pyarrow.dataset as ds

        out = self.location
        counts = np.zeros(bins, dtype=np.int64)
        dataset = ds.dataset(out.path, filesystem=out.fs, format="parquet")
        if dataset.schema.get_field_index("score") < 0:  # no parts: every input file failed
            return counts.tolist()
        for batch in dataset.to_batches(columns=["score"]):
            s = batch.column(0).to_numpy(zero_copy_only=False)
            counts += np.histogram(s, bins=bins, range=(0.0, 1.0))[0]
        return counts.tolist()

    def duplicate_ids(self) -> int:
        return accounting.output_duplicate_ids(self.location)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        storage.write_json(self.location.join("_manifest.json"), manifest)

    def commit(self, files: list[dict[str, Any]], totals: dict[str, int], unit_ids: Iterable[str],
               max_reject_fraction: float, allow_failed_files: bool = False,
               refuse: ScoringError | None = None) -> None:
        """Write ``_SUCCESS``, or raise :class:`ScoringError` saying why the output is not complete.

        ``_SUCCESS`` means every input row is accounted for: files or units that could not be read
        fail the run unless ``allow_failed_files``, and then their rows count as rejected.
        ``refuse``: the caller's own reason not to mark it complete (a drifted dump under
        fail_on_drift), raised only when the output passes its own rules, which say more.
        """
        out = self.location
        stray = self.stray_parts(unit_ids)
        if stray:
            raise ScoringError(f"{out.uri} holds {len(stray)} part(s) this run did not plan (e.g. {stray[0]}): "
                               "another run wrote into it; not marking it complete")
        failed = accounting.failed_input_message(files, out.uri)
        if failed and not allow_failed_files:
            raise ScoringError(failed)
        fraction = totals["rows_rejected"] / totals["rows_in"] if totals["rows_in"] else 0.0
        if fraction > max_reject_fraction:
            raise ScoringError(f"{fraction:.1%} of rows were rejected (limit {max_reject_fraction:.1%}); "
                               f"see {out.uri}/_rejected/ and _manifest.json")
        if refuse is not None:
            raise refuse
        storage.atomic_write(out.join("_SUCCESS"), b"")


class ClaimHeartbeat:
    """Keeps a claim live while the run works; releases it (best effort) at the end."""

    def __init__(self, output: str | OutputDataset, name: str, interval: float = CLAIM_HEARTBEAT_SECONDS,
                 log: Log = _LOG):
        self.output, self.name, self.interval, self.log = OutputDataset.of(output), name, interval, log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def _beat(self) -> None:
        claim = None
        while not self._stop.wait(self.interval):
            try:
                # Kept in memory after the first read: a claim another run wrongly took for dead
                # (a beat late past the TTL) and deleted comes back with the next beat.  Resolved
                # per beat: a run that outlives its temporary credentials beats with new ones.
                claim = claim or storage.read_json(self.output.location.join("_claims", self.name))
                self.output._write_claim(self.name, claim)
            except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the claim's life
                # This thread runs outside the run's context: its logger would not reach the run anyway.
                _LOG.warning("could not refresh the output claim %s/_claims/%s: %s", self.output.uri, self.name, exc)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.output.release(self.name)
        except Exception as err:  # noqa: BLE001 - never mask the error that ended the run
            self.log.warning("could not release the output claim %s: %s", self.name, err)
        return False
