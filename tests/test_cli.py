"""The `reviews` CLI: scoring summary line, one-line errors, help texts, models list/promote/rollback,
progress line."""

from __future__ import annotations

import argparse
import io
import json
import re
import secrets

from tasks.progress import ProgressBar
from tests.cli_process import run_cli
from tests.tinymodel import make_dump


def test_score_cli_prints_one_json_summary(tmp_path, registry, prefect_api):
    make_dump(str(tmp_path / "in"), n=120, files_rows=60, rg=30)
    code, out, err = run_cli("score", str(tmp_path / "in"), str(tmp_path / "out"), "--registry", registry["uri"])
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert {k: summary[k] for k in ("rows_in", "rows_scored", "rows_rejected", "files")} == \
        {"rows_in": 120, "rows_scored": 120, "rows_rejected": 0, "files": 2}
    assert summary["model_version"] == registry["version"] and summary["seconds"] > 0

    # Tagged as README says, so the UI's tag filter finds CLI runs next to deployment runs.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        tagged = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["reviews", "scoring"])))
    assert [r for r in tagged if r.parameters.get("input") == str(tmp_path / "in")]


def test_score_cli_error_is_one_clear_line(tmp_path, registry, prefect_api):
    code, _, err = run_cli("score", str(tmp_path / "nothing-here"), str(tmp_path / "out"),
                           "--registry", registry["uri"])
    # Prefect logs the failed run on the console, its traceback only in the run's logs (or with
    # --debug); the command ends on one clear line.
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("reviews: error: ") and "nothing-here: no such file or directory" in last
    assert "Traceback" not in err, err
    code, _, err = run_cli("--debug", "score", str(tmp_path / "nothing-here"), str(tmp_path / "out"),
                           "--registry", registry["uri"])
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1] == last


def test_models_list_promote_rollback(tmp_path, registry):
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


def test_wrong_s3_secret_is_one_line_naming_the_given_uri(tmp_path, registry, s3_bucket, s3_env,
                                                          s3_server, prefect_api):
    make_dump(str(tmp_path / "in"), n=60, files_rows=60, rg=30)
    wrong = "WRONG" + secrets.token_hex(12).upper()
    s3_env(AWS_SECRET_ACCESS_KEY=wrong)
    cases = [
        # The first S3 write of a run is its claim, s3://.../out/_claims/<uuid>.json: the user gave .../out.
        (f"{s3_bucket}/out", ["score", str(tmp_path / "in"), f"{s3_bucket}/out", "--registry", registry["uri"]]),
        (f"{s3_bucket}/models", ["models", "list", "--registry", f"{s3_bucket}/models"]),
        # Checked before the data loads and minutes of training, not at registration.
        (f"{s3_bucket}/models", ["train", "--registry", f"{s3_bucket}/models", "--data", str(tmp_path / "no.tgz")]),
    ]
    for uri, argv in cases:
        code, _, err = run_cli(*argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (argv, err)
        assert lines[0].startswith(f"reviews: error: {uri}: the S3 server refused the credentials"), (argv, err)
        assert "access key and secret" in err and "_claims" not in err and "Traceback" not in err, (argv, err)
        assert wrong not in err and s3_server.secret_key not in err


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, path + (name,))


def _help_of(lines: list[str], option: str) -> str:
    """The help text argparse rendered for ``option`` (without the option and its metavar)."""
    start = next(i for i, line in enumerate(lines) if re.match(rf"\s+{re.escape(option)}(\s|,|$)", line))
    # The invocation and its help are two or more spaces apart, or the help starts on the next line.
    parts = re.split(r"\s{2,}", lines[start].strip(), maxsplit=1)
    text = parts[1:]
    for line in lines[start + 1:]:
        if not line.strip() or line.lstrip().startswith("-") or len(line) - len(line.lstrip()) <= 2:
            break
        text.append(line.strip())
    return " ".join(text)


def test_every_option_has_help_that_shows_its_default(monkeypatch):
    from flows.cli import build_parser

    monkeypatch.setenv("COLUMNS", "300")  # no wrapping: argparse breaks long defaults (paths) at hyphens
    rendered = {}
    for path, parser in _subcommands(build_parser()):
        text = rendered[path] = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            where = f"reviews {' '.join(path)} {action.option_strings[0]}"
            assert (action.help or "").strip(), f"{where}: no help text"
            shown = _help_of(text.splitlines(), action.option_strings[0])
            assert "default" in shown, f"{where}: the help does not give the default: {shown!r}"
            if action.default is not None and not isinstance(action.default, bool):  # a flag may say "off"
                assert str(action.default) in shown, f"{where}: default {action.default!r} not in {shown!r}"
    assert {("data", "fetch"), ("train",), ("models", "list"), ("models", "promote"), ("models", "rollback"),
            ("score",), ("quickstart",), ("serve",)} <= set(rendered)
    assert "(default: 0.05)" in _help_of(rendered[("score",)].splitlines(), "--max-reject-fraction")
    maxlen = _help_of(rendered[("train",)].splitlines(), "--maxlen")
    assert "default: the preset's value" in maxlen and "seed uses 50" in maxlen and "default uses 500" in maxlen


def test_storage_error_line_names_the_given_uri_that_holds_the_failure(tmp_path):
    from flows.cli_support import storage_error_line
    from infra.storage import StorageError

    refused = StorageError("s3://b/out/_claims/c0.json: AWS Error ...", uri="s3://b/out/_claims/c0.json",
                           reason="refused")
    given = [str(tmp_path), "s3://b/", "s3a://b/out/", "s3://b/outer"]
    assert storage_error_line(refused, given) == "s3a://b/out/: refused", "the closest URI, as the user spelled it"
    assert storage_error_line(refused, [str(tmp_path)]) == "s3://b/out/_claims/c0.json: refused"
    glob = StorageError("x", uri="s3://b/in/*.parquet", reason="refused")
    assert storage_error_line(glob, ["s3://b/in/*.parquet"]) == "s3://b/in/*.parquet: refused"
    local = StorageError("x", uri=str(tmp_path / "reg" / "champion.json"), reason="refused")
    assert storage_error_line(local, ["reg-elsewhere", str(tmp_path / "reg")]) == f"{tmp_path / 'reg'}: refused"
    assert storage_error_line(StorageError("an object's own problem"), given) == "an object's own problem"


def test_score_options_are_the_flow_parameters():
    """``reviews score`` passes the flow's parameters by name (flow_arguments): every parameter has
    its option, with the flow's default and choices, so a run means the same from the CLI, from
    Python and from a deployment."""
    import inspect
    import typing

    from flows.cli import build_parser
    from flows.cli_support import flow_arguments
    from flows.score import score_reviews

    score = next(sub for path, sub in _subcommands(build_parser()) if path == ("score",))
    options = {a.dest: a for a in score._actions}
    signature = inspect.signature(score_reviews.fn)
    hints = typing.get_type_hints(score_reviews.fn)
    for name, param in signature.parameters.items():
        assert name in options, f"flow parameter {name!r} has no `reviews score` option"
        option = options[name]
        if param.default is not inspect.Parameter.empty and name != "registry":  # None: $REVIEWS_REGISTRY's
            assert option.default == param.default, (name, option.default, param.default)
        if typing.get_origin(hints[name]) is typing.Literal:
            assert tuple(option.choices) == typing.get_args(hints[name]), name
    args = score.parse_args(["in", "out", "--batch-size", "7", "--overwrite", "--track"])
    passed = flow_arguments(score_reviews, args)
    assert list(passed) == list(signature.parameters), "every parameter, and nothing else (not --track)"
    assert passed["batch_size"] == 7 and passed["overwrite"] is True and passed["input"] == "in"
