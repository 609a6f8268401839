"""A run's inputs as lineage, and whether they equal what the latest version was trained on.

The data snapshot lists the IMDB source with its fingerprint, every labelled file
by URI, size and modification time, and the holdout share (it decides which rows
train).  Its fingerprint is a sha256 over exactly these records, so it is known
from a file listing and the IMDB data alone, before any labelled file is read and
long before training.  A version's metadata keeps the snapshot with each file's
row counts added, the code version (:mod:`infra.code_version`) and, as
``hyperparameters``, the resolved training config: a run whose three equal the
latest version's has nothing new to learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from infra.labelled_inputs import LabelledFile
from models.labelled_data import LabelledSet

SNAPSHOT_FORMAT = 1


def snapshot(imdb_source: str, imdb_fingerprint: str, files: list[LabelledFile],
             holdout_share: float) -> dict[str, Any]:
    records = {"format": SNAPSHOT_FORMAT, "imdb": {"source": imdb_source, "fingerprint": imdb_fingerprint},
               "labelled": [f.identity() for f in files], "holdout_share": holdout_share}
    digest = hashlib.sha256(json.dumps(records, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {**records, "fingerprint": digest}


@dataclass
class RunInputs:
    """What a run is about to train on, and with which code."""

    files: list[LabelledFile]
    holdout_share: float
    snapshot: dict[str, Any]
    code_version: dict[str, Any]

    def metadata(self, labelled: LabelledSet) -> dict[str, Any]:
        """The version metadata's lineage: the snapshot with row counts per file, the labelled data's
        rejection report, the code version."""
        counts = {f.uri: f.to_dict() for f in labelled.files}
        files = [{**rec, **{k: v for k, v in counts.get(rec["uri"], {}).items() if k.startswith("rows_")}}
                 for rec in self.snapshot["labelled"]]
        return {"snapshot": {**self.snapshot, "labelled": files, "labelled_totals": labelled.totals()},
                "labelled": labelled.report(), "code_version": self.code_version}


def unchanged(latest: dict[str, Any] | None, inputs: RunInputs, config: dict[str, Any]) -> tuple[bool, str]:
    """(True, why) when ``latest`` (a version's metadata) was trained on the same data snapshot,
    training config and code; else (False, what differs)."""
    if latest is None:
        return False, "the registry has no trained version yet"
    before = latest.get("snapshot", {}).get("fingerprint")
    if before is None:
        return False, f"version {latest['version']} records no data snapshot"
    if before != inputs.snapshot["fingerprint"]:
        return False, f"the data changed (snapshot {before[:12]} -> {inputs.snapshot['fingerprint'][:12]})"
    old_config = latest.get("hyperparameters") or {}
    changed = sorted(k for k in set(old_config) | set(config) if old_config.get(k) != config.get(k))
    if changed:
        return False, f"the training config changed ({', '.join(changed)})"
    old_code = (latest.get("code_version") or {}).get("key")
    if old_code != inputs.code_version["key"]:
        return False, f"the code changed ({old_code} -> {inputs.code_version['key']})"
    return True, (f"nothing changed since version {latest['version']}: same data snapshot "
                  f"{before[:12]}, training config and code {old_code}")


def skip_markdown(version: str, reason: str, snap: dict[str, Any]) -> str:
    lines = ["## Skipped: nothing changed", "", reason, "", f"Matched version: `{version}`", "",
             "| input | identity |", "|---|---|",
             f"| IMDB `{snap['imdb']['source']}` | fingerprint `{snap['imdb']['fingerprint'][:16]}` |"]
    lines += [f"| `{f['uri']}` | {f['size']} bytes, modified {f['mtime']} |" for f in snap["labelled"]]
    lines += ["", f"Snapshot fingerprint `{snap['fingerprint']}`, holdout share {snap['holdout_share']}."]
    return "\n".join(lines)
