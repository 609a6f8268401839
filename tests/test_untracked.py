"""``reviews score`` with no Prefect API: the flow's body runs untracked, with no Prefect server.

The CLI runs as a real process with no Prefect setting at all (an empty PREFECT_HOME, no
PREFECT_* variables), as on a fresh machine; the same run in-process is compared with the
tracked flow (the session's Prefect test harness), and the task retry policy is exercised
through a fault-injecting proxy in front of the real S3 server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from infra import storage
from tests.cli_process import REPO, subprocess_env
from tests.faultproxy import Fault
from tests.tinymodel import assert_exactly_once, make_dump, manifest, read_output

PART = r"/part-[^/?]+\.parquet"


def _without_prefect_settings(prefect_home: str) -> dict[str, str]:
    """The environment of a machine where Prefect was never configured."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = prefect_home
    return env


def _imported(importtime_stderr: str) -> set[str]:
    """Every module the process imported, from ``python -X importtime``'s lines on stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def _children(pid: int) -> list[str]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_score_cli_without_an_api_scores_and_starts_no_prefect_server(tmp_path, registry):
    src, out, home = str(tmp_path / "in"), str(tmp_path / "out"), tmp_path / "prefect-home"
    home.mkdir()
    table = make_dump(src, n=300, files_rows=150, rg=50)
    cmd = [sys.executable, "-X", "importtime", "-m", "flows.cli", "score", src, out, "--registry", registry["uri"],
           "--max-rows-per-unit", "100"]
    # Files, not pipes: -X importtime writes far more than a pipe holds while nobody reads it.
    out_log, err_log = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with open(out_log, "w") as stdout_f, open(err_log, "w") as stderr_f:
        p = subprocess.Popen(cmd, env=_without_prefect_settings(str(home)), cwd=str(REPO), stdout=stdout_f,
                             stderr=stderr_f, stdin=subprocess.DEVNULL)
        children: list[str] = []
        deadline = time.monotonic() + 300
        while p.poll() is None and time.monotonic() < deadline:  # a temporary server is a child while it runs
            children += _children(p.pid)
            time.sleep(0.05)
        if p.poll() is None:
            p.kill()
        p.wait(30)
    stdout, stderr = out_log.read_text(), err_log.read_text()
    assert p.returncode == 0, stderr[-3000:]

    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["rows_in"], summary["rows_scored"], summary["files"]) == (300, 300, 2)
    assert storage.exists(storage.resolve(out).join("_SUCCESS"))
    m = manifest(out)
    # 2 files of 3 row groups (50 rows each): units of at most 100 rows make 2 per file.
    assert (m["totals"]["rows_scored"], m["totals"]["units"], m["model"]["version"]) == (300, 4, registry["version"])
    assert m["parameters"]["max_rows_per_unit"] == 100 and m["parameters"]["batch_size"] == 8192
    assert_exactly_once(out, table.column("review_id").to_pylist(), registry["version"])

    # No server: no child process, its modules never imported, no database in PREFECT_HOME.
    assert not [c for c in children if "uvicorn" in c or "prefect" in c], children
    imported = _imported(stderr)
    assert "flows.untracked" in imported and "tasks.scoring" in imported, "the importtime check sees nothing"
    assert not {"prefect", "uvicorn", "tensorflow", "keras"} & imported, "Prefect (1 s to import) was loaded"
    assert list(home.iterdir()) == [], "Prefect wrote its home: a server (or its database) was started"
    notes = [line for line in stderr.splitlines() if line.startswith("reviews: untracked run")]
    assert len(notes) == 1 and "--track" in notes[0] and "PREFECT_API_URL" in notes[0]
    assert "temporary server" not in stderr.lower().replace(notes[0].lower(), "")


def _comparable(m: dict) -> dict:
    """A manifest without what differs between two runs of the same work (times, output path)."""
    units = [{k: v for k, v in u.items() if k not in ("seconds", "model_seconds")} for u in m["units"]]
    params = {k: v for k, v in m["parameters"].items() if k != "output"}
    return {**{k: m[k] for k in ("model", "input", "inputs", "id_type", "totals", "score_histogram")},
            "units": sorted(units, key=lambda u: u["unit_id"]), "parameters": params}


def test_untracked_run_writes_what_the_tracked_flow_writes(tmp_path, registry, prefect_api):
    from flows.score import score_reviews
    from flows.untracked import score_untracked

    src = str(tmp_path / "in")
    make_dump(src, n=400, files_rows=200, rg=50, seed=4)
    args = {"input": src, "registry": registry["uri"], "max_rows_per_unit": 100, "on_duplicate_id": "reject"}
    tracked = score_reviews(output=str(tmp_path / "tracked"), **args)
    untracked = score_untracked(output=str(tmp_path / "untracked"), **args)
    assert {k: v for k, v in tracked.items() if k not in ("seconds", "output")} == \
        {k: v for k, v in untracked.items() if k not in ("seconds", "output")}
    assert _comparable(manifest(str(tmp_path / "tracked"))) == _comparable(manifest(str(tmp_path / "untracked")))
    a = read_output(str(tmp_path / "tracked")).sort_by("review_id")
    b = read_output(str(tmp_path / "untracked")).sort_by("review_id")
    assert a.equals(b)


def test_untracked_run_refuses_what_the_flow_refuses(tmp_path, registry):
    from flows.untracked import ParameterError, score_untracked

    with pytest.raises(ParameterError, match="predictor: Input should be 'auto'"):
        score_untracked(input=str(tmp_path), output=str(tmp_path / "out"), registry=registry["uri"], predictor="gpu")
    with pytest.raises(ValueError, match="threshold"):
        score_untracked(input=str(tmp_path), output=str(tmp_path / "out"), registry=registry["uri"], threshold=2.0)


_PARAMETER_CASES = [
    {"input": "in", "output": "out"},
    {"input": "in", "output": "out", "batch_size": "12", "threshold": "0.3", "overwrite": "true", "registry": None},
    {"input": "in", "output": "out", "fail_on_drift": "no", "drift_threshold": 1, "predictor": "int8"},
    {"input": "in", "output": "out", "predictor": "gpu"},
    {"input": "in"},
    {"input": "in", "output": "out", "nope": 1},
    {"input": "in", "output": "out", "batch_size": 1.5},
    {"input": 3, "output": "out"},
    {"input": "in", "output": "out", "dask_address": 5},
    {"input": "in", "output": "out", "on_duplicate_id": "drop"},
]


@pytest.mark.parametrize("parameters", _PARAMETER_CASES)
def test_untracked_validation_gives_the_flows_answer(parameters):
    """Without Prefect the parameters are checked by pydantic against the flow's signature: the
    same values accepted and coerced alike, the same refused."""
    from flows.score import score_reviews
    from flows.untracked import ParameterError, validated_parameters

    try:
        expected = score_reviews.validate_parameters(parameters)
    except Exception:  # noqa: BLE001 - Prefect's refusals differ in class (ParameterTypeError, SignatureMismatchError)
        with pytest.raises(ParameterError):
            validated_parameters(score_reviews.fn, parameters)
        return
    got = validated_parameters(score_reviews.fn, parameters)
    assert got == expected and [type(v) for v in got.values()] == [type(v) for v in expected.values()]


def test_untracked_units_are_retried_as_the_task_declares(proxy, s3_bucket, registry, caplog):
    """Every part upload is throttled 5 times in a row: pyarrow gives up, the task's retry policy,
    applied without Prefect, succeeds (as test_faults.py shows for the tracked flow)."""
    from flows.untracked import score_untracked

    src, out = f"{s3_bucket}/dumps/day1", f"{s3_bucket}/scores/day1"
    table = make_dump(src, n=100, files_rows=100, rg=100)
    proxy.add(Fault("slowdown", method={"POST", "PUT"}, path=PART, per_key_first=5))
    with caplog.at_level("WARNING", logger="reviews"):
        summary = score_untracked(input=src, output=out, registry=registry["uri"], max_rows_per_unit=100)
    assert proxy.count("slowdown") >= 5
    proxy.clear()
    assert summary["rows_scored"] == 100
    assert_exactly_once(out, table.column("review_id").to_pylist(), registry["version"])
    assert any(r.message.startswith("score-unit failed with") and "retry 1/4" in r.message for r in caplog.records)


def test_retry_policy_is_read_off_the_task():
    from tasks.scoring import score_unit

    throttled = OSError("When uploading part: AWS Error SLOW_DOWN during UploadPart operation: "
                        "Please reduce your request rate.")
    assert score_unit.should_retry(throttled)
    assert not score_unit.should_retry(FileNotFoundError("s3://b/in/a.parquet"))
    # exponential_backoff(1) with jitter 0.5: about 1, 2, 4, 8 s, never more than 1.5x
    for retry, base in enumerate([1, 2, 4, 8, 8]):
        assert 0 <= score_unit.retry_delay(retry) <= 1.5 * base


def test_the_prefect_task_has_the_declared_policy():
    """The Prefect task built from a declaration retries what the untracked run retries, after
    the delays Prefect's own backoff and jitter give, and caches nothing."""
    import random

    from prefect.cache_policies import NO_CACHE
    from prefect.states import Failed
    from prefect.tasks import exponential_backoff
    from prefect.utilities.math import clamped_poisson_interval

    from tasks.lazy_task import clamped_poisson_interval as ours
    from tasks.scoring import score_unit

    t = score_unit.prefect
    assert t is score_unit.prefect and t.fn is score_unit.fn and t.name == "score-unit"
    assert (t.retries, t.retry_delay_seconds, t.retry_jitter_factor) == (4, exponential_backoff(1)(4), 0.5)
    assert t.cache_policy is NO_CACHE
    throttled = OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.")
    assert t.retry_condition_fn(t, None, Failed(data=throttled))
    assert not t.retry_condition_fn(t, None, Failed(data=FileNotFoundError("s3://b/in/a.parquet")))
    for average in (1.0, 2.0, 8.0):
        random.seed(7)
        expected = clamped_poisson_interval(average, clamping_factor=0.5)
        random.seed(7)
        assert ours(average, 0.5) == pytest.approx(expected, rel=1e-12)


def test_untracked_units_run_on_dask_workers(tmp_path, registry):
    from distributed import Client, LocalCluster

    from flows.untracked import score_untracked

    src = str(tmp_path / "in")
    make_dump(src, n=300, files_rows=150, rg=50)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        summary = score_untracked(input=src, output=str(tmp_path / "out"), registry=registry["uri"],
                                  max_rows_per_unit=100, dask_address=cluster.scheduler_address)
        with Client(cluster.scheduler_address) as client:
            loaded = client.run(lambda: __import__("models.predictor_cache").predictor_cache.cache_info().currsize)
    assert summary["rows_scored"] == 300 and sum(loaded.values()) == 1, loaded
    assert read_output(str(tmp_path / "out")).num_rows == 300


_PROFILE_REMOTE = 'active = "remote"\n\n[profiles.remote]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
_PROFILE_EPHEMERAL = 'active = "ephemeral"\n\n[profiles.ephemeral]\nPREFECT_SERVER_EPHEMERAL_ENABLED = "true"\n'


@pytest.mark.parametrize("setup, configured, asks_prefect", [
    ({}, False, False),  # a machine where Prefect was never set up: answered without importing it
    ({"profiles.toml": _PROFILE_EPHEMERAL}, False, False),
    ({"profiles.toml": _PROFILE_REMOTE}, True, True),
    # Not one of Prefect's profiles without an API: Prefect is asked (and says no: the file names no URL).
    ({"profiles.toml": 'active = "local"\n'}, False, True),
    ({"env:PREFECT_PROFILE": "local"}, False, True),
    ({"cwd:.env": "PREFECT_API_URL=http://127.0.0.1:9/api\n"}, True, True),
    ({"cwd:.env": "OTHER=1\n"}, False, False),
    ({"cwd:prefect.toml": '[api]\nurl = "http://127.0.0.1:9/api"\n'}, True, True),
    ({"env:PREFECT_API_URL": "http://127.0.0.1:9/api"}, True, False),
])
def test_an_api_anywhere_in_prefects_settings_counts_as_configured(tmp_path, setup, configured, asks_prefect):
    home, cwd = tmp_path / "prefect-home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = _without_prefect_settings(str(home))
    for key, value in setup.items():
        where, _, name = key.rpartition(":")
        if where == "env":
            env[name] = value
        else:
            (cwd if where == "cwd" else home).joinpath(name).write_text(value)
    code = ("import sys; from flows.cli_support import api_configured; ours = api_configured(); "
            "asked = 'prefect' in sys.modules; from prefect.settings import get_current_settings; "
            "print(ours, asked, bool(get_current_settings().api.url))")
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(cwd), capture_output=True, text=True,
                       timeout=120, check=True)
    ours, asked, prefects = r.stdout.split()
    assert ours == prefects == str(configured), r.stderr[-2000:]
    assert asked == str(asks_prefect)


def test_predictor_cache_opens_an_s3_registry_with_the_runs_settings(s3_bucket, s3_env):
    """The settings the run resolved once are the ones the predictor loads with: after the
    environment's keys go bad, a run that resolved good ones still loads, and one that did not fails."""
    import numpy as np

    from infra.run_storage import RunStorage
    from models import predictor_cache
    from tests.tinymodel import CONFIG, register_tiny

    uri = f"{s3_bucket}/models"
    version = register_tiny(uri)
    run = RunStorage.for_uris(uri)
    s3_env(AWS_SECRET_ACCESS_KEY="WRONG" + "0" * 35)
    with pytest.raises(storage.StorageError, match="ACCESS_DENIED"):
        predictor_cache.cached_predictor(uri, version, "auto")  # resolves the (now wrong) keys itself
    p = predictor_cache.cached_predictor(uri, version, "auto", run)
    assert p.predict(np.zeros((2, CONFIG.maxlen), np.int32)).shape == (2,)
    assert predictor_cache.cached_predictor(uri, version, "auto", RunStorage()) is p, "one per process and version"
