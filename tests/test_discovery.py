"""``score-new-dumps``: which partitions get scored, and the flow scoring them end to end.

Selection runs against real directories and the session's SeaweedFS bucket; the flow runs
in Prefect's test harness with ``deployment=None`` (score-reviews as subflows), on real
Parquet dumps and a real registered model.  The deployment path (``run_deployment`` on a
real worker) is covered in tests/test_deployments.py.
"""

from __future__ import annotations

import pytest

from infra import storage
from models.dump_discovery import MANIFEST, SUCCESS, check_roots, discover, mark_ready
from tests.tinymodel import assert_exactly_once, make_dump, manifest, register_tiny


@pytest.fixture(params=["local", "s3"])
def roots(request, tmp_path) -> tuple[str, str]:
    """(input_root, output_root) on local disk or in a fresh S3 bucket."""
    if request.param == "local":
        return str(tmp_path / "dumps"), str(tmp_path / "scores")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/dumps", f"{bucket}/scores"


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict[str, str]:
    uri = str(tmp_path_factory.mktemp("registry"))
    return {"uri": uri, "version": register_tiny(uri)}


def _put(uri: str, name: str, data: bytes = b"") -> None:
    storage.atomic_write(storage.resolve(uri).join(name), data)


def _dump(root: str, name: str, ready: bool = True, seed: int = 0, first_id: int = 1000) -> list[int]:
    table = make_dump(f"{root}/{name}", n=120, files_rows=60, rg=30, seed=seed, first_id=first_id)
    if ready:
        mark_ready(f"{root}/{name}")
    return table.column("review_id").to_pylist()


def _scored_output(root: str, name: str, version: str, complete: bool = True) -> None:
    """What score-reviews leaves behind, for selection tests that need no model."""
    out = f"{root}/{name}"
    _put(out, "part-00000.parquet", b"not read by the selection")
    storage.write_json(storage.resolve(out).join(MANIFEST), {"model": {"version": version}})
    if complete:
        _put(out, SUCCESS)


def test_selection(roots):
    src, dst = roots
    for name in ("a-new", "b-done", "c-incomplete", "d-old-model", "e-half-written", "_staging"):
        make_dump(f"{src}/{name}", n=20, files_rows=20, rg=10)
    for name in ("a-new", "b-done", "c-incomplete", "d-old-model", "_staging"):
        mark_ready(f"{src}/{name}")
    _scored_output(dst, "b-done", "v2")
    _scored_output(dst, "c-incomplete", "v2", complete=False)
    _scored_output(dst, "d-old-model", "v1")
    # A half-written partition's output dir must not make it look scored either.
    _scored_output(dst, "e-half-written", "v2", complete=False)

    found = discover(src, dst)
    assert [(p.name, p.reason, p.overwrite) for p in found.to_score] == \
        [("a-new", "new", False), ("c-incomplete", "incomplete", False)]
    assert found.skipped_complete == ["b-done", "d-old-model"]
    assert found.not_ready == ["e-half-written"]  # `_staging` is hidden: not a partition at all
    assert found.to_score[0].input == storage.resolve(f"{src}/a-new").uri
    assert found.to_score[0].output == storage.resolve(f"{dst}/a-new").uri

    # Rescore on promotion: only the complete output of another model is overwritten.
    found = discover(src, dst, champion="v2")
    assert [(p.name, p.reason, p.overwrite, p.scored_by) for p in found.to_score] == \
        [("a-new", "new", False, None), ("c-incomplete", "incomplete", False, None),
         ("d-old-model", "rescore", True, "v1")]
    assert found.skipped_complete == ["b-done"]


def test_selection_of_empty_or_missing_roots(roots):
    src, dst = roots
    found = discover(src, dst)
    assert (found.to_score, found.skipped_complete, found.not_ready) == ([], [], [])


def test_output_inside_an_input_partition_is_refused(tmp_path):
    with pytest.raises(ValueError, match="is the input root"):
        check_roots(str(tmp_path), str(tmp_path) + "/")
    with pytest.raises(ValueError, match="inside input partition 'day1'"):
        check_roots(str(tmp_path), str(tmp_path / "day1" / "scores"))
    check_roots(str(tmp_path / "dumps"), str(tmp_path / "scores"))
    check_roots(str(tmp_path), str(tmp_path / "_scores"))  # hidden: never listed as a partition


def _run(src: str, dst: str, registry_uri: str, **kw):
    from flows.discover import score_new_dumps

    state = score_new_dumps(input_root=src, output_root=dst, deployment=None, registry=registry_uri,
                            score_parameters={"batch_size": 64, "max_rows_per_unit": 40}, return_state=True, **kw)
    return state, state.result(raise_on_failure=False)


def test_flow_scores_new_dumps_waits_for_ready_and_is_idempotent(tmp_path, registry, prefect_api):
    src, dst = str(tmp_path / "dumps"), str(tmp_path / "scores")
    ids1 = _dump(src, "2024-06-01", seed=1, first_id=0)
    ids2 = _dump(src, "2024-06-02", seed=2, first_id=1000)
    ids3 = _dump(src, "2024-06-03", ready=False, seed=3, first_id=2000)  # the producer is still writing

    state, summary = _run(src, dst, registry["uri"])
    assert state.is_completed(), summary
    assert sorted(summary["scored"]) == ["2024-06-01", "2024-06-02"]
    assert summary["not_ready"] == ["2024-06-03"] and summary["failed"] == {}
    for name, ids in (("2024-06-01", ids1), ("2024-06-02", ids2)):
        assert_exactly_once(f"{dst}/{name}", ids, registry["version"])  # _SUCCESS, manifest, every id once
        s = summary["scored"][name]
        assert (s["reason"], s["overwrite"], s["model_version"], s["rows_scored"]) == \
            ("new", False, registry["version"], 120)
        assert s["flow_run_id"]
        assert manifest(f"{dst}/{name}")["parameters"]["batch_size"] == 64  # score_parameters reached the run
    assert not storage.exists(storage.resolve(f"{dst}/2024-06-03"))

    # Nothing new: a second run scores nothing and touches no output.
    success_mtime = storage.resolve(f"{dst}/2024-06-01").join(SUCCESS)
    before = success_mtime.fs.get_file_info(success_mtime.path).mtime
    state, summary = _run(src, dst, registry["uri"])
    assert state.is_completed()
    assert summary["scored"] == {} and summary["failed"] == {}
    assert summary["skipped_complete"] == ["2024-06-01", "2024-06-02"] and summary["not_ready"] == ["2024-06-03"]
    assert success_mtime.fs.get_file_info(success_mtime.path).mtime == before

    # The producer finishes: the next run scores the partition.
    mark_ready(f"{src}/2024-06-03")
    state, summary = _run(src, dst, registry["uri"])
    assert state.is_completed()
    assert list(summary["scored"]) == ["2024-06-03"] and summary["not_ready"] == []
    assert_exactly_once(f"{dst}/2024-06-03", ids3, registry["version"])


def test_rescore_on_promotion(s3_bucket, tmp_path, prefect_api):
    from models.registry import ModelRegistry

    reg_uri = str(tmp_path / "registry")
    v1 = register_tiny(reg_uri, seed=3)  # the first version registered is champion
    src, dst = f"{s3_bucket}/dumps", f"{s3_bucket}/scores"
    ids = {name: _dump(src, name, seed=i, first_id=1000 * i) for i, name in enumerate(["p1", "p2"])}
    state, summary = _run(src, dst, reg_uri, rescore_on_promotion=True)
    assert state.is_completed() and sorted(summary["scored"]) == ["p1", "p2"]

    v2 = register_tiny(reg_uri, seed=5)
    ModelRegistry(reg_uri).promote(v2, reason="test")
    # Without rescore_on_promotion, complete outputs stay as they are.
    state, summary = _run(src, dst, reg_uri)
    assert summary["scored"] == {} and summary["skipped_complete"] == ["p1", "p2"]

    # p3 arrives together with the promotion: new, so scored without overwrite, by the new champion.
    ids["p3"] = _dump(src, "p3", seed=7, first_id=3000)
    state, summary = _run(src, dst, reg_uri, rescore_on_promotion=True)
    assert state.is_completed(), summary
    got = {n: (s["reason"], s["overwrite"], s["scored_by_before"], s["model_version"])
           for n, s in summary["scored"].items()}
    assert got == {"p1": ("rescore", True, v1, v2), "p2": ("rescore", True, v1, v2), "p3": ("new", False, None, v2)}
    for name, expected in ids.items():
        assert_exactly_once(f"{dst}/{name}", expected, v2)  # no part of v1 survives

    state, summary = _run(src, dst, reg_uri, rescore_on_promotion=True)
    assert summary["scored"] == {} and summary["skipped_complete"] == ["p1", "p2", "p3"]


def test_failed_partition_is_reported_and_the_others_still_score(tmp_path, registry, prefect_api):
    src, dst = str(tmp_path / "dumps"), str(tmp_path / "scores")
    ids = _dump(src, "good", seed=1)
    bad = tmp_path / "dumps" / "bad"
    bad.mkdir(parents=True)
    (bad / "reviews-00000.parquet").write_text("review_id,tokens\n1,[1 2 3]\n")  # a CSV, named .parquet
    mark_ready(str(bad))

    state, summary = _run(src, dst, registry["uri"], max_concurrent=1)
    assert state.is_failed()
    assert "1 of 2 partition(s) failed: bad" in state.message
    assert list(summary["scored"]) == ["good"]
    assert list(summary["failed"]) == ["bad"] and "reviews-00000.parquet" in summary["failed"]["bad"]
    assert_exactly_once(f"{dst}/good", ids, registry["version"])
    assert not storage.exists(storage.resolve(f"{dst}/bad").join(SUCCESS))

    # The failed partition is tried again by the next run (and fails the same way); the good one is left.
    state, summary = _run(src, dst, registry["uri"])
    assert state.is_failed() and list(summary["failed"]) == ["bad"] and summary["skipped_complete"] == ["good"]


def test_bad_score_parameters_are_refused_before_anything_runs(tmp_path, registry, prefect_api):
    from flows.discover import score_new_dumps

    src, dst = str(tmp_path / "dumps"), str(tmp_path / "scores")
    _dump(src, "p1")
    for bad, match in (({"batchsize": 64}, "batchsize"), ({"overwrite": True}, "overwrite")):
        state = score_new_dumps(input_root=src, output_root=dst, deployment=None, registry=registry["uri"],
                                score_parameters=bad, return_state=True)
        assert state.is_failed() and match in state.message
    state = score_new_dumps(input_root=src, output_root=dst, deployment=None, registry=registry["uri"],
                            rescore_on_promotion=True, score_parameters={"model": "latest"}, return_state=True)
    assert state.is_failed() and "rescore_on_promotion" in state.message
    assert not storage.exists(storage.resolve(dst))


def test_runs_over_one_output_root_queue_on_one_slot(tmp_path, registry, prefect_api):
    """An hourly and an after-promotion run never score the same output root at once: the second
    waits for the slot, then discovers afresh (and finds the first one's work done)."""
    import threading

    from prefect.client.orchestration import get_client

    from tasks.discovery import output_root_slot, slot_name

    src, dst = str(tmp_path / "dumps"), str(tmp_path / "scores")
    ids = _dump(src, "2024-07-01", seed=4, first_id=0)
    results: list = []
    with output_root_slot(dst):  # another run over dst holds the slot
        worker = threading.Thread(target=lambda: results.append(_run(src, dst, registry["uri"])))
        worker.start()
        worker.join(8)
        assert worker.is_alive() and not storage.exists(storage.resolve(f"{dst}/2024-07-01")), \
            "the run scored while another run held the output root's slot"
    worker.join(120)
    (state, summary), = results
    assert state.is_completed() and list(summary["scored"]) == ["2024-07-01"], summary
    assert_exactly_once(f"{dst}/2024-07-01", ids, registry["version"])
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(slot_name(dst))
    assert (limit.limit, limit.active_slots) == (1, 0), "created once, released after the run"
    assert slot_name(dst + "/") == slot_name(dst) != slot_name(str(tmp_path / "other"))


def test_output_interrupted_under_an_older_model_is_restarted_with_the_new_one(tmp_path, prefect_api):
    """A run killed before its manifest leaves only parts; after a promotion, resuming them would be
    refused on every attempt, so the hourly run (no rescore_on_promotion) starts that output over."""
    from models.registry import ModelRegistry

    reg_uri = str(tmp_path / "registry")
    v1 = register_tiny(reg_uri, seed=3)
    src, dst = str(tmp_path / "dumps"), str(tmp_path / "scores")
    ids = _dump(src, "p1", seed=1, first_id=0)
    state, _ = _run(src, dst, reg_uri)
    assert state.is_completed()
    out = storage.resolve(f"{dst}/p1")
    for name in (SUCCESS, MANIFEST):  # interrupted after its parts, before the manifest
        storage.delete_file(out.join(name))
    assert discover(src, dst).to_score[0].reason == "incomplete", "without a model to compare: resumed"

    v2 = register_tiny(reg_uri, seed=5)
    ModelRegistry(reg_uri).promote(v2, reason="test")
    (p,) = discover(src, dst, model=v2).to_score
    assert (p.reason, p.overwrite, p.scored_by) == ("restart", True, v1)
    state, summary = _run(src, dst, reg_uri)
    assert state.is_completed(), summary
    s = summary["scored"]["p1"]
    assert (s["reason"], s["overwrite"], s["scored_by_before"], s["model_version"]) == ("restart", True, v1, v2)
    assert_exactly_once(f"{dst}/p1", ids, v2)
