"""Issue 14: ``_SUCCESS`` only when every input row is accounted for; one output dataset; duplicate ids.

Real Parquet files, the real flow on Prefect's test harness, the session S3 server where S3
matters, the ``reviews`` CLI as a real process.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.score import score_reviews
from infra import storage
from models.registry import ModelRegistry
from models.scoring import ScoringSpec
from tasks.scoring import ScoringError, plan_scoring, score_unit
from tests.cli_process import REPO, reviews_cli, subprocess_env
from tests.parquet_damage import corrupt_second_row_group
from tests.tinymodel import assert_readable_everywhere, manifest, read_output

GOOD = [[1, 4, 5], [1, 6, 7, 8], [1, 9, 3], [1, 10, 11, 12, 13]]


def _put(loc: storage.Location, name: str, ids: pa.Array, tokens=None, **kw) -> None:
    tokens = tokens if tokens is not None else [GOOD[i % len(GOOD)] for i in range(len(ids))]
    table = pa.table({"review_id": ids, "tokens": pa.array(tokens, pa.list_(pa.int32()))})
    storage.atomic_write(loc.join(name), lambda f: pq.write_table(table, f, **kw))


def _ten_files_half_unreadable(src: storage.Location) -> None:
    for i in range(5):
        _put(src, f"{i}-good.parquet", pa.array(range(100 * i, 100 * i + 40), pa.int64()))
    broken = {"5-truncated.parquet": b"PAR1 not really parquet at all",
              "6-csv.parquet": b"review_id,tokens\n1,\"[1, 4]\"\n"}
    for name, data in broken.items():
        storage.atomic_write(src.join(name), data)
    # Readable footers, schemas that do not fit: their rows are known.
    storage.atomic_write(src.join("7-no-id.parquet"), lambda f: pq.write_table(
        pa.table({"id": [1, 2, 3], "tokens": [[1, 4]] * 3}), f))
    storage.atomic_write(src.join("8-text-tokens.parquet"), lambda f: pq.write_table(
        pa.table({"review_id": [1, 2], "tokens": ["1 4", "1 5"]}), f))
    storage.atomic_write(src.join("9-struct-tokens.parquet"), lambda f: pq.write_table(
        pa.table({"review_id": [1], "tokens": pa.array([{"a": 1}])}), f))


def _assert_totals_add_up(m: dict) -> None:
    for f in m["inputs"]:
        assert f["rows_in"] == f["rows_scored"] + f["rows_rejected"], f
    t = m["totals"]
    assert t["rows_in"] == t["rows_scored"] + t["rows_rejected"], t


@pytest.mark.parametrize("where", ["local", "s3"])
def test_unreadable_files_fail_the_run_unless_allowed(where, tmp_path, registry, prefect_api, request):
    base = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    src, out = f"{base}/in", f"{base}/out"
    _ten_files_half_unreadable(storage.resolve(src))
    with pytest.raises(ScoringError, match=r"5 input file\(s\) could not be read.*allow_failed_files"):
        score_reviews(input=src, output=out, registry=registry["uri"], max_reject_fraction=1.0)
    out_loc = storage.resolve(out)
    assert not storage.exists(out_loc.join("_SUCCESS"))
    m = manifest(out)
    files = {f["uri"].rsplit("/", 1)[-1]: f for f in m["inputs"]}
    failed = {n for n, f in files.items() if f["error"]}
    assert failed == {"5-truncated.parquet", "6-csv.parquet", "7-no-id.parquet", "8-text-tokens.parquet",
                      "9-struct-tokens.parquet"}
    for name in failed:
        assert name in files[name]["error"]
    assert "missing column 'review_id'" in files["7-no-id.parquet"]["error"]
    # Rows from the footer where it is readable (0 only where even the footer is not).
    assert [files[n]["rows_in"] for n in sorted(failed)] == [0, 0, 3, 2, 1]
    assert m["totals"]["rows_in"] == 200 + 6 and m["totals"]["rows_scored"] == 200
    assert m["totals"]["rows_failed"] == m["totals"]["rows_rejected"] == 6
    _assert_totals_add_up(m)

    # Opted in: the failed files' rows are rejected rows, and count towards the reject limit.
    with pytest.raises(ScoringError, match="rejected"):
        score_reviews(input=src, output=out, registry=registry["uri"], allow_failed_files=True,
                      max_reject_fraction=0.02)
    assert not storage.exists(out_loc.join("_SUCCESS"))
    summary = score_reviews(input=src, output=out, registry=registry["uri"], allow_failed_files=True,
                            max_reject_fraction=0.05)
    assert storage.exists(out_loc.join("_SUCCESS"))
    assert summary["rows_in"] == 206 and summary["rows_rejected"] == 6 and summary["files_failed"] == 5
    _assert_totals_add_up(manifest(out))
    assert_readable_everywhere(out)


def test_input_with_no_readable_file_fails_clearly(tmp_path, registry, prefect_api):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "only.parquet").write_bytes(b"not parquet")
    with pytest.raises(ScoringError, match=r"1 input file\(s\) could not be read.*only\.parquet"):
        score_reviews(input=str(tmp_path / "in"), output=str(tmp_path / "out"), registry=registry["uri"])
    assert manifest(str(tmp_path / "out"))["totals"]["files_failed"] == 1
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_corrupt_row_group_fails_the_run_unless_allowed(tmp_path, registry, prefect_api):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    path = str(src / "corrupt-rg.parquet")
    pq.write_table(pa.table({"review_id": pa.array(range(200), pa.int64()),
                             "tokens": pa.array([[1] + [3 + (i * 7 + j) % 12 for j in range(40)] for i in range(200)],
                                                pa.list_(pa.int32()))}), path, row_group_size=100, compression="zstd")
    corrupt_second_row_group(path)
    with pytest.raises(ScoringError, match="corrupt-rg.parquet row groups 1-1"):
        score_reviews(input=str(src), output=out, registry=registry["uri"], max_rows_per_unit=100,
                      max_reject_fraction=1.0)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    m = manifest(out)
    assert m["totals"]["units_failed"] == 1 and m["totals"]["rows_failed"] == 100
    assert m["totals"]["rows_scored"] == 100 and m["totals"]["rows_rejected"] == 100
    _assert_totals_add_up(m)
    # A re-run resumes (the failed unit's empty part is committed) and fails the same way ...
    with pytest.raises(ScoringError, match="row groups 1-1"):
        score_reviews(input=str(src), output=out, registry=registry["uri"], max_rows_per_unit=100,
                      max_reject_fraction=1.0)
    # ... until the user accepts the loss: then those rows are rejected rows.
    summary = score_reviews(input=str(src), output=out, registry=registry["uri"], max_rows_per_unit=100,
                            max_reject_fraction=0.5, allow_failed_files=True)
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert summary["rows_scored"] == 100 and summary["rows_rejected"] == 100
    assert_readable_everywhere(out)


def test_mixed_integer_id_types_make_one_dataset(tmp_path, registry, prefect_api):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    loc = storage.resolve(str(src))
    bad = [GOOD[0], [1, 99]]  # one rejected row per file, so _rejected/ mixes types too
    _put(loc, "a-int32.parquet", pa.array([1, 2], pa.int32()), bad)
    _put(loc, "b-int64.parquet", pa.array([2**40, 2**40 + 1], pa.int64()), bad)
    _put(loc, "c-uint16.parquet", pa.array([7, 65535], pa.uint16()), bad)
    _put(loc, "d-int8-empty.parquet", pa.array([], pa.int8()), [])
    summary = score_reviews(input=str(src), output=out, registry=registry["uri"], max_reject_fraction=1.0)
    assert summary["rows_scored"] == 3 and summary["rows_rejected"] == 3
    assert assert_readable_everywhere(out) == {"scored": 3, "_rejected": 3}
    assert manifest(out)["id_type"] == "int64"
    t = read_output(out)
    assert t.schema.field("review_id").type == pa.int64()
    assert sorted(t.column("review_id").to_pylist()) == [1, 7, 2**40]


def test_dictionary_and_plain_string_ids_make_one_dataset(tmp_path, registry, prefect_api):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    loc = storage.resolve(str(src))
    _put(loc, "a-dict.parquet", pa.array(["x", "y", "x"]).dictionary_encode(), [GOOD[0], GOOD[1], [1, 99]])
    _put(loc, "b-string.parquet", pa.array(["z", "w"]), [GOOD[2], [1, 99]])
    score_reviews(input=str(src), output=out, registry=registry["uri"], max_reject_fraction=1.0)
    assert assert_readable_everywhere(out) == {"scored": 3, "_rejected": 2}
    assert read_output(out).schema.field("review_id").type == pa.string()


def test_parts_with_another_id_type_are_not_reused(tmp_path, registry, prefect_api):
    src, out = tmp_path / "in", str(tmp_path / "out")
    src.mkdir()
    loc = storage.resolve(str(src))
    _put(loc, "a-int32.parquet", pa.array([1, 2], pa.int32()))
    score_reviews(input=str(src), output=out, registry=registry["uri"])
    _put(loc, "b-int64.parquet", pa.array([2**40], pa.int64()))  # added to the dump later
    with pytest.raises(ScoringError, match="has int32 ids, this run's inputs need int64"):
        score_reviews(input=str(src), output=out, registry=registry["uri"])
    score_reviews(input=str(src), output=out, registry=registry["uri"], overwrite=True)
    assert assert_readable_everywhere(out) == {"scored": 3}


def test_string_and_integer_ids_are_refused_at_planning(tmp_path, registry, prefect_api):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    loc = storage.resolve(str(src))
    _put(loc, "a-int.parquet", pa.array([1, 2], pa.int64()))
    _put(loc, "b-str.parquet", pa.array(["1", "2"]))
    with pytest.raises(ScoringError, match=r"a-int\.parquet.*b-str\.parquet.*one id type"):
        score_reviews(input=str(src), output=str(out), registry=registry["uri"])
    assert not any(p.name.startswith("part-") for p in out.glob("*")), "nothing scored"
    assert not (out / "_SUCCESS").exists()


def _duplicate_dump(src: storage.Location) -> None:
    # ids 0..59 in a; b repeats 10..14 (other file) and itself (5000 twice, across row groups).
    _put(src, "a.parquet", pa.array(range(60), pa.int64()), row_group_size=20)
    b_ids = [5000, 10, 11, 5001, 12, 13, 14, 5000, 5002, 5003]
    _put(src, "b.parquet", pa.array(b_ids, pa.int64()), row_group_size=4)


def _rejected(out: str) -> dict[tuple[str, int], str]:
    import pyarrow.dataset as ds

    loc = storage.resolve(out).join("_rejected")
    t = ds.dataset(loc.path, filesystem=loc.fs, format="parquet").to_table()
    return {(s.rsplit("/", 1)[-1], r): why for s, r, why in zip(t.column("source").to_pylist(),
                                                                t.column("row").to_pylist(),
                                                                t.column("reason").to_pylist())}


def test_duplicate_ids_are_counted_kept_or_rejected_in_plan_order(tmp_path, registry, prefect_api):
    src = str(tmp_path / "in")
    _duplicate_dump(storage.resolve(src))
    kept = score_reviews(input=src, output=str(tmp_path / "keep"), registry=registry["uri"], max_rows_per_unit=20)
    assert kept["rows_scored"] == 70 and kept["duplicate_ids"] == 6
    assert manifest(str(tmp_path / "keep"))["totals"]["duplicate_ids"] == 6

    out = str(tmp_path / "reject")
    summary = score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=4,
                            on_duplicate_id="reject", max_reject_fraction=0.2)
    assert summary["rows_scored"] == 64 and summary["rows_rejected"] == 6 and summary["duplicate_ids"] == 6
    a = os.path.join(src, "a.parquet")
    b = os.path.join(src, "b.parquet")
    assert _rejected(out) == {
        **{("b.parquet", r): f"duplicate review_id {i}: first occurrence in {a} row {i}"
           for r, i in [(1, 10), (2, 11), (4, 12), (5, 13), (6, 14)]},
        ("b.parquet", 7): f"duplicate review_id 5000: first occurrence in {b} row 0"}
    ids = read_output(out).column("review_id").to_pylist()
    assert len(ids) == len(set(ids)) == 64
    m = manifest(out)
    assert m["parameters"]["on_duplicate_id"] == "reject"
    _assert_totals_add_up(m)


def test_duplicate_rejection_resumes_exactly_once(tmp_path, registry, prefect_api):
    src, out, fresh = str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "fresh")
    _duplicate_dump(storage.resolve(src))
    reg = ModelRegistry(registry["uri"])
    spec = ScoringSpec(preprocessing=reg.preprocessing(registry["version"]), model_version=registry["version"],
                       on_duplicate_id="reject")
    plan = plan_scoring.fn(src, out, spec, 4, False)
    spec = dataclasses.replace(spec, output_id_type=plan["id_type"])
    # A run that died after committing the units holding later occurrences, in reverse order.
    late = [u for u in plan["units"] if u["unit_id"] in plan["duplicates"]][::-1]
    assert len(late) == 2
    for unit in late:
        score_unit.fn(unit, out, spec, registry["uri"], duplicates=plan["duplicates"][unit["unit_id"]])
    summary = score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=4,
                            on_duplicate_id="reject", max_reject_fraction=0.2)
    assert manifest(out)["totals"]["units_skipped"] == 2 and summary["duplicate_ids"] == 6
    score_reviews(input=src, output=fresh, registry=registry["uri"], max_rows_per_unit=4, on_duplicate_id="reject",
                  max_reject_fraction=0.2)
    assert read_output(out).sort_by("review_id").equals(read_output(fresh).sort_by("review_id"))
    assert _rejected(out) == _rejected(fresh)
    # Parts written under one duplicate policy are never reused under the other.
    with pytest.raises(ScoringError, match="on_duplicate_id=reject"):
        score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=4)


def test_cli_fails_on_unreadable_input_and_passes_the_new_flags(tmp_path, registry, prefect_api):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    loc = storage.resolve(str(src))
    _put(loc, "a.parquet", pa.array([1, 2, 3, 1], pa.int64()))
    (src / "b-broken.parquet").write_bytes(b"PAR1 nope")
    cmd = reviews_cli() + ["score", str(src), str(out), "--registry", registry["uri"], "--max-reject-fraction", "0.5"]
    run = subprocess.run(cmd, env=subprocess_env(), cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "b-broken.parquet" in run.stderr, run.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    out2 = tmp_path / "out2"
    cmd[cmd.index(str(out))] = str(out2)
    run = subprocess.run(cmd + ["--allow-failed-files", "--on-duplicate-id", "reject"], env=subprocess_env(),
                         cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out2 / "_SUCCESS").exists()
    m = manifest(str(out2))
    assert m["parameters"]["allow_failed_files"] is True and m["parameters"]["on_duplicate_id"] == "reject"
    assert m["totals"]["rows_scored"] == 3 and m["totals"]["duplicate_ids"] == 1
