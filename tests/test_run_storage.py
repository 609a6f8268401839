"""A run's storage settings are resolved once and passed down; temporary credentials are renewed.

Against the real S3 server: the credentials come from boto3's own chain (the environment, or a
``credential_process`` in an AWS config file handing out keys with an expiry, the way assume-role
and instance metadata do), counted by wrapping ``storage.s3_settings``.
"""

from __future__ import annotations

import pickle
import sys
import time

import pytest

from infra import storage
from infra.run_storage import RunStorage
from models.output_dataset import OutputDataset
from tests.tinymodel import make_dump, read_output, register_tiny


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("registry"))
    return {"uri": uri, "version": register_tiny(uri)}


@pytest.fixture
def resolutions(monkeypatch):
    """How often S3 settings were resolved (boto3's chain or a Prefect block), by whom."""
    calls: list[str] = []
    real = storage.s3_settings

    def counted():
        calls.append(sys._getframe(1).f_code.co_name)
        return real()

    monkeypatch.setattr(storage, "s3_settings", counted)
    return calls


def test_a_scoring_run_resolves_its_s3_settings_once(s3_bucket, registry, resolutions, prefect_api):
    from flows.score import score_reviews

    src, out = f"{s3_bucket}/dumps/day1", f"{s3_bucket}/scores/day1"
    table = make_dump(src, n=400, files_rows=200, rg=50)
    resolutions.clear()  # writing the dump resolved too
    summary = score_reviews(input=src, output=out, registry=registry["uri"], max_rows_per_unit=100)
    assert summary["rows_scored"] == 400
    # 4 units, each reading an input file and writing a part, plus the claim, plan, manifest and
    # _SUCCESS: one resolution for all of them.
    assert len(resolutions) == 1, resolutions
    assert sorted(read_output(out).column("review_id").to_pylist()) == sorted(table.column("review_id").to_pylist())


def test_run_storage_pickles_with_its_settings_and_without_secrets(s3_bucket, resolutions, s3_server):
    run = RunStorage.for_uris("/local/only", None)
    assert resolutions == [], "a run on local disk needs no S3 settings"
    run = RunStorage.for_uris("/local/in", f"{s3_bucket}/out")
    assert len(resolutions) == 1
    out = OutputDataset(f"{s3_bucket}/out", run)
    copy = pickle.loads(pickle.dumps(out))  # what a Dask worker gets
    storage.write_json(copy.location.join("x.json"), {"ok": 1})
    assert storage.read_json(out.location.join("x.json")) == {"ok": 1}
    assert len(resolutions) == 1, "the copy used the settings it was given"
    assert out.location is out.location, "one output URI is resolved once"
    for text in (repr(run), repr(copy), repr(copy.storage), repr(run.s3_settings())):
        assert s3_server.secret_key not in text


_CREDENTIAL_PROCESS = """
import json, sys, datetime
lifetime, key, secret, log = float(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(log, "a") as f:
    f.write("call\\n")
expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lifetime)
print(json.dumps({"Version": 1, "AccessKeyId": key, "SecretAccessKey": secret,
                  "Expiration": expires.isoformat()}))
"""


def _temporary_credentials(tmp_path, s3_server, s3_env, lifetime: float) -> None:
    """boto3's chain hands out RefreshableCredentials expiring ``lifetime`` s after each fetch."""
    script, log, config = tmp_path / "creds.py", tmp_path / "calls.log", tmp_path / "config"
    script.write_text(_CREDENTIAL_PROCESS)
    config.write_text(f"[default]\ncredential_process = {sys.executable} {script} {lifetime} "
                      f"{s3_server.access_key} {s3_server.secret_key} {log}\n")
    s3_env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SESSION_TOKEN=None, AWS_CONFIG_FILE=str(config))


def test_temporary_credentials_carry_their_expiry(tmp_path, s3_server, s3_bucket, s3_env):
    _temporary_credentials(tmp_path, s3_server, s3_env, lifetime=3600)
    settings = storage.s3_settings()
    assert settings.expires_at is not None and abs(settings.expires_at - (time.time() + 3600)) < 60
    assert s3_server.secret_key not in repr(settings)
    static = tmp_path / "static"
    static.write_text("")
    s3_env(AWS_ACCESS_KEY_ID=s3_server.access_key, AWS_SECRET_ACCESS_KEY=s3_server.secret_key,
           AWS_CONFIG_FILE=str(static))
    assert storage.s3_settings().expires_at is None, "keys from the environment do not expire"


def test_expiring_credentials_are_resolved_again_before_they_expire(tmp_path, s3_server, s3_bucket, s3_env,
                                                                    resolutions):
    lifetime, margin = 3600.0, 3600.0 - 6  # "close to expiry" 6 s after each resolution
    _temporary_credentials(tmp_path, s3_server, s3_env, lifetime)
    run = RunStorage.for_uris(f"{s3_bucket}/out", refresh_margin=margin)
    first = run.s3_settings()
    fresh_until = first.expires_at - margin
    out = OutputDataset(f"{s3_bucket}/out", run)
    storage.write_json(out.location.join("before.json"), {"n": 1})
    assert time.time() < fresh_until, "the machine stalled: the first credentials went stale during set-up"
    assert len(resolutions) == 1, "fresh credentials are used as they are"

    time.sleep(max(0.0, fresh_until - time.time()) + 0.5)
    storage.write_json(out.location.join("after.json"), {"n": 2})  # a step late in a long run
    assert len(resolutions) == 2, "credentials close to their expiry are resolved again"
    renewed = run.s3_settings()
    assert renewed.expires_at > first.expires_at
    assert storage.read_json(out.location.join("after.json")) == {"n": 2}
    assert len(resolutions) == 2, "and the renewed ones are kept until they, too, get close"
    # A worker given the run's storage renews on its own, from its own credential chain.
    worker = pickle.loads(pickle.dumps(run))
    worker.refresh_margin = lifetime + 60
    assert worker.s3_settings().expires_at >= renewed.expires_at
    assert len(resolutions) == 3
    assert (tmp_path / "calls.log").read_text().count("call") >= 3, "botocore ran the credential process"
