"""The output dataset and the scoring steps as plain objects and functions: no Prefect run."""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from infra import storage
from infra.part_writer import PartWriter
from models.output_dataset import ClaimHeartbeat, OutputDataset, ScoringError, part_name
from models.predictor_cache import cached_predictor
from models.scoring import output_schema
from models.scoring_steps import (
    build_manifest,
    choose_model,
    plan,
    score_unit,
    scoring_spec,
    unit_layout,
)
from tests.tinymodel import make_dump, register_tiny


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("registry"))
    return {"uri": uri, "version": register_tiny(uri)}


def _files(rows_in: int, rejected: int, error: str | None = None) -> tuple[list[dict], dict]:
    files = [{"uri": "in.parquet", "rows_in": rows_in, "rows_scored": rows_in - rejected,
              "rows_rejected": rejected, "rows_failed": rejected if error else 0, "error": error}]
    return files, {"rows_in": rows_in, "rows_rejected": rejected}


def _part(out: OutputDataset, unit_id: str, **meta) -> None:
    PartWriter(out.part(unit_id), output_schema(pa.int64()), meta).commit()


def test_commit_marks_success_only_when_every_rule_holds(tmp_path):
    out = OutputDataset(str(tmp_path / "out"))
    _part(out, "a")
    with pytest.raises(ScoringError, match="rejected"):
        out.commit(*_files(100, 6), ["a"], max_reject_fraction=0.05)
    with pytest.raises(ScoringError, match="allow_failed_files"):
        out.commit(*_files(100, 1, error="in.parquet: broken"), ["a"], max_reject_fraction=0.05)
    _part(out, "b")  # another run's
    with pytest.raises(ScoringError, match="did not plan"):
        out.commit(*_files(100, 0), ["a"], max_reject_fraction=0.05)
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    out.commit(*_files(100, 1, error="in.parquet: broken"), ["a", "b"], max_reject_fraction=0.05,
               allow_failed_files=True)
    assert (tmp_path / "out" / "_SUCCESS").exists()
    assert out.clear() == 3 and not any((tmp_path / "out").iterdir()), "parts and marker removed"


def test_planning_refuses_parts_of_other_inputs_unless_overwriting(tmp_path):
    out = OutputDataset(str(tmp_path / "out"))
    _part(out, "other")
    assert out.stray_parts(["mine"]) == [part_name("other")]
    with pytest.raises(ScoringError, match="other inputs"):
        out.check_no_other_inputs(["mine"], overwrite=False)
    out.check_no_other_inputs(["mine"], overwrite=True)
    out.check_no_other_inputs(["other"], overwrite=False)


def test_claims_without_prefect(tmp_path):
    out = OutputDataset(str(tmp_path / "out"))
    mine = out.claim("model-a", "run-1", "layout")
    with pytest.raises(ScoringError, match="model model-a"):
        out.claim("model-b", "run-2", "layout")
    with ClaimHeartbeat(out, mine, interval=0.01):
        pass
    assert not (tmp_path / "out" / "_claims").exists()


def test_steps_score_resume_and_account_without_prefect(tmp_path, registry):
    src = str(tmp_path / "in")
    make_dump(src, n=200, files_rows=100, rg=50)
    chosen = choose_model(registry["uri"])
    spec = scoring_spec(chosen)
    assert unit_layout(src, 100, spec) == f"{src}|100|review_id|tokens|None|0.5|keep", "claims of older runs"
    out = OutputDataset(str(tmp_path / "out"))
    planned = plan(src, out, spec, 100, overwrite=False)
    seen: list[int] = []

    def load():
        return cached_predictor(registry["uri"], spec.model_version)

    results = [score_unit(u, out, spec, load, on_rows=seen.append) for u in planned["units"]]
    assert sum(seen) == 200 and not any(r["skipped"] for r in results)
    again = score_unit(planned["units"][0], out, spec, lambda: pytest.fail("a finished unit loads no model"))
    assert again["skipped"] and again["rows_scored"] == results[0]["rows_scored"]
    manifest = build_manifest(out, planned, results, chosen, {}, "2026-01-01T00:00:00+00:00", 1.0)
    assert manifest["totals"]["rows_in"] == 200 and sum(manifest["score_histogram"]["counts"]) == \
        manifest["totals"]["rows_scored"]
    out.write_manifest(manifest)
    out.commit(manifest["inputs"], manifest["totals"], [r["unit_id"] for r in results], 1.0)
    assert storage.exists(out.location.join("_SUCCESS"))
    other = scoring_spec({**chosen, "version": "another"})
    with pytest.raises(ScoringError, match="scored by model"):
        score_unit(planned["units"][0], out, other, load)


def test_progress_is_drawn_by_rich_and_advance_is_a_no_op_without_a_bar():
    from tasks import progress

    progress.advance(10)  # no bar in this process: nothing happens
    assert progress.bar(10) is None, "pytest's stderr is no terminal"
    stream = io.StringIO()
    with progress.ProgressBar(300, stream=stream):
        progress.advance(100)
        progress.advance(200)
    progress.advance(5)
    assert "300/300 rows" in stream.getvalue()
