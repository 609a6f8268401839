"""Security: credentials come only from the environment / AWS config and never leak into logs,
artifacts, manifests or run parameters; bad credentials fail fast without a retry storm;
models load only with Keras safe_mode and no pickle; user-supplied names cannot escape
their storage prefix.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import logging
import os
import secrets
import time
import zipfile
from pathlib import Path
from uuid import UUID

import numpy as np
import pytest

from infra import storage
from infra.storage import StorageError
from models.registry import ModelRegistry, RegistryError
from tests.cli_process import REPO
from tests.faultproxy import FaultProxy
from tests.tinymodel import make_dump, register_tiny

pytestmark = pytest.mark.usefixtures("prefect_api")


# -- nothing secret in what a run leaves behind ------------------------------------------------------


def _flush_prefect_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for h in logger.handlers:
            if isinstance(h, APILogHandler):
                h.flush()


def _run_record(flow_run_id: UUID) -> dict[str, list[str]]:
    """Everything the Prefect API holds about a flow run, as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    _flush_prefect_logs()
    with get_client(sync_client=True) as client:
        def logs() -> list[str]:
            out, offset = [], 0
            while True:
                page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                        limit=200, offset=offset)
                out += [f"{log.name} {log.message}" for log in page]
                if len(page) < 200:
                    return out
                offset += 200

        # Logs are shipped in batches: wait until the count stops moving.
        seen, stable_since = logs(), time.monotonic()
        while time.monotonic() - stable_since < 1.5:
            time.sleep(0.3)
            now = logs()
            if len(now) != len(seen):
                seen, stable_since = now, time.monotonic()
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        run = client.read_flow_run(flow_run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {
        "logs": seen,
        "artifacts": [json.dumps({"key": a.key, "data": a.data, "description": a.description}, default=str)
                      for a in artifacts],
        "parameters": [json.dumps(run.parameters, default=str)],
        "states": [f"{run.name} {run.state.message if run.state else ''}"] +
                  [f"{t.name} {t.state.message if t.state else ''}" for t in tasks],
    }


def _assert_absent(secret: str, where: dict[str, list[str]]) -> None:
    for kind, texts in where.items():
        for text in texts:
            assert secret not in text, f"secret key found in the run's {kind}: {text[:300]}"


def test_no_secret_in_logs_artifacts_manifest_parameters_or_objects(s3_server, s3_bucket, s3_client, registry):
    from flows.score import score_reviews

    src, out = f"{s3_bucket}/dumps/day1", f"{s3_bucket}/scores/day1"
    make_dump(src, n=300, files_rows=150, rg=50)
    # Something to complain about, so error paths log too.
    storage.atomic_write(storage.resolve(f"{src}/zz-broken.parquet"), b"PAR1 not parquet")
    state = score_reviews(input=src, output=out, registry=registry["uri"], allow_failed_files=True, return_state=True)
    assert state.is_completed(), state.message
    record = _run_record(state.state_details.flow_run_id)
    assert record["logs"] and record["artifacts"], "the run logged and published artifacts"
    assert any("zz-broken.parquet" in line for line in record["logs"])
    secret = s3_server.secret_key
    _assert_absent(secret, record)
    # The manifest and every object the run wrote.
    bucket = s3_bucket.removeprefix("s3://")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="scores/").get("Contents", [])]
    assert "scores/day1/_manifest.json" in keys
    for key in keys:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert secret.encode() not in body, key
    manifest = storage.read_json(storage.resolve(out).join("_manifest.json"))
    assert secret not in json.dumps(manifest)
    # Settings never travel as parameters: the flow takes no credential-like parameter at all.
    words = {w for n in inspect.signature(score_reviews.fn).parameters for w in n.lower().split("_")}
    assert not words & {"key", "secret", "password", "token", "credentials", "creds", "access"}, words


# -- wrong or missing credentials ---------------------------------------------------------------------


@pytest.fixture
def counted(s3_server, monkeypatch):
    """All S3 traffic through a (fault-free) proxy that counts requests."""
    with FaultProxy(s3_server.endpoint, max_lifetime=120) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.endpoint)
        storage._cached_s3.cache_clear()
        yield p
    storage._cached_s3.cache_clear()


def _failing_run(src: str, out: str, registry) -> tuple[BaseException, float, object]:
    from flows.score import score_reviews

    began = time.monotonic()
    state = score_reviews(input=src, output=out, registry=registry["uri"], return_state=True)
    took = time.monotonic() - began
    assert state.is_failed(), "the run must fail"
    with pytest.raises(Exception) as caught:
        state.result()
    return caught.value, took, state


@pytest.mark.parametrize("case", ["wrong-secret", "wrong-key-id", "missing"])
def test_bad_credentials_fail_fast_and_clearly(case, s3_server, s3_bucket, s3_env, counted, registry, tmp_path):
    src = str(tmp_path / "in")  # local input: the output is the first S3 access
    make_dump(src, n=100, files_rows=100, rg=100)
    out = f"{s3_bucket}/scores/day1"
    wrong = "WRONG" + secrets.token_hex(16)
    if case == "wrong-secret":
        s3_env(AWS_SECRET_ACCESS_KEY=wrong)
    elif case == "wrong-key-id":
        s3_env(AWS_ACCESS_KEY_ID="AKWRONG" + secrets.token_hex(6).upper())
    else:
        s3_env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SESSION_TOKEN=None)
    err, took, state = _failing_run(src, out, registry)
    assert isinstance(err, StorageError), repr(err)
    assert out in str(err) and "access key and secret" in str(err), str(err)
    assert took < 30, f"reporting bad credentials took {took:.1f} s"
    assert len(counted.requests) <= 10, f"retry storm: {len(counted.requests)} requests for one refused run"
    record = _run_record(state.state_details.flow_run_id)
    for secret in (s3_server.secret_key, wrong):
        _assert_absent(secret, record)
        assert secret not in str(err) and secret not in repr(err)
    # Nothing was written.
    assert not s3_server.client().list_objects_v2(Bucket=s3_bucket.removeprefix("s3://")).get("Contents")


def test_credentials_come_from_aws_config_files(s3_server, s3_bucket, s3_env, tmp_path):
    """No AWS_ACCESS_KEY_ID/SECRET in the environment: the shared credentials file is used."""
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\n")
    creds.chmod(0o600)
    s3_env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SHARED_CREDENTIALS_FILE=str(creds))
    loc = storage.resolve(s3_bucket).join("from-config.json")
    storage.write_json(loc, {"ok": True})
    assert storage.read_json(loc) == {"ok": True}
    assert s3_server.secret_key not in repr(storage.s3_settings())


# -- model loading: safe_mode only, never pickle ----------------------------------------------------------

_LOAD_PATH = [REPO / "models" / "registry.py", REPO / "models" / "predictors.py"]


@pytest.mark.parametrize("path", _LOAD_PATH, ids=lambda p: p.name)
def test_load_path_has_no_pickle(path: Path):
    source = path.read_text()
    tree = ast.parse(source)
    for banned in ("safe_mode=False", "allow_pickle=True", "register_custom_ops_library", "torch.load",
                   "pickle.load", "pickle.loads"):
        assert banned not in source.replace(" ", ""), f"{path.name} mentions {banned!r}"
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "torch"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in ("eval", "exec", "__import__"), f"{path.name}:{node.lineno}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name.endswith("load_model"):
            assert kw.get("safe_mode") == "True", f"{path.name}:{node.lineno} {ast.unparse(node)}"
        if name in ("np.load", "numpy.load"):
            assert kw.get("allow_pickle") == "False", f"{path.name}:{node.lineno} {ast.unparse(node)}"
        if name in ("np.save", "numpy.save"):
            assert kw.get("allow_pickle") == "False", f"{path.name}:{node.lineno} {ast.unparse(node)}"


class _Payload:
    """Unpickling this creates a file: the proof that pickle ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _forge(reg_root: Path, version: str, name: str, data: bytes) -> None:
    """Replace a registry file and forge its checksum, as an attacker with write access would."""
    vdir = reg_root / "versions" / version
    (vdir / name).write_bytes(data)
    meta = json.loads((vdir / "metadata.json").read_text())
    meta["files"][name] = hashlib.sha256(data).hexdigest()
    (vdir / "metadata.json").write_text(json.dumps(meta))


def test_pickled_probe_is_refused_and_never_unpickled(tmp_path):
    root = tmp_path / "reg"
    version = register_tiny(str(root))
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    _forge(root, version, "probe.npy", buf.getvalue())
    with pytest.raises((RegistryError, ValueError), match="pickle"):
        ModelRegistry(str(root)).load_predictor(version)
    assert not marker.exists(), "the pickle payload ran"


def _inject_module_call(tmp_path) -> tuple[Path, str, Path]:
    """A registered version whose model.keras config names os.system (checksums forged)."""
    root = tmp_path / "reg"
    version = register_tiny(str(root))
    path = root / "versions" / version / "model.keras"
    marker = tmp_path / "pwned"
    src = zipfile.ZipFile(io.BytesIO(path.read_bytes()))
    config = json.loads(src.read("config.json"))
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["activation"] = {"module": "os", "class_name": "system", "registered_name": "system",
                                     "config": {"command": f"touch {marker}"}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for item in src.infolist():
            z.writestr(item, json.dumps(config) if item.filename == "config.json" else src.read(item.filename))
    _forge(root, version, "model.keras", out.getvalue())
    return root, version, marker


def test_keras_config_importing_arbitrary_modules_is_refused(tmp_path):
    """A model.keras whose config names a non-Keras module/function must not load (CVE-2025-1550 style)."""
    root, version, marker = _inject_module_call(tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - refused is what matters here; the type is the next test
        ModelRegistry(str(root)).load_keras(version)
    assert not marker.exists(), "the injected call ran"


def test_keras_refusal_is_a_registry_error(tmp_path):
    root, version, marker = _inject_module_call(tmp_path)
    with pytest.raises(RegistryError, match="safe_mode"):
        ModelRegistry(str(root)).load_keras(version)
    assert not marker.exists()


# -- names from user input stay inside their prefix -----------------------------------------------------

ESCAPES = ["..", "../x", "a/../../b", "a/..", "/etc/passwd", "/", "..\\x", "a\\..\\..\\b", "x/./../..", "../../"]


@pytest.mark.parametrize("part", ESCAPES)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_location_join_cannot_escape(part, where, tmp_path, request):
    root = storage.resolve(str(tmp_path / "root") if where == "local"
                           else request.getfixturevalue("s3_bucket") + "/root")
    with pytest.raises(StorageError, match="escape"):
        root.join("versions", part)
    with pytest.raises(StorageError, match="escape"):
        root.join(part, "model.onnx")


@pytest.mark.parametrize("part", ["x..y", "...x", "v1/model.onnx", "a b", "ünï", "%2e%2e", "./x"])
def test_location_join_keeps_harmless_names_inside(part, tmp_path):
    root = storage.resolve(str(tmp_path / "root"))
    joined = root.join("versions", part)
    assert os.path.normpath(joined.path).startswith(root.path + os.sep)


@pytest.mark.parametrize("version", ESCAPES + [".", "", ".hidden", "v1/../../x", "20260101-000000-aaaaaa/../x"])
def test_registry_version_names_cannot_escape(version, tmp_path, registry):
    reg = ModelRegistry(registry["uri"])
    with pytest.raises((RegistryError, StorageError)):
        reg._version_dir(version)
    for call in (reg.metadata, reg.resolve, reg.load_predictor, reg.load_keras, reg.preprocessing):
        with pytest.raises((RegistryError, StorageError)):
            call(version)
    with pytest.raises((RegistryError, StorageError)):
        reg.promote(version, reason="attack")
    assert reg.champion() == registry["version"]


def test_scoring_with_an_escaping_model_name_is_refused(tmp_path, registry):
    from flows.score import score_reviews

    src = str(tmp_path / "in")
    make_dump(src, n=10, files_rows=10, rg=10)
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises((RegistryError, StorageError)):
        score_reviews(input=src, output=str(tmp_path / "out"), registry=registry["uri"],
                      model=f"../../{outside.name}")
    assert not (tmp_path / "out").exists() or not any(p.name.startswith("part-")
                                                      for p in (tmp_path / "out").iterdir())
