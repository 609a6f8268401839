"""The `reviews` CLI: scoring summary line, models list/promote/rollback, progress line."""

from __future__ import annotations

import io
import json

from infra.progress import ProgressBar
from tests.test_retrain_flow import run_cli
from tests.test_scoring import _make_dump, registry  # noqa: F401  (module fixture)


def test_score_cli_prints_one_json_summary(tmp_path, registry, prefect_api):  # noqa: F811
    _make_dump(str(tmp_path / "in"), n=120, files_rows=60, rg=30)
    code, out, err = run_cli("score", str(tmp_path / "in"), str(tmp_path / "out"), "--registry", registry["uri"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("rows_in", "rows_scored", "rows_rejected", "files")} == \
        {"rows_in": 120, "rows_scored": 120, "rows_rejected": 0, "files": 2}
    assert summary["model_version"] == registry["version"] and summary["seconds"] > 0


def test_score_cli_error_is_one_clear_line(tmp_path, registry, prefect_api):  # noqa: F811
    code, _, err = run_cli("score", str(tmp_path / "nothing-here"), str(tmp_path / "out"),
                           "--registry", registry["uri"])
    # Prefect logs the failed run (with its traceback); the command ends on one clear line.
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("reviews: error: ") and "nothing-here: no such file or directory" in last


def test_models_list_promote_rollback(tmp_path, registry):  # noqa: F811
    code, out, _ = run_cli("models", "list", "--registry", registry["uri"], "--json")
    listing = json.loads(out)
    assert code == 0 and listing["champion"] == registry["version"]
    code, out, _ = run_cli("models", "list", "--registry", registry["uri"])
    assert code == 0 and registry["version"] in out and "champion" in out

    from models.predictors import probe_batch
    from models.registry import ModelRegistry

    reg = ModelRegistry(registry["uri"])
    v1 = registry["version"]
    v2 = reg.register(registry["model"], reg.preprocessing(v1), None, {"preset": "seed"},
                      probe_batch(reg.preprocessing(v1).vocab_size, reg.preprocessing(v1).maxlen, n=8))
    code, out, _ = run_cli("models", "promote", v2, "--registry", registry["uri"], "--reason", "hand-picked")
    assert code == 0 and json.loads(out)["champion"] == v2 and reg.champion() == v2
    assert reg.audit_log()[-1]["reason"] == "hand-picked" and reg.audit_log()[-1]["actor"] == "cli"
    code, out, _ = run_cli("models", "rollback", "--registry", registry["uri"])
    assert code == 0 and json.loads(out)["champion"] == v1 and reg.champion() == v1
    code, _, err = run_cli("models", "promote", "no-such-version", "--registry", registry["uri"])
    assert code == 2 and "no-such-version" in err and reg.champion() == v1


def test_progress_line_shows_rows_rate_and_eta():
    stream = io.StringIO()
    with ProgressBar(1000, stream=stream) as bar:
        bar.advance(250)
        bar.advance(750)
    text = stream.getvalue()
    assert "1,000/1,000 rows" in text and "rows/s" in text and "ETA" in text
