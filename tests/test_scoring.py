"""score-reviews end to end on real Parquet files, local disk and a real S3 server."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from flows.score import score_reviews
from infra import storage
from models.predictors import probe_batch
from models.registry import ModelRegistry
from models.scoring import ScoringSpec
from tasks.scoring import ScoringError, plan_scoring, score_unit
from tests.tinymodel import CONFIG, VOCAB, make_dump, read_output


def keras_scores(model, tokens: pa.Array) -> np.ndarray:
    from keras.utils import pad_sequences

    x = pad_sequences(tokens.to_pylist(), maxlen=CONFIG.maxlen, padding=CONFIG.padding,
                      truncating=CONFIG.truncating)
    return model.predict(x, verbose=0).reshape(-1)


def _roundtrip(in_uri: str, out_uri: str, registry) -> None:
    table = make_dump(in_uri)
    summary = score_reviews(input=in_uri, output=out_uri, registry=registry["uri"], max_rows_per_unit=120,
                            batch_size=50)
    assert summary["rows_in"] == 700 and summary["rows_scored"] == 700 and summary["rows_rejected"] == 0
    assert summary["files"] == 3 and summary["model_version"] == registry["version"]
    out = read_output(out_uri).sort_by("review_id")
    assert out.schema.field("score").type == pa.float32()
    assert out.schema.field("label").type == pa.int8()
    assert out.schema.field("review_id").type == pa.int64()
    assert pa.types.is_dictionary(out.schema.field("model_version").type)
    assert out.column("review_id").to_pylist() == table.column("review_id").to_pylist()
    expected = keras_scores(registry["model"], table.column("tokens").combine_chunks())
    got = out.column("score").to_numpy()
    assert np.max(np.abs(got - expected)) <= 1e-5
    assert (out.column("label").to_numpy() == (got >= 0.5)).all()
    out_loc = storage.resolve(out_uri)
    manifest = storage.read_json(out_loc.join("_manifest.json"))
    assert storage.exists(out_loc.join("_SUCCESS"))
    assert manifest["model"]["version"] == registry["version"]
    assert manifest["totals"]["units"] > 3  # several row-group units per file
    for f in manifest["inputs"]:
        assert f["rows_in"] == f["rows_scored"] + f["rows_rejected"]
        assert f["size"] > 0 and f["mtime"]
    # Timings for the overhead figures: the units phase within the run, model time within a unit.
    timings = manifest["timings"]
    assert 0 < timings["units_seconds"] <= timings["seconds"]
    for u in manifest["units"]:
        assert 0 <= u["model_seconds"] <= u["seconds"]


def test_score_local_roundtrip(tmp_path, registry, prefect_api):
    _roundtrip(str(tmp_path / "in"), str(tmp_path / "out"), registry)


def test_unit_task_runs_are_named_after_their_unit_and_untagged(tmp_path, registry, prefect_api):
    """Untagged: Prefect asks the API for tag concurrency slots around every tagged task run."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    make_dump(src, n=300, files_rows=150, rg=50)
    state = score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=100,
                          return_state=True)
    units = [u["unit_id"] for u in storage.read_json(storage.resolve(out).join("_manifest.json"))["units"]]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    unit_runs = [r for r in runs if r.name.startswith("score-unit-")]
    assert sorted(r.name for r in unit_runs) == sorted(f"score-unit-{u}" for u in units)
    assert len(units) == 4 and all(not r.tags for r in unit_runs)


def test_score_s3_roundtrip(s3_bucket, registry, prefect_api):
    _roundtrip(f"{s3_bucket}/dumps/day1", f"{s3_bucket}/scores/day1", registry)
    # A glob over the same prefix selects the same files.
    summary = score_reviews(input=f"{s3_bucket}/dumps/day1/*.parquet", output=f"{s3_bucket}/scores/glob",
                            registry=registry["uri"])
    assert summary["rows_scored"] == 700


def test_text_column_scores_like_its_tokens(tmp_path, registry, prefect_api):
    texts = ["A good movie, and great fun!", "Awful plot.<br /><br />Boring actor", "the the unknownword good",
             "GREAT great Great", "bad"]
    tokens = VOCAB.encode(texts)
    pq.write_table(pa.table({"review_id": pa.array(["a", "b", "c", "d", "e"]), "text": texts, "tokens": tokens}),
                   tmp_path / "reviews.parquet")
    by_text = score_reviews(input=str(tmp_path / "reviews.parquet"), output=str(tmp_path / "by_text"),
                            registry=registry["uri"], text_column="text")
    by_tokens = score_reviews(input=str(tmp_path / "reviews.parquet"), output=str(tmp_path / "by_tokens"),
                              registry=registry["uri"])
    assert by_text["rows_scored"] == by_tokens["rows_scored"] == 5
    a = read_output(str(tmp_path / "by_text")).sort_by("review_id")
    b = read_output(str(tmp_path / "by_tokens")).sort_by("review_id")
    assert a.column("review_id").to_pylist() == ["a", "b", "c", "d", "e"]
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), atol=1e-6)


def test_bad_input_is_rejected_with_reasons_and_counts_reconcile(tmp_path, registry, prefect_api):
    src = tmp_path / "in"
    src.mkdir()
    v = VOCAB.size
    rows = [(1, [1, 4, 5]), (None, [1, 4]), (3, None), (4, []), (5, [1, -3]), (6, [1, v]), (7, [1, 5, 6]),
            (8, [1, None, 4])]
    pq.write_table(pa.table({"review_id": pa.array([r[0] for r in rows], pa.int64()),
                             "tokens": pa.array([r[1] for r in rows], pa.list_(pa.int64()))}),
                   src / "a-mixed.parquet", row_group_size=3)
    pq.write_table(pa.table({"review_id": [10, 11], "tokens": pa.array([[1.0, 4.0], [1.0, float("nan")]])}),
                   src / "b-floats.parquet")
    (src / "c-corrupt.parquet").write_bytes(b"PAR1 this is not really parquet")
    (src / "d-csv.parquet").write_text("review_id,tokens\n1,2\n")
    pq.write_table(pa.table({"id": [1], "tokens": [[1, 4]]}), src / "e-missing-column.parquet")
    pq.write_table(pa.table({"review_id": [1], "tokens": ["1 4 5"]}), src / "f-wrong-type.parquet")
    pq.write_table(pa.table({"review_id": pa.array([], pa.int64()), "tokens": pa.array([], pa.list_(pa.int32()))}),
                   src / "g-empty.parquet")
    out = tmp_path / "out"
    summary = score_reviews(input=str(src), output=str(out), registry=registry["uri"], max_reject_fraction=1.0,
                            batch_size=4, allow_failed_files=True)
    manifest = json.loads((out / "_manifest.json").read_text())
    files = {os.path.basename(f["uri"]): f for f in manifest["inputs"]}
    assert files["a-mixed.parquet"]["rows_in"] == 8
    assert files["a-mixed.parquet"]["rows_scored"] == 2
    assert files["a-mixed.parquet"]["rows_rejected"] == 6
    assert files["b-floats.parquet"]["rows_scored"] == 1 and files["b-floats.parquet"]["rows_rejected"] == 1
    for name in ("c-corrupt.parquet", "d-csv.parquet"):
        assert files[name]["error"] and name in files[name]["error"]
    assert "missing column 'review_id'" in files["e-missing-column.parquet"]["error"]
    assert "expected a list of integer token ids" in files["f-wrong-type.parquet"]["error"]
    # Files whose footer is readable count its rows, as rejected: totals add up.
    assert files["e-missing-column.parquet"]["rows_in"] == files["e-missing-column.parquet"]["rows_rejected"] == 1
    assert files["c-corrupt.parquet"]["rows_in"] == 0
    assert files["g-empty.parquet"]["error"] is None and files["g-empty.parquet"]["rows_in"] == 0
    for f in manifest["inputs"]:
        assert f["rows_in"] == f["rows_scored"] + f["rows_rejected"]
    assert summary["files_failed"] == 4
    rejected = ds.dataset(str(out / "_rejected"), format="parquet").to_table()
    src_a = {r: reason for r, reason, s in zip(rejected.column("row").to_pylist(),
                                              rejected.column("reason").to_pylist(),
                                              rejected.column("source").to_pylist()) if s.endswith("a-mixed.parquet")}
    assert src_a == {1: "null review id", 2: "null token sequence", 3: "empty token sequence",
                     4: "negative token id", 5: f"token id >= vocabulary size {v}", 7: "null token id"}
    src_b = [reason for reason, s in zip(rejected.column("reason").to_pylist(), rejected.column("source").to_pylist())
             if s.endswith("b-floats.parquet")]
    assert src_b == ["non-finite token id (NaN or inf)"]
    scored = read_output(str(out)).sort_by("review_id")
    assert sorted(scored.column("review_id").to_pylist()) == [1, 7, 10]


def test_reject_limit_fails_the_run_without_success_marker(tmp_path, registry, prefect_api):
    pq.write_table(pa.table({"review_id": [1, 2, 3, 4], "tokens": pa.array([[1, 4], [], [], [1, 5]])}),
                   tmp_path / "in.parquet")
    with pytest.raises(ScoringError, match="rejected"):
        score_reviews(input=str(tmp_path / "in.parquet"), output=str(tmp_path / "out"), registry=registry["uri"],
                      max_reject_fraction=0.25)
    assert (tmp_path / "out" / "_manifest.json").exists()
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_resume_after_crash_is_exactly_once(tmp_path, registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    table = make_dump(src, n=600, files_rows=200, rg=50)
    reg = ModelRegistry(registry["uri"])
    spec = ScoringSpec(preprocessing=reg.preprocessing(registry["version"]), model_version=registry["version"])
    plan = plan_scoring.fn(src, out, spec, 100, False)
    assert len(plan["units"]) == 6
    # A run that died after committing 2 units: only their parts exist.
    for unit in plan["units"][:2]:
        score_unit.fn(unit, out, spec, registry["uri"])
    summary = score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=100)
    manifest = storage.read_json(storage.resolve(out).join("_manifest.json"))
    assert manifest["totals"]["units_skipped"] == 2
    assert summary["rows_scored"] == 600
    ids = read_output(out).sort_by("review_id").column("review_id").to_pylist()
    assert ids == table.column("review_id").to_pylist(), "no duplicates, no gaps"

    # overwrite=true redoes everything.
    summary = score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=100, overwrite=True)
    manifest = storage.read_json(storage.resolve(out).join("_manifest.json"))
    assert manifest["totals"]["units_skipped"] == 0
    assert read_output(out).num_rows == 600


def test_outputs_never_mix_inputs_or_models(tmp_path, registry, prefect_api):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    make_dump(src, n=100, files_rows=100)
    score_reviews(input=src, output=out, registry=registry["uri"])
    other = str(tmp_path / "other")
    make_dump(other, n=50, files_rows=50, seed=9)
    with pytest.raises(ScoringError, match="other inputs"):
        score_reviews(input=other, output=out, registry=registry["uri"])
    # Same inputs but a different model version: refuses to mix versions.
    reg = ModelRegistry(registry["uri"])
    v2 = reg.register(registry["model"], reg.preprocessing(registry["version"]), VOCAB.to_json(), {"preset": "seed"},
                      probe_batch(VOCAB.size, CONFIG.maxlen, n=16))
    with pytest.raises(ScoringError, match="scored by model"):
        score_reviews(input=src, output=out, registry=registry["uri"], model=v2)
    assert score_reviews(input=src, output=out, registry=registry["uri"], model=v2,
                         overwrite=True)["model_version"] == v2


def test_missing_input_is_a_clear_error(tmp_path, registry, prefect_api):
    with pytest.raises(FileNotFoundError, match="no such file"):
        score_reviews(input=str(tmp_path / "nope"), output=str(tmp_path / "out"), registry=registry["uri"])


def test_runs_with_different_models_never_share_an_output(tmp_path, registry):
    from models.output_dataset import ClaimHeartbeat
    from tasks.scoring import claim_output

    out = str(tmp_path / "out")
    first = claim_output.fn(out, "model-a", "run-1", "layout-1")
    # The same model and layout may share the output (its parts are identical) ...
    same = claim_output.fn(out, "model-a", "run-2", "layout-1")
    # ... another model or another unit layout may not, while those claims are live.
    with pytest.raises(ScoringError, match="model model-a"):
        claim_output.fn(out, "model-b", "run-3", "layout-1")
    with pytest.raises(ScoringError, match="another unit layout"):
        claim_output.fn(out, "model-a", "run-4", "layout-2")
    assert sorted(os.listdir(tmp_path / "out" / "_claims")) == sorted([first, same])
    # Leaving the heartbeat releases a claim.
    for name in (first, same):
        with ClaimHeartbeat(out, name, interval=0.05):
            pass
    assert not (tmp_path / "out" / "_claims").exists(), "the last release leaves no empty _claims/ behind"
    claim_output.fn(out, "model-b", "run-5")
    # A claim whose run stopped refreshing it goes stale after its time-to-live, and is removed.
    claim_output.fn(out, "model-c", "run-6", ttl_seconds=0.0)
    assert os.listdir(tmp_path / "out" / "_claims") == ["run-6.json"]


def test_claim_of_a_dead_process_on_this_host_is_stale(tmp_path):
    import json
    import socket
    import subprocess

    from tasks.scoring import claim_output

    out = tmp_path / "out"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / "_claims").mkdir(parents=True)
    (out / "_claims" / "old.json").write_text(json.dumps({
        "run_id": "old", "model_version": "model-a", "layout": "", "host": socket.gethostname(), "pid": dead.pid,
        "created_at": "2026-01-01T00:00:00+00:00", "heartbeat_at": __import__("datetime").datetime.now(
            __import__("datetime").timezone.utc).isoformat()}))
    claim_output.fn(str(out), "model-b", "new")
    assert os.listdir(out / "_claims") == ["new.json"], "the dead run's claim is removed, not just ignored"


def test_record_batches_are_capped_in_tokens():
    from models.scoring_steps import BATCH_TOKENS, record_batch_rows

    assert record_batch_rows(8192, 50) == 8192  # the seed model: the flow's batch_size
    assert record_batch_rows(8192, 500) == BATCH_TOKENS // 500 == 4194  # the default model
    assert record_batch_rows(8192, 2000) == 1048
    assert record_batch_rows(8192, 100_000) == 256  # never fewer than 256 rows...
    assert record_batch_rows(100, 500) == 100  # ...and never more than asked for
    assert record_batch_rows(1, 50) == 1
