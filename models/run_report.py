"""A scoring run's summary, read back from its ``_manifest.json``: what ``reviews report OUTPUT``
shows.

:func:`summary` is the JSON form (``--json``); :func:`sections` lays it out as titled tables of
strings, which ``flows/cli_report.py`` prints as rich tables on a terminal and as plain text
otherwise.  Pure: the caller reads the manifest and says whether ``_SUCCESS`` is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BAR_WIDTH = 24


@dataclass(frozen=True)
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # columns of figures, aligned right
    lines: list[str] = field(default_factory=list)  # said before the table


def summary(manifest: dict[str, Any], complete: bool) -> dict[str, Any]:
    """The run at a glance: where, which model, totals, timings, score histogram, drift."""
    return {
        "output": manifest["output"],
        "input": manifest["input"],
        "complete": complete,
        "model": manifest["model"],
        "totals": manifest["totals"],
        "timings": manifest["timings"],
        "score_histogram": manifest["score_histogram"],
        "drift": drift_summary(manifest.get("drift")),
        "failed_files": [{"uri": f["uri"], "error": f["error"]} for f in manifest.get("inputs", []) if f.get("error")],
    }


def drift_summary(drift: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's drift section without the bins and the profile."""
    if drift is None:
        return {"verdict": "unavailable", "drifted": [], "features": [],
                "reason": "the manifest has no drift section (scored before drift reports)"}
    keep = ("verdict", "drifted", "threshold", "min_rows", "reference_version", "reference_rows", "current_rows",
            "fail_on_drift", "reason")
    return {**{k: drift[k] for k in keep if k in drift},
            "features": [{k: f[k] for k in ("feature", "title", "psi", "js", "drifted", "summary", "note")}
                         for f in drift.get("features", [])]}


def _n(x: Any) -> str:
    return "-" if x is None else f"{x:,}" if isinstance(x, int) else str(x)


def _figure(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def sections(s: dict[str, Any]) -> list[Section]:
    t, tm, m, d = s["totals"], s["timings"], s["model"], s["drift"]
    status = ("complete (_SUCCESS written)" if s["complete"]
              else "NOT complete: no _SUCCESS (the run failed or is running)")
    head = Section("Scoring run", ["", ""], [
        ["output", s["output"]], ["status", status], ["input", s["input"]],
        ["model", f"{m['version']} (preset {m.get('preset') or '-'}) from {m['registry']}"]])
    count_keys = ["rows_in", "rows_scored", "rows_rejected", "rows_failed", "files", "files_failed", "duplicate_ids",
                  "units", "units_skipped"]
    # One figure per line: readable in a narrow terminal, and greppable ("rows scored").
    totals = Section("Totals", ["", ""], [[k.replace("_", " "), _n(t[k])] for k in count_keys if k in t], right={1})
    timings = Section("Timings", ["", ""], [
        ["started", _n(tm.get("started_at"))], ["finished", _n(tm.get("finished_at"))],
        ["seconds", _n(tm.get("seconds"))], ["units seconds", _n(tm.get("units_seconds"))],
        ["rows/s", _n(tm.get("rows_per_second"))]], right={1})
    counts = s["score_histogram"]["counts"]
    total, peak = sum(counts) or 1, max(counts, default=0) or 1
    hist = Section("Score histogram", ["score", "reviews", "share", ""],
                   [[b, f"{c:,}", f"{c / total:.1%}", "#" * round(BAR_WIDTH * c / peak)]
                    for b, c in zip(s["score_histogram"]["bins"], counts)], right={1, 2})
    out = [head, totals, timings, hist]
    if s["failed_files"]:
        out.append(Section("Files that could not be scored", ["file", "error"],
                           [[f["uri"], f["error"]] for f in s["failed_files"]]))
    out.append(_drift_section(d))
    return out


def _drift_section(d: dict[str, Any]) -> Section:
    lines = [f"verdict: {d['verdict']}" + (f" ({', '.join(d['drifted'])})" if d.get("drifted") else "")]
    if d.get("reason"):
        lines.append(d["reason"])
    if "reference_rows" in d:
        lines.append(f"PSI threshold {d['threshold']}; reference: {_n(d['reference_rows'])} reviews (model "
                     f"{d.get('reference_version', '-')}), this dump: {_n(d['current_rows'])} scored"
                     + ("; fail_on_drift on" if d.get("fail_on_drift") else ""))
    # The short feature names (models/dump_profile.py FEATURES has their titles): the table fits 80 columns.
    rows = [[f["feature"], _figure(f["psi"]), _figure(f["js"]), "YES" if f["drifted"] else "no",
             (f.get("summary") or ["", ""])[0], (f.get("summary") or ["", ""])[1], f.get("note") or ""]
            for f in d.get("features", [])]
    return Section("Drift", ["feature", "PSI", "JS", "drifted", "reference", "this dump", "note"], rows,
                   right={1, 2}, lines=lines)
