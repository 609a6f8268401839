"""The compose file's bootstrap path, run for real: ``reviews quickstart --skip-existing`` against S3
(the session's SeaweedFS server) trains a champion, writes a ``_READY`` demo dump and scores it;
run again, it finds all three and does nothing."""

from __future__ import annotations

import json

from infra import storage
from models.dump_discovery import READY, SUCCESS, discover
from models.registry import ModelRegistry
from tests.cli_process import last_json_line, run_cli


def _bootstrap(bucket: str, tgz: str) -> dict:
    code, out, err = run_cli("quickstart", "--skip-existing", "--data", tgz, "--registry", f"{bucket}/registry",
                             "--dump", f"{bucket}/dumps/demo", "--output", f"{bucket}/scores/demo")
    assert code == 0, err
    summary = last_json_line(out)
    assert summary is not None, out
    return summary


def test_bootstrap_trains_writes_and_scores_once(s3_bucket, tiny_tgz, prefect_api):
    first = _bootstrap(s3_bucket, tiny_tgz)
    assert first["skipped"] is False and first["steps"] == {"train": "ran", "dump": "ran", "score": "ran"}
    registry = ModelRegistry(f"{s3_bucket}/registry")
    champion = registry.champion()
    assert champion == first["version"]
    dump, scores = storage.resolve(f"{s3_bucket}/dumps/demo"), storage.resolve(f"{s3_bucket}/scores/demo")
    assert storage.exists(dump.join(READY)) and storage.exists(scores.join(SUCCESS))
    # The tiny tarball's test split: 120 reviews, every one scored.
    assert first["scored"]["rows_scored"] == 120, first["scored"]
    # score-new-dumps over the same roots sees the demo partition as ready and already scored.
    found = discover(f"{s3_bucket}/dumps", f"{s3_bucket}/scores")
    assert (found.skipped_complete, found.to_score, found.not_ready) == (["demo"], [], [])

    manifest = storage.read_json(scores.join("_manifest.json"))
    second = _bootstrap(s3_bucket, tiny_tgz)
    assert second == {"skipped": True, "champion": champion, "dump": f"{s3_bucket}/dumps/demo",
                      "output": f"{s3_bucket}/scores/demo"}
    # Nothing was trained, registered or rewritten.
    assert [v["version"] for v in registry.versions()] == [champion]
    assert storage.read_json(scores.join("_manifest.json")) == manifest


def test_bootstrap_finishes_what_an_earlier_attempt_left(s3_bucket, tiny_tgz, prefect_api):
    """A first `up` that trained but died before scoring: the next one keeps the champion and the
    ready dump, and only scores."""
    first = _bootstrap(s3_bucket, tiny_tgz)
    scores = storage.resolve(f"{s3_bucket}/scores/demo")
    storage.delete_file(scores.join(SUCCESS))
    again = _bootstrap(s3_bucket, tiny_tgz)
    assert again["steps"] == {"train": "skipped", "dump": "skipped", "score": "ran"}, json.dumps(again)
    assert again["version"] == first["version"] and again["scored"]["rows_scored"] == 120
    assert storage.exists(scores.join(SUCCESS))
    assert [v["version"] for v in ModelRegistry(f"{s3_bucket}/registry").versions()] == [first["version"]]
