"""The drift step of a scoring run: merge its units' profiles, compare them with the model
version's reference profile (its evaluation data, stored at registration), and say what the
manifest, the ``drift-report`` artifact and the run's outcome make of it.

Pure: no storage, no Prefect.  ``tasks/scoring.py``'s finalize calls it; a version without a
reference (registered before profiles existed) makes drift "unavailable", never a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from models.dump_profile import DRIFT_THRESHOLD, DumpProfile, compare, drift_markdown
from models.output_dataset import ScoringError

UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Drift:
    section: dict[str, Any]  # the manifest's "drift"
    markdown: str  # the drift-report artifact
    profile: DumpProfile | None  # every unit's scored rows; None when a unit's part carries no profile
    reference: DumpProfile | None = None  # the version's reference profile, when it has a readable one

    @property
    def verdict(self) -> str:
        return self.section["verdict"]

    @property
    def drifted(self) -> list[str]:
        return self.section["drifted"]


def merged_profile(results: Iterable[dict[str, Any]], num_words: int | None) -> tuple[DumpProfile | None, str]:
    """The sum of the units' profiles, or None and why not."""
    profiles = []
    for r in results:
        if r.get("profile") is None:
            # Its part was committed by code older than drift profiles; its rows were never counted.
            return None, f"unit {r['unit_id']}'s part carries no drift profile (scored before profiles existed)"
        try:
            profiles.append(DumpProfile.from_dict(r["profile"]))
        except ValueError as exc:
            return None, f"unit {r['unit_id']}: {exc}"
    return DumpProfile.merge_all(profiles, num_words), ""


def assess(results: list[dict[str, Any]], reference: dict[str, Any] | None, model_version: str,
           num_words: int | None, threshold: float = DRIFT_THRESHOLD, fail_on_drift: bool = False) -> Drift:
    """This run's units against ``reference`` (a version's ``drift_reference`` metadata, or None)."""
    base = {"threshold": threshold, "fail_on_drift": fail_on_drift, "reference_version": model_version}
    current, why = merged_profile(results, num_words)
    if current is None:
        return _unavailable(why, base, None)
    if reference is None:
        return _unavailable(f"model version {model_version} has no reference profile (registered before drift "
                            "profiles, or without evaluation data)", base, current)
    try:
        ref = DumpProfile.from_dict(reference)
    except ValueError as exc:
        return _unavailable(f"model version {model_version}'s reference profile cannot be read: {exc}", base, current)
    report = compare(ref, current, threshold)
    return Drift({**report.to_dict(), **base, "profile": current.to_dict()}, drift_markdown(report), current, ref)


def _unavailable(reason: str, base: dict[str, Any], current: DumpProfile | None) -> Drift:
    section = {"verdict": UNAVAILABLE, "drifted": [], "reason": reason, **base, "features": [],
               "current_rows": current.rows if current is not None else None,
               "profile": current.to_dict() if current is not None else None}
    return Drift(section, f"## Drift report: **{UNAVAILABLE}**\n\n{reason}", current)


class DriftFailure(ScoringError):
    """fail_on_drift and the dump drifted: the output is not marked complete."""


def failure(drift: Drift, output_uri: str) -> DriftFailure | None:
    """The error that fails the run (fail_on_drift and something drifted), or None."""
    s = drift.section
    if not (s["fail_on_drift"] and drift.drifted):
        return None
    features = ", ".join(f"{f['feature']} (PSI {f['psi']:.3f})" for f in s["features"] if f["drifted"])
    return DriftFailure(
        f"drift against model {s['reference_version']}'s reference: {features} above the PSI threshold "
        f"{s['threshold']}; fail_on_drift is on, so {output_uri} is not marked complete (no _SUCCESS). The "
        f"manifest's drift section has the figures (reviews report {output_uri}); a re-run with "
        "fail_on_drift=false accepts the dump without scoring it again")
