"""The deployments in prefect.yaml, end to end on a real Prefect server.

One ``prefect server start`` (temporary PREFECT_HOME, SQLite, scheduler service off
so the nightly cron never fires during the test) serves the whole module.  The
test drives it exactly as an operator would, through the real CLI:

    prefect work-pool create reviews --type process
    prefect deploy --all                      (from the repository root, no prompts)
    prefect worker start --pool reviews       (a subprocess with S3 and registry settings)
    prefect deployment run ... --watch

The model registry lives in the session's SeaweedFS S3 server (a tiny model is
registered before the worker starts), the review dump is written there and the
predictions are read back from there.  Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from infra import storage
from tests.tinymodel import CONFIG, VOCAB, WORDS, register_tiny, tiny_model
from tests.training_data import labelled_rows, sentiment_tgz, write_labelled

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
POOL = "reviews"
N_REVIEWS = 300
SERVER_START_TIMEOUT = 120
RUN_TIMEOUT = 150


# ---------------------------------------------------------------------------
# processes

def _prefect_exe() -> str:
    beside = Path(sys.executable).parent / "prefect"
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(args: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    with open(log, "wb") as f:
        # Own process group: stop() can end the process and the flow-run children it started.
        return subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen | None, grace: float = 20.0) -> None:
    """SIGTERM the process group we started, wait, then SIGKILL what is left of it."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    # Children (flow-run processes) may outlive the leader; they share its group id.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Stack:
    """The running server + worker and what the test prepared for them."""

    def __init__(self, tmp: Path, env: dict[str, str], api: str):
        self.tmp = tmp
        self.env = env  # CLI environment: the server's API, no S3 or registry settings
        self.api = api
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.bucket = ""
        self.registry = ""
        self.version = ""
        self.model = None
        self.dump = ""
        self.table: pa.Table | None = None
        self.npz = ""
        self.config = None
        self.deploy_output = ""

    def prefect(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
        return subprocess.run([_prefect_exe(), "--no-prompt", *args], cwd=REPO, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)

    def get(self, path: str) -> Any:
        import httpx

        r = httpx.get(self.api + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        r = httpx.post(self.api + path, json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def deployment(self, flow: str, name: str) -> dict[str, Any]:
        return self.get(f"/deployments/name/{flow}/{name}")

    def flow_run_count(self, deployment_id: str) -> int:
        return self.post("/flow_runs/count", {"deployments": {"id": {"any_": [deployment_id]}}})

    def logs(self) -> str:
        return (f"\n--- worker log ---\n{_tail(self.tmp / 'worker.log')}"
                f"\n--- server log ---\n{_tail(self.tmp / 'server.log', 20)}")

    def run_deployment(self, name: str, *params: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        args = ["deployment", "run", name, "--watch", "--watch-timeout", str(RUN_TIMEOUT), *extra]
        for p in params:
            args += ["--param", p]
        return self.prefect(*args, timeout=RUN_TIMEOUT + 30)


def _clean_env() -> dict[str, str]:
    """os.environ without anything that would point Prefect elsewhere."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PREFECT_") and k not in ("REVIEWS_PROJECT_DIR", "REVIEWS_NIGHTLY_CRON",
                                                         "REVIEWS_NIGHTLY_TIMEZONE")}


def _wait_healthy(stack: Stack) -> None:
    import httpx

    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if stack.server.poll() is not None:
            pytest.fail(f"prefect server exited with {stack.server.returncode}:\n{_tail(stack.tmp / 'server.log')}")
        try:
            if httpx.get(stack.api + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT}s:\n{_tail(stack.tmp / 'server.log')}")


# ---------------------------------------------------------------------------
# data the test prepares

def _register_tiny_model(registry_uri: str):
    return tiny_model(5), register_tiny(registry_uri, seed=5), VOCAB.size, CONFIG


def _review_dump(uri: str, vocab_size: int) -> pa.Table:
    from infra.dump_writer import dump_table, write_dump

    rng = np.random.default_rng(11)
    lengths = rng.integers(1, 12, size=N_REVIEWS)
    values = rng.integers(3, vocab_size, size=int(lengths.sum())).astype(np.int32)
    values[np.cumsum(lengths) - lengths] = 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    table = dump_table(np.arange(5000, 5000 + N_REVIEWS), tokens)
    write_dump(table, uri, rows_per_file=200, row_group_size=50)
    return table


def _tiny_imdb_npz(path: Path, n_train: int = 240, n_test: int = 120) -> None:
    """A Keras-format imdb.npz (word ranks from 1, object arrays of lists) small enough to train in seconds."""
    rng = np.random.default_rng(7)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 2
        rows = np.empty(n, dtype=object)
        for i in range(n):
            # Label-dependent word ranges give the model something to learn.
            lo, hi = (1, 30) if y[i] else (20, 50)
            rows[i] = [int(t) for t in rng.integers(lo, hi, size=int(rng.integers(4, 15)))]
        return rows, y.astype(np.int64)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


# ---------------------------------------------------------------------------
# the stack

@pytest.fixture(scope="module")
def stack(s3_server, s3_client, tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("deployments")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    cli_env = _clean_env()
    for name in list(cli_env):
        if name.startswith("AWS_") or name.startswith("REVIEWS_"):
            del cli_env[name]  # the CLI side never needs S3 or the registry; the worker does
    cli_env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_API_URL=api,
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_CLI_PROMPT="false",
                   PREFECT_SERVER_UI_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="2")
    stack = Stack(tmp, cli_env, api)
    server_env = dict(cli_env, PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
                      PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port))
    bucket_name = f"t-deployments-{uuid.uuid4().hex[:8]}"
    try:
        # The server migrates its database while this process builds the model and the data.
        stack.server = _start([_prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              server_env, tmp / "server.log")
        stack.bucket = s3_server.create_bucket(bucket_name)
        stack.registry = f"{stack.bucket}/registry"
        stack.model, stack.version, vocab_size, stack.config = _register_tiny_model(stack.registry)
        stack.dump = f"{stack.bucket}/dumps/day1"
        stack.table = _review_dump(stack.dump, vocab_size)
        stack.npz = str(tmp / "imdb.npz")
        _tiny_imdb_npz(Path(stack.npz))
        _wait_healthy(stack)

        r = stack.prefect("work-pool", "create", POOL, "--type", "process")
        assert r.returncode == 0, r.stdout + r.stderr
        # REVIEWS_PROJECT_DIR is unset here on purpose: the pull step must resolve it on the worker.
        r = stack.prefect("deploy", "--all", timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        stack.deploy_output = r.stdout

        worker_env = dict(cli_env, REVIEWS_PROJECT_DIR=str(REPO), REVIEWS_REGISTRY=stack.registry,
                          REVIEWS_DATA_DIR=str(tmp / "data-cache"), PREFECT_WORKER_QUERY_SECONDS="1",
                          **s3_server.env())
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            if name in os.environ:  # the session's empty ~/.aws stand-ins
                worker_env[name] = os.environ[name]
        stack.worker = _start([_prefect_exe(), "worker", "start", "--pool", POOL, "--name", "test-worker"],
                              worker_env, tmp / "worker.log")
        yield stack
    finally:
        _stop(stack.worker)
        _stop(stack.server)
        if stack.bucket:
            s3_server.delete_bucket(bucket_name, s3_client)


def _flow_run_id(output: str) -> str:
    m = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert m, f"no flow run UUID in the CLI output:\n{output}"
    return m.group(1)


# ---------------------------------------------------------------------------
# the checks

def test_deployments_are_registered_as_declared(stack: Stack):
    score = stack.deployment("score-reviews", "score-reviews")
    assert score["entrypoint"] == "flows/score.py:score_reviews"
    assert score["enforce_parameter_schema"] is True
    assert score["work_pool_name"] == POOL
    assert score["parameters"]["model"] == "champion"
    assert "input" not in score["parameters"] and "output" not in score["parameters"]
    assert {"input", "output"} <= set(score["parameter_openapi_schema"]["required"])
    assert "scoring" in score["tags"] and score["schedules"] == []
    # Resolved on the worker at run time, not baked in at deploy time.
    assert score["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                    {"directory": "{{ $REVIEWS_PROJECT_DIR }}"}}]
    assert score["version"] and "{{" not in score["version"]


def test_score_deployment_end_to_end(stack: Stack):
    out = f"{stack.bucket}/scores/day1"
    r = stack.run_deployment("score-reviews/score-reviews", f"input={stack.dump}", f"output={out}",
                             "batch_size=64", "max_rows_per_unit=100")
    assert r.returncode == 0, r.stdout + r.stderr + stack.logs()
    assert "Completed" in r.stdout

    run = stack.get(f"/flow_runs/{_flow_run_id(r.stdout)}")
    assert run["state"]["type"] == "COMPLETED"
    # The run name says what ran: the input and the exact model version "champion" resolved to.
    from tasks.reporting import short_uri

    assert run["name"] == f"score-{short_uri(stack.dump)}-{stack.version}"
    assert {"reviews", "scoring"} <= set(run["tags"])
    assert run["parameters"]["input"] == stack.dump and run["parameters"]["batch_size"] == 64

    loc = storage.resolve(out)
    assert storage.exists(loc.join("_SUCCESS"))
    manifest = storage.read_json(loc.join("_manifest.json"))
    assert manifest["model"]["version"] == stack.version
    assert manifest["totals"]["rows_in"] == manifest["totals"]["rows_scored"] == N_REVIEWS
    assert manifest["totals"]["rows_rejected"] == 0 and manifest["totals"]["files"] == 2
    assert manifest["parameters"]["batch_size"] == 64

    parts = [i for i in storage.list_files(loc, recursive=False) if i.base_name.startswith("part-")]
    assert len(parts) == 3  # 200 rows -> 2 units of 100, 100 rows -> 1 unit
    got = ds.dataset(loc.path, filesystem=loc.fs, format="parquet").to_table().sort_by("review_id")
    assert got.column("review_id").to_pylist() == stack.table.column("review_id").to_pylist()
    assert set(got.column("model_version").to_pylist()) == {stack.version}

    from keras.utils import pad_sequences

    x = pad_sequences(stack.table.column("tokens").to_pylist(), maxlen=stack.config.maxlen,
                      padding=stack.config.padding, truncating=stack.config.truncating)
    expected = stack.model.predict(x, verbose=0).reshape(-1)
    np.testing.assert_allclose(got.column("score").to_numpy(), expected, atol=1e-5)
    assert (got.column("label").to_numpy() == (got.column("score").to_numpy() >= 0.5)).all()


def test_bad_parameter_is_refused_visibly(stack: Stack):
    deployment = stack.deployment("score-reviews", "score-reviews")
    before = stack.flow_run_count(deployment["id"])
    r = stack.run_deployment("score-reviews/score-reviews", f"input={stack.dump}",
                             f"output={stack.bucket}/scores/bad", "batch_size=notanumber")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "batch_size" in r.stdout + r.stderr
    # enforce_parameter_schema: the run is refused when it is created, never half-runs.
    assert stack.flow_run_count(deployment["id"]) == before
    # A required parameter missing is refused the same way.
    r = stack.run_deployment("score-reviews/score-reviews", f"input={stack.dump}")
    assert r.returncode != 0, r.stdout + r.stderr
    assert "output" in r.stdout + r.stderr
    assert stack.flow_run_count(deployment["id"]) == before


def test_failing_run_is_reported_failed(stack: Stack):
    """A well-typed but wrong parameter (a model the registry does not have) fails the run; --watch says so."""
    out = f"{stack.bucket}/scores/no-such-model"
    r = stack.run_deployment("score-reviews/score-reviews", f"input={stack.dump}", f"output={out}",
                             "model=no-such-version")
    assert r.returncode != 0, r.stdout + r.stderr + stack.logs()
    assert "Failed" in r.stdout + r.stderr
    run = stack.get(f"/flow_runs/{_flow_run_id(r.stdout)}")
    assert run["state"]["type"] == "FAILED"
    assert not storage.exists(storage.resolve(out).join("_SUCCESS"))


def test_nightly_deployment_has_its_cron_schedule(stack: Stack):
    nightly = stack.deployment("retrain-sentiment", "nightly")
    assert nightly["entrypoint"] == "flows/retrain.py:retrain_sentiment"
    assert nightly["work_pool_name"] == POOL
    assert {"reviews", "retrain", "nightly"} <= set(nightly["tags"])
    assert [(s["schedule"].get("cron"), s["schedule"].get("timezone"), s["active"]) for s in nightly["schedules"]] \
        == [("0 3 * * *", "UTC", True)]
    # Two retrains never overlap.
    assert nightly["global_concurrency_limit"]["limit"] == 1
    assert nightly["concurrency_options"]["collision_strategy"] in ("ENQUEUE", "CANCEL_NEW")
    assert nightly["enforce_parameter_schema"] is True
    # Every preset is offered, and the training settings are one schema generated from TrainConfig.
    schema = nightly["parameter_openapi_schema"]
    assert schema["properties"]["preset"]["enum"] == ["seed", "default", "deep"]
    assert {"maxlen", "lstm_layers", "bidirectional"} <= set(schema["definitions"]["TrainOverrides"]["properties"])
    assert nightly["parameters"]["preset"] == "default"


def test_nightly_retrain_registers_and_gates_a_new_version(stack: Stack):
    from models.registry import ModelRegistry

    registry = ModelRegistry(stack.registry)
    before = {v["version"] for v in registry.versions()}
    champion_before = registry.champion()
    # Training settings travel as one `overrides` mapping (TrainConfig's fields), checked by the schema.
    overrides = {"epochs": 1, "maxlen": 8, "embedding_dim": 8, "lstm_units": 4, "num_words": 60,
                 "ngram_buckets": 61, "ngram_epochs": 2}
    deployment = stack.deployment("retrain-sentiment", "nightly")
    runs_before = stack.flow_run_count(deployment["id"])
    refused = stack.run_deployment("retrain-sentiment/nightly", 'overrides={"epochz": 1}')
    assert refused.returncode != 0 and "epochz" in refused.stdout + refused.stderr
    assert stack.flow_run_count(deployment["id"]) == runs_before, "refused when created, never half-run"
    r = stack.run_deployment("retrain-sentiment/nightly", f"data={stack.npz}", f"overrides={json.dumps(overrides)}")
    assert r.returncode == 0, r.stdout + r.stderr + stack.logs()
    assert "Completed" in r.stdout
    run = stack.get(f"/flow_runs/{_flow_run_id(r.stdout)}")
    assert "nightly" in run["tags"]
    assert run["parameters"]["preset"] == "default" and run["parameters"]["overrides"] == overrides

    new = [v for v in registry.versions() if v["version"] not in before]
    assert len(new) == 1, [v["version"] for v in registry.versions()]
    meta = new[0]
    assert meta["preset"] == "default"
    assert meta["hyperparameters"]["maxlen"] == 8 and meta["hyperparameters"]["lstm_units"] == 4
    assert meta["data"]["train_rows"] + meta["data"]["validation_rows"] == 240

    # The promotion gate recorded its decision, and the champion follows it.
    gates = [a for a in registry.audit_log() if a.get("action") == "gate" and a.get("challenger") == meta["version"]]
    assert len(gates) == 1, registry.audit_log()
    decision = gates[0]
    assert isinstance(decision["promote"], bool) and decision["reason"]
    assert registry.champion() == (meta["version"] if decision["promote"] else champion_before)
    verdict = "promoted" if decision["promote"] else "rejected"
    assert run["name"] == f"retrain-default-{meta['version']}-{verdict}"


def test_nightly_schedule_is_configurable_at_deploy_time(stack: Stack):
    env = dict(stack.env, REVIEWS_NIGHTLY_CRON="30 4 * * 1-5", REVIEWS_NIGHTLY_TIMEZONE="Europe/Berlin")
    r = stack.prefect("deploy", "-n", "nightly", env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    nightly = stack.deployment("retrain-sentiment", "nightly")
    # Redeploying replaces the schedule; it does not add a second one.
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in nightly["schedules"]] \
        == [("30 4 * * 1-5", "Europe/Berlin")]


def test_nightly_loop_on_the_deployed_stack(stack: Stack, tmp_path_factory):
    """Issue 15's loop through the deployed `retrain-sentiment/nightly` on the real server and
    worker, with its own registry on the S3 server: train and promote; skip a night with nothing
    new; train on labelled rows that landed in S3 and gate on the shared evaluation set; reject a
    weaker config with its interval; prune keeps the champion and the rollback history."""
    from models.registry import ModelRegistry

    data = sentiment_tgz(tmp_path_factory.mktemp("loop-data") / "tiny.tgz", per_block=40, seed=3)
    registry_uri = f"{stack.bucket}/loop-registry"
    registry = ModelRegistry(registry_uri)
    tiny = {"epochs": 2, "maxlen": 12, "embedding_dim": 8, "lstm_units": 4, "num_words": 60, "ngram_buckets": 61,
            "validation_split": 0.0, "early_stopping_patience": None, "seed": 1}

    def night(*params: str) -> dict[str, Any]:
        r = stack.run_deployment("retrain-sentiment/nightly", f"registry={registry_uri}", f"data={data}", *params)
        assert r.returncode == 0 and "Completed" in r.stdout, r.stdout + r.stderr + stack.logs()
        run = stack.get(f"/flow_runs/{_flow_run_id(r.stdout)}")
        assert run["state_type"] == "COMPLETED"
        return run

    def gates() -> list[dict[str, Any]]:
        return [a for a in registry.audit_log() if a.get("action") == "gate"]

    # Night 1: the first version trains and becomes champion.
    night(f"overrides={json.dumps(tiny)}")
    (first,) = registry.versions()
    assert registry.champion() == first["version"]

    # Night 2: nothing new - skipped, no TensorFlow work, in well under a minute of run time.
    run = night(f"overrides={json.dumps(tiny)}")
    assert [v["version"] for v in registry.versions()] == [first["version"]]
    assert run["total_run_time"] < 60, run["total_run_time"]
    skips = [a for a in registry.audit_log() if a.get("action") == "skip"]
    assert len(skips) == 1 and first["version"] in json.dumps(skips[0])
    assert run["name"].endswith("-skipped")

    # Night 3: labelled rows land in S3; the run trains on them and the gate scores both versions
    # on one evaluation set (IMDB test + the labelled holdout).
    ids, labels, texts = labelled_rows(seed=8, n=120, first_id=1)
    landed = write_labelled(f"{stack.bucket}/labelled/day1.parquet", ids, labels, texts)
    night(f"overrides={json.dumps(tiny)}", f'labelled={json.dumps([f"{stack.bucket}/labelled/"])}')
    third = next(v for v in registry.versions() if v["version"] != first["version"])
    listed = json.dumps(third)
    assert landed in listed or "labelled/day1.parquet" in listed, "the version's lineage names the file"
    holdout_rows = third["data"]["holdout_rows"]
    assert 0 < holdout_rows < 120
    decision = gates()[-1]
    assert decision["challenger"] == third["version"] and decision["champion"] == first["version"]
    assert decision["comparison"]["n"] == third["data"]["test_rows"] + holdout_rows
    champion = registry.champion()

    # Night 4: a deliberately weaker config (one unit, a 1-wide embedding, 2 tokens) is rejected
    # with its confidence interval; the champion stays.
    weak = dict(tiny, epochs=1, maxlen=2, embedding_dim=1, lstm_units=1, learning_rate=1e-5)
    night(f"overrides={json.dumps(weak)}", f'labelled={json.dumps([f"{stack.bucket}/labelled/"])}')
    decision = gates()[-1]
    assert decision["promote"] is False, decision
    lo, hi = decision["comparison"]["accuracy_difference_ci95"]
    assert lo <= decision["comparison"]["accuracy_difference"] <= hi
    assert registry.champion() == champion
    rejected = decision["challenger"]
    night(f"overrides={json.dumps(dict(weak, seed=2))}", f'labelled={json.dumps([f"{stack.bucket}/labelled/"])}')
    newest = gates()[-1]["challenger"]
    assert newest != rejected and registry.champion() == champion

    # Prune to one version: the newest, the champion and its rollback history survive; the older
    # rejected version goes.
    r = subprocess.run([str(Path(sys.executable).parent / "reviews"), "models", "prune", "--keep", "1",
                        "--registry", registry_uri], env=dict(os.environ), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    kept = {v["version"] for v in registry.versions()}
    assert kept == {newest, champion, *registry.champion_history()}, (kept, champion, registry.champion_history())
    assert first["version"] in kept and rejected not in kept
    assert [a for a in registry.audit_log() if a.get("action") == "prune"]


def test_discovery_deployment_scores_ready_dumps_through_run_deployment(stack: Stack):
    """`score-new-dumps/hourly` on the real worker: the ready partition is scored by its own run of
    the `score-reviews` deployment (started with run_deployment, linked to the discovery run), the
    partition without `_READY` is left alone, and a second run starts no scoring run at all."""
    from models.dump_discovery import mark_ready
    from models.registry import ModelRegistry
    from models.text import Vocabulary

    hourly = stack.deployment("score-new-dumps", "hourly")
    assert hourly["entrypoint"] == "flows/discover.py:score_new_dumps"
    assert hourly["enforce_parameter_schema"] is True and hourly["work_pool_name"] == POOL
    assert [(s["schedule"]["cron"], s["active"]) for s in hourly["schedules"]] == [("0 * * * *", True)]
    assert (hourly["parameters"]["input_root"], hourly["parameters"]["output_root"]) == \
        ("s3://reviews/dumps", "s3://reviews/scores")
    assert hourly["parameters"]["deployment"] == "score-reviews/score-reviews"
    assert hourly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

    root = f"{stack.bucket}/discovery"
    vocab_size = Vocabulary(words=tuple(WORDS)).size
    _review_dump(f"{root}/dumps/ready", vocab_size)
    mark_ready(f"{root}/dumps/ready")
    _review_dump(f"{root}/dumps/half-written", vocab_size)  # no _READY: the producer is still at it
    champion = ModelRegistry(stack.registry).champion()  # the nightly tests above may have promoted one
    score = stack.deployment("score-reviews", "score-reviews")
    runs_before = stack.flow_run_count(score["id"])

    def discover() -> dict[str, Any]:
        r = stack.run_deployment("score-new-dumps/hourly", f"input_root={root}/dumps", f"output_root={root}/scores",
                                 'score_parameters={"batch_size": 64, "max_rows_per_unit": 100}')
        assert r.returncode == 0 and "Completed" in r.stdout, r.stdout + r.stderr + stack.logs()
        return stack.get(f"/flow_runs/{_flow_run_id(r.stdout)}")

    run = discover()
    assert stack.flow_run_count(score["id"]) == runs_before + 1
    (child,) = stack.post("/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"is_null_": False}},
                                                "deployments": {"id": {"any_": [score["id"]]}}})
    assert child["state_type"] == "COMPLETED"
    assert child["parameters"]["input"] == f"{root}/dumps/ready" and child["parameters"]["overwrite"] is False
    assert child["parameters"]["batch_size"] == 64
    assert stack.get(f"/task_runs/{child['parent_task_run_id']}")["flow_run_id"] == run["id"]

    out = storage.resolve(f"{root}/scores/ready")
    assert storage.exists(out.join("_SUCCESS"))
    m = storage.read_json(out.join("_manifest.json"))
    assert m["model"]["version"] == champion and m["totals"]["rows_scored"] == N_REVIEWS
    assert not storage.exists(storage.resolve(f"{root}/scores/half-written"))

    discover()  # nothing new: no scoring run is started
    assert stack.flow_run_count(score["id"]) == runs_before + 1


# ---------------------------------------------------------------------------
# events and the after-promotion trigger (issue 19).  The server above runs its event services
# (persister, triggers, actions: on by default; only the scheduler is off), so an event a flow
# run emits is stored, readable from /api/events/filter, and fires the deployment triggers.

def test_after_promotion_deployment_is_triggered_by_promotions(stack: Stack):
    after = stack.deployment("score-new-dumps", "after-promotion")
    assert after["entrypoint"] == "flows/discover.py:score_new_dumps" and after["work_pool_name"] == POOL
    assert after["parameters"]["rescore_on_promotion"] is True and after["schedules"] == []
    assert after["parameters"]["deployment"] == "score-reviews/score-reviews"
    assert after["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    (automation,) = stack.get(f"/automations/related-to/prefect.deployment.{after['id']}")
    assert automation["enabled"] is True
    trigger = automation["trigger"]
    assert trigger["expect"] == ["reviews.model.promoted"] and trigger["posture"] == "Reactive"
    assert trigger["match"] == {"prefect.resource.id": "reviews.model.*"}
    (action,) = automation["actions"]
    assert action["type"] == "run-deployment" and action["deployment_id"] == after["id"]
    assert action["parameters"] == {"rescore_on_promotion": True}
    score = stack.deployment("score-reviews", "score-reviews")
    assert (score["parameters"]["drift_threshold"], score["parameters"]["fail_on_drift"]) == (0.2, False)


def _wait_for_run(stack: Stack, deployment_id: str, after: int, timeout: float) -> dict[str, Any]:
    """The newest flow run of the deployment once there are more than ``after``, when it is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stack.post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}},
                                                "sort": "EXPECTED_START_TIME_DESC"})
        if len(runs) > after and runs[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return runs[0]
        time.sleep(2)
    pytest.fail(f"no finished run of deployment {deployment_id} within {timeout:.0f}s{stack.logs()}")


def test_promotion_in_a_retrain_triggers_rescoring_and_both_events_arrive(stack: Stack):
    """A retrain on the deployed stack promotes its first version and emits reviews.model.promoted;
    the trigger starts score-new-dumps/after-promotion, whose scoring run of a ready partition
    emits reviews.dump.scored.  Every event is read back from the server's API."""
    from models.dump_discovery import mark_ready
    from models.registry import ModelRegistry
    from tests.events_api import read_events

    root = f"{stack.bucket}/after-promotion"
    # Redeployed with this test's roots (read at deploy time), so the triggered run finds its partition.
    env = dict(stack.env, REVIEWS_DUMPS_ROOT=f"{root}/dumps", REVIEWS_SCORES_ROOT=f"{root}/scores")
    r = stack.prefect("deploy", "-n", "after-promotion", env=env, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    after = stack.deployment("score-new-dumps", "after-promotion")
    assert after["parameters"]["input_root"] == f"{root}/dumps"
    _review_dump(f"{root}/dumps/p1", VOCAB.size)
    mark_ready(f"{root}/dumps/p1")
    runs_before = stack.flow_run_count(after["id"])

    # A fresh registry: the retrain's first version is promoted ("no champion yet" / first version).
    registry_uri = f"{stack.bucket}/promotion-registry"
    tiny = {"epochs": 1, "maxlen": 8, "embedding_dim": 8, "lstm_units": 4, "num_words": 60, "ngram_buckets": 61}
    r = stack.run_deployment("retrain-sentiment/nightly", f"registry={registry_uri}", f"data={stack.npz}",
                             f"overrides={json.dumps(tiny)}")
    assert r.returncode == 0 and "Completed" in r.stdout, r.stdout + r.stderr + stack.logs()
    retrain = stack.get(f"/flow_runs/{_flow_run_id(r.stdout)}")
    version = ModelRegistry(registry_uri).champion()
    assert version and retrain["name"].endswith(f"{version}-promoted")

    (promoted,) = read_events("reviews.model.promoted", f"reviews.model.{version}", api=stack.api)
    p = promoted["payload"]
    assert (p["version"], p["champion_before"], p["champion_after"]) == (version, None, version)
    assert p["registry"] == registry_uri and p["reason"] and "test_accuracy" in p["metrics"]
    related = {r["prefect.resource.id"] for r in promoted["related"]}
    assert f"prefect.flow-run.{retrain['id']}" in related
    assert f"prefect.deployment.{stack.deployment('retrain-sentiment', 'nightly')['id']}" in related

    # The trigger started after-promotion; it scored the ready partition through score-reviews.
    run = _wait_for_run(stack, after["id"], runs_before, timeout=RUN_TIMEOUT + 120)
    assert run["state_type"] == "COMPLETED", (run["state"], stack.logs())
    assert run["created_by"]["type"] == "AUTOMATION", run["created_by"]
    assert run["parameters"]["rescore_on_promotion"] is True
    out = storage.resolve(f"{root}/scores/p1")
    assert storage.exists(out.join("_SUCCESS"))
    m = storage.read_json(out.join("_manifest.json"))
    # The worker's registry (REVIEWS_REGISTRY) names the champion, not the registry of the event.
    assert m["model"]["version"] == ModelRegistry(stack.registry).champion()
    assert m["drift"]["verdict"] in ("unavailable", "too few rows")  # 300 rows: below the 500 to judge

    (scored,) = read_events("reviews.dump.scored", f"reviews.output.{m['output']}", api=stack.api)
    p = scored["payload"]
    assert p["complete"] is True and p["model_version"] == m["model"]["version"]
    assert (p["rows_in"], p["rows_scored"], p["rows_rejected"]) == (N_REVIEWS, N_REVIEWS, 0)
    assert p["drift"]["verdict"] == m["drift"]["verdict"]
