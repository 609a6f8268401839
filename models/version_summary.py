"""A registered version's metadata as a short human-readable summary (``reviews models show``)."""

from __future__ import annotations

from typing import Any

_COUNTS = ("rows_read", "rows_used", "rows_rejected", "rows_duplicate", "rows_train", "rows_holdout")
_HEADS = ("read", "used", "rejected", "dup", "train", "holdout")


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        # The first column (names) is left-aligned, counts right-aligned.
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def summary_lines(meta: dict[str, Any], registry_uri: str, champion: str | None) -> list[str]:
    metrics, data = meta.get("metrics", {}), meta.get("data", {})
    lines = [f"version:     {meta['version']}{'  (champion)' if meta['version'] == champion else ''}",
             f"registry:    {registry_uri}",
             f"created_at:  {meta.get('created_at')}",
             f"preset:      {meta.get('preset')}",
             f"test:        accuracy {_num(metrics.get('test_accuracy'))}, AUC {_num(metrics.get('test_auc'))}",
             f"data:        {data.get('source')}: {data.get('train_rows')} train, {data.get('validation_rows')} "
             f"validation, {data.get('test_rows')} test, {data.get('holdout_rows', 0)} labelled holdout rows; "
             f"vocabulary size {data.get('vocab_size')}"]
    code = meta.get("code_version")
    if code:
        git = code.get("git_commit")
        where = f"git {git[:12]}{', local changes' if code.get('git_dirty') else ''}" if git else "no git"
        lines.append(f"code:        {code.get('key')} ({where})")
    snap = meta.get("snapshot")
    if not snap:
        lines.append("snapshot:    none recorded (registered before data snapshots)")
        return lines
    lines += [f"snapshot:    {snap['fingerprint']} (holdout share {snap.get('holdout_share')})", ""]
    rows = [[f"IMDB {snap['imdb']['source']}", f"fingerprint {snap['imdb']['fingerprint'][:16]}", "",
             *([""] * len(_HEADS))]]
    for f in snap.get("labelled", []):
        rows.append([f["uri"], f"{f['size']} B", str(f.get("mtime") or "-"), *(_num(f.get(k)) for k in _COUNTS)])
    totals = snap.get("labelled_totals")
    if snap.get("labelled") and totals:
        rows.append(["total", "", "", *(_num(totals.get(k)) for k in _COUNTS)])
    lines += _table(["input", "size / fingerprint", "modified", *_HEADS], rows)
    reasons = (meta.get("labelled") or {}).get("reasons") or {}
    if reasons:
        lines += ["", "labelled rows not used, by reason:"]
        lines += [f"  {reason}: {count}" for reason, count in sorted(reasons.items())]
    return lines
