"""Killed runs and concurrent runs: the output is exactly-once and never mixed.

Real processes (the ``reviews score`` CLI), kill -9 half way through, re-run; two
runs started at the same moment against one output.  Subprocesses talk to the
session's Prefect test-harness API (no ephemeral server per process) and to the
session's SeaweedFS S3 server through the AWS_* variables the fixtures set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import storage
from tests.cli_process import last_json_line, start_score
from tests.faultproxy import Fault, FaultProxy, wait_for
from tests.tinymodel import assert_exactly_once, make_dump, read_output, register_tiny

pytestmark = pytest.mark.usefixtures("prefect_api")

RUN_TIMEOUT = 180  # seconds a CLI run may take before the test calls it a hang


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A local registry with two versions of the tiny model (v1 is champion)."""
    uri = str(tmp_path_factory.mktemp("registry"))
    v1 = register_tiny(uri, seed=3)
    v2 = register_tiny(uri, seed=5)
    return {"uri": uri, "v1": v1, "v2": v2}


def _parts(out_uri: str) -> list[str]:
    loc = storage.resolve(out_uri)
    try:
        return [i.base_name for i in storage.list_files(loc, recursive=False) if i.base_name.startswith("part-")]
    except (OSError, storage.StorageError):
        return []


def _claims(out_uri: str) -> list[str]:
    try:
        return [i.base_name for i in storage.list_files(storage.resolve(out_uri).join("_claims"))]
    except (OSError, storage.StorageError):
        return []


def _wait(p: subprocess.Popen, log, timeout: float = RUN_TIMEOUT) -> tuple[int, str]:
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        pytest.fail(f"run did not finish within {timeout} s (hang?)\n{_tail(log)}")
    return p.returncode, log.read_text(errors="replace")


def _tail(log, n: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _stderr_error(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("reviews: error:"))


# -- kill -9 half way, then re-run ----------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "s3"])
def test_kill9_half_way_then_rerun_is_exactly_once(where, models, tmp_path, request):
    if where == "local":
        src, out = str(tmp_path / "in"), str(tmp_path / "out")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        src, out = f"{bucket}/dumps/day1", f"{bucket}/scores/day1"
    # Units of 100 rows (60 local, 40 on S3): a few seconds of work, long enough to be killed half way.
    n = 6_000 if where == "local" else 4_000
    table = make_dump(src, n=n, files_rows=2_000, rg=100)
    units = n // 100
    args = ("--max-rows-per-unit", "100", "--batch-size", "50")

    log1 = tmp_path / "run1.log"
    p = start_score(src, out, models["uri"], *args, log=log1)
    try:
        seen = wait_for(lambda: len(_parts(out)) >= 10 or p.poll() is not None, timeout=RUN_TIMEOUT, interval=0.02)
        assert seen, f"no parts appeared\n{_tail(log1)}"
        assert p.poll() is None, f"the run ended before it could be killed (rc={p.returncode})\n{_tail(log1)}"
        os.killpg(p.pid, signal.SIGKILL)  # its own session: the CLI and anything it started
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    assert p.returncode == -signal.SIGKILL

    out_loc = storage.resolve(out)
    at_kill = _parts(out)
    assert 10 <= len(at_kill) < units, "killed half way"
    assert not storage.exists(out_loc.join("_SUCCESS"))
    # Whatever is visible is whole: every part the killed run published reads completely.
    for name in at_kill:
        loc = out_loc.join(name)
        pq.read_table(loc.path, filesystem=loc.fs)
    leftovers = []
    if where == "local":
        leftovers = [n for n in os.listdir(out) if n.startswith(".tmp-")]  # hidden, ignored by readers
    dead_claims = _claims(out)
    assert [storage.read_json(storage.resolve(out).join("_claims", c))["pid"] for c in dead_claims] == [p.pid]

    log2 = tmp_path / "run2.log"
    rc, text = _wait(start_score(src, out, models["uri"], *args, log=log2), log2)
    assert rc == 0, text[-4000:]
    summary = last_json_line(text)
    assert summary and summary["rows_in"] == summary["rows_scored"] == n, text[-2000:]
    assert_exactly_once(out, table.column("review_id").to_pylist(), models["v1"])
    m = storage.read_json(out_loc.join("_manifest.json"))
    assert m["totals"]["units"] == units
    assert len(at_kill) <= m["totals"]["units_skipped"] < units, "the re-run resumed, it did not redo everything"
    assert len(_parts(out)) == units
    # Hidden temporaries of the killed writer do not count as data.
    assert read_output(out).num_rows == n, leftovers
    # The re-run removed the dead run's claim (its pid is gone) and released its own: no claim,
    # and no empty _claims/ directory or S3 directory-marker object.
    assert _claims(out) == []
    if where == "local":
        assert not os.path.exists(os.path.join(out, "_claims"))
    else:
        bucket, prefix = out.removeprefix("s3://").split("/", 1)
        listed = request.getfixturevalue("s3_client").list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/_claims")
        assert [o["Key"] for o in listed.get("Contents", [])] == []


# -- two runs at once -------------------------------------------------------------------------


def _start_two(src, out, models, tmp_path, model_a: str, model_b: str, env_a=None, env_b=None,
               args_a=(), args_b=()):
    base = ("--max-rows-per-unit", "100", "--batch-size", "50")
    logs = tmp_path / "a.log", tmp_path / "b.log"
    procs = [start_score(src, out, models["uri"], "--model", model_a, *base, *args_a, env=env_a, log=logs[0]),
             start_score(src, out, models["uri"], "--model", model_b, *base, *args_b, env=env_b, log=logs[1])]
    results = [_wait(p, log) for p, log in zip(procs, logs)]
    return results


def _assert_never_mixed(out: str, expected_ids: list, results) -> set[str]:
    """The invariant for any number of runs that aimed at ``out``: one model version, no duplicates,
    and a _SUCCESS marker only over a complete dataset that matches its manifest."""
    t = read_output(out) if _parts(out) else None
    versions = set() if t is None else set(t.column("model_version").cast(pa.string()).to_pylist())
    assert len(versions) <= 1, f"mixed dataset: parts from model versions {sorted(versions)}"
    if t is not None:
        ids = t.column("review_id").to_pylist()
        assert len(ids) == len(set(ids)), f"duplicates: {len(ids) - len(set(ids))} rows appear twice"
    loc = storage.resolve(out)
    if storage.exists(loc.join("_SUCCESS")):
        m = storage.read_json(loc.join("_manifest.json"))
        assert versions == {m["model"]["version"]}
        assert sorted(t.column("review_id").to_pylist()) == sorted(expected_ids)
    for rc, text in results:
        if rc != 0:  # a run that lost fails clearly, it does not crash
            assert rc == 2 and _stderr_error(text), text[-3000:]
    return versions


def test_two_runs_same_model_same_output_at_once(models, tmp_path):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    table = make_dump(src, n=6_000, files_rows=2_000, rg=100)
    results = _start_two(src, out, models, tmp_path, models["v1"], models["v1"])
    assert any(rc == 0 for rc, _ in results), [t[-2000:] for _, t in results]
    _assert_never_mixed(out, table.column("review_id").to_pylist(), results)
    assert_exactly_once(out, table.column("review_id").to_pylist(), models["v1"])


def test_two_runs_different_models_same_output_at_once(models, tmp_path):
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    table = make_dump(src, n=6_000, files_rows=2_000, rg=100)
    results = _start_two(src, out, models, tmp_path, models["v1"], models["v2"])
    _assert_never_mixed(out, table.column("review_id").to_pylist(), results)
    assert any(rc != 0 for rc, _ in results), "both versions cannot have produced this one output"
    loser = [_stderr_error(t) for rc, t in results if rc != 0][0]
    assert any(k in loser for k in ("another run", "scored by model", "other inputs")), loser


def test_output_claims_of_two_model_versions_cannot_both_win(s3_bucket, monkeypatch):
    """claim_output's "oldest claim wins" rule, raced deterministically.

    Run A takes its timestamp first, but its claim upload is slow (the proxy holds the
    upload's final request until B is done).  Run B, younger, writes its claim and lists
    the claims before A's is visible: it sees no older rival and wins.  A's upload then
    completes; A lists, sees only the *younger* B, and wins too.
    """
    from tasks.scoring import ScoringError, claim_output

    out = f"{s3_bucket}/scores/raced"
    with FaultProxy(os.environ["AWS_ENDPOINT_URL_S3"], max_lifetime=60) as proxy:
        # CompleteMultipartUpload (POST ...?uploadId=) of the first claim object only.
        b_done = threading.Event()
        proxy.add(Fault("delay", method="POST", path=r"/_claims/.*\?uploadId=", first=1, delay=30.0, until=b_done))
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        storage._cached_s3.cache_clear()
        outcome: dict[str, object] = {}

        def claim(name: str, version: str) -> None:
            try:
                outcome[name] = claim_output.fn(out, version, f"run-{name}")
            except ScoringError as exc:
                outcome[name] = exc

        a = threading.Thread(target=claim, args=("a", "model-a"))
        a.start()
        assert wait_for(lambda: proxy.count("delay") >= 1, 20), "A's claim upload never reached the proxy"
        claim("b", "model-b")  # younger than A, runs while A's claim is still uploading
        b_done.set()
        a.join(30)
    storage._cached_s3.cache_clear()
    winners = [k for k, v in outcome.items() if not isinstance(v, Exception)]
    assert len(winners) <= 1, (
        f"runs with model-a and model-b both own {out} (claims: {outcome}); their parts would mix")


def test_same_model_different_unit_sizes_at_once_never_duplicates(models, tmp_path):
    """Same model, input and output, started together, but with different --max-rows-per-unit.

    Their part names differ, so sharing the output would write every row twice: the
    unit layout is part of the output claim, and the run that finds the other's claim fails.
    """
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    table = make_dump(src, n=4_000, files_rows=1_000, rg=100)
    results = _start_two(src, out, models, tmp_path, models["v1"], models["v1"],
                         args_a=("--max-rows-per-unit", "100"), args_b=("--max-rows-per-unit", "200"))
    assert any(rc == 0 for rc, _ in results), [t[-2000:] for _, t in results]
    _assert_never_mixed(out, table.column("review_id").to_pylist(), results)


def test_output_of_a_killed_run_can_be_overwritten_with_another_model(models, tmp_path):
    from flows.score import score_reviews

    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    table = make_dump(src, n=6_000, files_rows=2_000, rg=100)
    log = tmp_path / "killed.log"
    p = start_score(src, out, models["uri"], "--model", models["v1"], "--max-rows-per-unit", "100", log=log)
    try:
        assert wait_for(lambda: len(_parts(out)) >= 3 or p.poll() is not None, RUN_TIMEOUT, 0.02), _tail(log)
        assert p.poll() is None, _tail(log)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    summary = score_reviews(input=src, output=out, registry=models["uri"], model=models["v2"], overwrite=True)
    assert summary["model_version"] == models["v2"]
    assert_exactly_once(out, table.column("review_id").to_pylist(), models["v2"])
