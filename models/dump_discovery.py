"""Which dump partitions need scoring: the pure selection behind ``score-new-dumps``.

Layout: ``<input_root>/<partition>/`` holds one dump (Parquet files) and, once the
producer has finished writing it, a ``_READY`` marker; ``<output_root>/<partition>/`` is
where ``score-reviews`` writes its parts, ``_manifest.json`` and, last, ``_SUCCESS``.

Producer contract: ``_READY`` is written after every data file of the partition, and a
ready partition is never changed afterwards (new data goes into a new partition).  The
marker's content is ignored.  A partition without it may be half-written, so it is left
alone and reported as "not ready"; the next run looks again.

Nothing here talks to Prefect: the selection is a function of what the two roots hold
(plus the champion for rescoring), so it can be tested on disk and on S3 directly.
"""

from __future__ import annotations

import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from infra import storage
from infra.part_writer import part_metadata

READY = "_READY"
SUCCESS = "_SUCCESS"
MANIFEST = "_manifest.json"

# Existence checks are one HEAD request each on S3; a handful in flight hides the latency
# of a long partition list without loading the store.
CHECK_THREADS = 8


@dataclass(frozen=True)
class Partition:
    """One partition to score: where it is, where it goes, and why it was picked."""

    name: str
    input: str
    output: str
    # "new" (no output), "incomplete" (no _SUCCESS yet: resumed), "restart" (no _SUCCESS, and its
    # parts are another model's: they cannot be resumed) or "rescore" (complete, older champion)
    reason: str
    overwrite: bool = False
    scored_by: str | None = None  # the model version of the earlier output (its manifest, else a part)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Discovery:
    to_score: list[Partition] = field(default_factory=list)
    skipped_complete: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"to_score": [p.to_dict() for p in self.to_score], "skipped_complete": self.skipped_complete,
                "not_ready": self.not_ready}


def mark_ready(partition_uri: str, content: bytes = b"") -> None:
    """The producer's last step: declare ``partition_uri`` complete (see the module docstring)."""
    storage.atomic_write(storage.resolve(partition_uri).join(READY), content)


def list_partitions(input_root: str) -> list[str]:
    """Partition names under ``input_root``, sorted.

    Names starting with ``_`` or ``.`` are skipped: the scoring flow treats such paths as
    hidden too, so they are where producers stage work (``_tmp/``, ``.staging/``).
    """
    return [d for d in storage.list_dirs(storage.resolve(input_root)) if not d.startswith(("_", "."))]


def check_roots(input_root: str, output_root: str) -> None:
    """Refuse an output root that would put scores inside an input partition.

    Parts are ``*.parquet`` files, so scores written there would be read back as reviews
    by the next scoring run of that partition.
    """
    src, dst = storage.resolve(input_root), storage.resolve(output_root)
    if type(src.fs) is not type(dst.fs):
        return
    a, b = src.path.rstrip("/"), dst.path.rstrip("/")
    if b == a:
        raise ValueError(f"output_root {output_root!r} is the input root: scores would land in the dumps")
    if b.startswith(a + "/"):
        first = posixpath.relpath(b, a).split("/")[0]
        if not first.startswith(("_", ".")):
            raise ValueError(f"output_root {output_root!r} lies inside input partition {first!r}")


def _scored_by(out: storage.Location) -> str | None:
    try:
        return storage.read_json(out.join(MANIFEST)).get("model", {}).get("version")
    except FileNotFoundError:
        pass
    except ValueError:  # not JSON: treated like a manifest that names no version
        return None
    # No manifest: an interrupted run.  Its committed parts say which model wrote them (a part's
    # footer; one output holds one model's parts, score-reviews refuses to mix them).
    for info in storage.list_files(out, recursive=False):
        if info.base_name.startswith("part-"):
            meta = part_metadata(out.join(info.base_name))
            if meta is not None:
                return meta.get("model_version")
    return None


def _classify(name: str, src: storage.Location, dst: storage.Location, champion: str | None,
              output_dirs: set[str], model: str | None = None) -> tuple[str, Partition | None]:
    part_in, part_out = src.join(name), dst.join(name)
    if not storage.exists(part_in.join(READY)):
        return "not_ready", None
    if name not in output_dirs:  # saves two requests per partition that was never scored
        return "score", Partition(name, part_in.uri, part_out.uri, "new")
    complete = storage.exists(part_out.join(SUCCESS))
    expected = champion or model
    if expected is not None and (champion is not None or not complete):
        # A manifest is written before _SUCCESS, so an incomplete output can have one too (a run
        # the reject limit refused); either way it says which model the partition was scored with.
        scored_by = _scored_by(part_out)
        if scored_by is not None and scored_by != expected:
            if complete:
                return "score", Partition(name, part_in.uri, part_out.uri, "rescore", overwrite=True,
                                          scored_by=scored_by)
            # Interrupted under another model (e.g. before a promotion): the run would refuse its
            # parts on every attempt, so it starts over; nothing complete is lost.
            return "score", Partition(name, part_in.uri, part_out.uri, "restart", overwrite=True,
                                      scored_by=scored_by)
    if complete:
        return "skipped_complete", None
    # Earlier parts are kept: score-reviews resumes, skipping the units they hold.
    return "score", Partition(name, part_in.uri, part_out.uri, "incomplete")


def discover(input_root: str, output_root: str, champion: str | None = None,
             threads: int = CHECK_THREADS, model: str | None = None) -> Discovery:
    """Sort every partition under ``input_root`` into to-score / complete / not ready.

    ``champion``: when given, complete outputs whose manifest names another model version
    are picked again, with ``overwrite=True`` (rescore on promotion); otherwise a complete
    output is never touched.  ``model``: the exact version the runs will score with (default
    ``champion``); an incomplete output written by another model is restarted (``overwrite``),
    since resuming it would be refused.
    """
    check_roots(input_root, output_root)
    src, dst = storage.resolve(input_root), storage.resolve(output_root)
    names = list_partitions(input_root)
    output_dirs = set(storage.list_dirs(dst)) if names else set()
    found = Discovery()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        verdicts = pool.map(lambda n: _classify(n, src, dst, champion, output_dirs, model), names)
        for name, (verdict, partition) in zip(names, verdicts):
            if verdict == "score":
                found.to_score.append(partition)
            else:
                getattr(found, verdict).append(name)
    return found
