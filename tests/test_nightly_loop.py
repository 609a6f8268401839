"""The nightly loop end to end, through the `reviews` CLI in its own processes under a real Prefect
API: labelled Parquet on disk and on the S3 server joins IMDB, every version records its data
snapshot and code version, a night with nothing new is skipped without TensorFlow, --force trains
anyway, a new labelled file trains again, and `reviews models show` prints the snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from models.registry import ModelRegistry
from tests.cli_process import run_cli, subprocess_env
from tests.training_data import labelled_rows, write_labelled

_REPORT = "import json, sys; from flows.cli import main; rc = main(sys.argv[1:]); " \
          "print(json.dumps({'rc': rc, 'tensorflow_loaded': 'tensorflow' in sys.modules}))"


def cli_reporting_tensorflow(*argv: str) -> tuple[dict, dict, float, str]:
    """Run the CLI's main() in a fresh interpreter; returns (its JSON summary line, whether
    TensorFlow got imported, wall seconds, stderr)."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _REPORT, *argv], env=subprocess_env(), capture_output=True, text=True,
                       timeout=600, check=False)
    seconds = time.perf_counter() - start
    assert r.returncode == 0, r.stderr
    *_, summary, report = r.stdout.strip().splitlines()
    return json.loads(summary), json.loads(report), seconds, r.stderr


def artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return arts[-1] if arts else None


def test_nightly_loop_skips_when_nothing_changed(tmp_path, tiny_tgz, prefect_api, s3_bucket):
    registry = str(tmp_path / "registry")
    local = write_labelled(tmp_path / "labelled" / "night1.parquet", *labelled_rows(1, 40, 0))
    ids, labels, texts = labelled_rows(2, 20, 1000)
    on_s3 = write_labelled(f"{s3_bucket}/labelled/night1.parquet", ids + [None], labels + [1], texts + ["no id"])
    train = ["train", "--preset", "seed", "--registry", registry, "--data", tiny_tgz, "--maxlen", "12",
             "--embedding-dim", "8", "--lstm-units", "8", "--batch-size", "16", "--epochs", "2",
             "--labelled", str(tmp_path / "labelled"), "--labelled", f"{s3_bucket}/labelled", "--holdout-share", "0.25"]

    first, report, train_seconds, _ = cli_reporting_tensorflow(*train)
    assert first["skipped"] is False and report["tensorflow_loaded"]
    reg = ModelRegistry(registry)
    meta = reg.metadata(first["version"])
    snap = meta["snapshot"]
    assert [f["uri"] for f in snap["labelled"]] == [local, on_s3]
    s3_file = snap["labelled"][1]
    assert s3_file["rows_read"] == 21 and s3_file["rows_rejected"] == 1 and s3_file["size"] > 0 and s3_file["mtime"]
    assert snap["labelled_totals"]["rows_read"] == 61 == sum(snap["labelled_totals"][k] for k in
                                                             ("rows_used", "rows_rejected", "rows_duplicate"))
    assert snap["imdb"]["source"].startswith("tgz:") and len(snap["fingerprint"]) == 64
    assert meta["code_version"]["key"] and meta["hyperparameters"]["maxlen"] == 12
    assert meta["data"]["holdout_rows"] == snap["labelled_totals"]["rows_holdout"] > 0
    assert meta["data"]["train_rows"] + meta["data"]["validation_rows"] == 120 + snap["labelled_totals"]["rows_train"]
    assert meta["labelled"]["reasons"] == {"null review id": 1}
    assert "null review id" in str(artifact("labelled-data").data)

    second, report, skip_seconds, _ = cli_reporting_tensorflow(*train)
    assert second["skipped"] is True and second["matched_version"] == first["version"]
    assert second["reason"].startswith("skipped: nothing changed since version " + first["version"])
    assert not report["tensorflow_loaded"], "a skipped run never imports TensorFlow"
    assert [m["version"] for m in reg.versions()] == [first["version"]]
    skips = [r for r in reg.audit_log() if r["action"] == "skip"]
    assert len(skips) == 1 and skips[0]["matched_version"] == first["version"]
    assert skips[0]["snapshot_fingerprint"] == snap["fingerprint"]
    assert first["version"] in artifact("retrain-skipped").data
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["retrain-seed-skipped"])))
    assert len(runs) == 1 and runs[0].state.is_completed()
    print(f"training run {train_seconds:.1f} s, skipped run {skip_seconds:.1f} s")
    assert skip_seconds < 60

    forced, report, _, _ = cli_reporting_tensorflow(*train, "--force")
    assert forced["skipped"] is False and forced["version"] != first["version"]

    # Another night: a new file under the S3 prefix; the run trains and its snapshot lists it.
    night2 = write_labelled(f"{s3_bucket}/labelled/night2.parquet", *labelled_rows(3, 10, 2000))
    third, _, _, _ = cli_reporting_tensorflow(*train)
    assert third["skipped"] is False
    latest = reg.metadata(third["version"])
    assert [f["uri"] for f in latest["snapshot"]["labelled"]] == [local, on_s3, night2]
    assert latest["snapshot"]["labelled"][2]["rows_read"] == 10
    assert latest["snapshot"]["fingerprint"] != snap["fingerprint"]

    code, out, err = run_cli("models", "show", third["version"], "--registry", registry)
    assert code == 0, err
    assert latest["snapshot"]["fingerprint"] in out and night2 in out and "null review id: 1" in out
    assert latest["code_version"]["key"] in out
    code, out, err = run_cli("models", "show", "latest", "--registry", registry, "--json")
    assert code == 0, err
    assert json.loads(out) == latest


def test_train_with_a_bad_labelled_file_is_a_clear_error(tmp_path, tiny_tgz, prefect_api):
    bad = tmp_path / "labelled" / "reviews.parquet"
    bad.parent.mkdir()
    bad.write_text("review_id,label,text\n1,1,not parquet\n")
    code, _, err = run_cli("train", "--registry", str(tmp_path / "r"), "--data", tiny_tgz,
                           "--labelled", str(tmp_path / "labelled"))
    assert code == 2
    assert f"{bad}: not a readable Parquet file" in err
    assert not os.path.exists(tmp_path / "r" / "versions")
