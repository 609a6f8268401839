"""infra.storage against local disk and a real S3 server, with the same test bodies.

Also covers the failure modes that matter in production - wrong credentials,
missing buckets - and the test server itself (authentication really is on).
"""

from __future__ import annotations

import os
import posixpath
import secrets
import time
import urllib.error
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from infra import storage
from infra.storage import StorageError


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path) -> storage.Location:
    """An empty prefix on local disk or in a fresh S3 bucket."""
    if request.param == "local":
        return storage.resolve(str(tmp_path / "store"))
    # Looked up lazily so local-only runs never start the S3 server.
    return storage.resolve(request.getfixturevalue("s3_bucket") + "/store")


def _rel(root: storage.Location, infos: list[pafs.FileInfo]) -> list[str]:
    return [posixpath.relpath(i.path, root.path) for i in infos]


# -- resolve ---------------------------------------------------------------------


def test_resolve_local_forms(tmp_path, monkeypatch):
    absolute = storage.resolve("/srv/data/x.parquet")
    assert (absolute.path, absolute.uri, absolute.is_local) == ("/srv/data/x.parquet", "/srv/data/x.parquet", True)
    assert isinstance(absolute.fs, pafs.LocalFileSystem)

    assert storage.resolve("file:///srv/data/x.parquet").path == "/srv/data/x.parquet"

    monkeypatch.chdir(tmp_path)
    assert storage.resolve("rel/x.json").path == str(tmp_path / "rel" / "x.json")

    loc = storage.resolve(str(tmp_path))
    assert storage.resolve(loc) is loc


def test_resolve_s3_forms(s3_server):
    loc = storage.resolve("s3://bucket/some/prefix/")
    assert (loc.path, loc.uri, loc.is_local) == ("bucket/some/prefix", "s3://bucket/some/prefix", False)
    assert isinstance(loc.fs, pafs.S3FileSystem)
    assert storage.resolve("s3a://bucket").path == "bucket"
    # Same settings -> the same cached filesystem (and its connection pool).
    assert storage.resolve("s3://other/p").fs is loc.fs


@pytest.mark.parametrize("uri", ["ftp://host/x", "hdfs://nn/data", "gs://bucket/x", "", "s3://", "s3:///key"])
def test_resolve_rejects(uri):
    with pytest.raises(StorageError):
        storage.resolve(uri)


@pytest.mark.parametrize("part", ["..", "../x", "a/../../b", "a/../b", "/etc/passwd", "a\\..\\b"])
def test_join_cannot_escape_prefix(part, tmp_path):
    with pytest.raises(StorageError, match="escape"):
        storage.resolve(str(tmp_path)).join(part)


def test_join_builds_path_and_uri(s3_server):
    loc = storage.resolve("s3://bucket/models").join("versions", "v1/model.onnx")
    assert (loc.path, loc.uri) == ("bucket/models/versions/v1/model.onnx", "s3://bucket/models/versions/v1/model.onnx")


# -- read / write / list -------------------------------------------------------------


def test_json_round_trip(root):
    loc = root.join("meta", "info.json")
    doc = {"version": "v1", "metrics": {"accuracy": 0.875}, "tags": ["a", "b"], "note": "naïve ☂"}
    storage.write_json(loc, doc)
    assert storage.read_json(loc) == doc

    storage.write_json(loc, {"version": "v2"})  # overwrite replaces, never merges
    assert storage.read_json(loc) == {"version": "v2"}

    with pytest.raises(FileNotFoundError, match="missing.json"):
        storage.read_json(root.join("missing.json"))


def test_atomic_write_readers_see_old_or_new_never_part(root):
    loc = root.join("out", "part-0.bin")
    storage.atomic_write(loc, b"old")
    seen_during_write = {}

    def writer(out: pa.NativeFile) -> None:
        out.write(b"new-first-half|")
        # A concurrent reader looks now: only the complete old version may be visible.
        seen_during_write["bytes"] = storage.read_bytes(loc)
        seen_during_write["files"] = _rel(root, storage.list_files(root))
        out.write(b"second-half")

    storage.atomic_write(loc, writer)
    assert seen_during_write == {"bytes": b"old", "files": ["out/part-0.bin"]}
    assert storage.read_bytes(loc) == b"new-first-half|second-half"
    assert _rel(root, storage.list_files(root)) == ["out/part-0.bin"]
    if root.is_local:  # no temporary left behind, hidden or not
        assert os.listdir(os.path.dirname(loc.path)) == ["part-0.bin"]


def test_new_object_is_absent_until_write_completes(root):
    loc = root.join("fresh.bin")
    during = []
    storage.atomic_write(loc, lambda out: (out.write(b"x" * 1000), during.append(storage.exists(loc))))
    assert during == [False]
    assert storage.read_bytes(loc) == b"x" * 1000


def test_failed_writer_publishes_nothing(root):
    kept = root.join("kept.json")
    storage.write_json(kept, {"v": 1})
    fresh = root.join("fresh.bin")

    def failing(out: pa.NativeFile) -> None:
        out.write(b"half a file")
        raise ValueError("writer broke")

    for loc in (kept, fresh):
        with pytest.raises(ValueError, match="writer broke"):
            storage.atomic_write(loc, failing)
    assert storage.read_json(kept) == {"v": 1}
    assert not storage.exists(fresh)
    assert _rel(root, storage.list_files(root)) == ["kept.json"]
    if root.is_local:
        assert os.listdir(root.path) == ["kept.json"]


def test_list_exists_delete(root):
    for name in ("a.json", "sub/b.json", "sub/deeper/c.bin", "other/d.json"):
        storage.atomic_write(root.join(name), name.encode())

    assert _rel(root, storage.list_files(root)) == ["a.json", "other/d.json", "sub/b.json", "sub/deeper/c.bin"]
    assert _rel(root, storage.list_files(root.join("sub"), recursive=False)) == ["sub/b.json"]
    assert storage.list_dirs(root) == ["other", "sub"]
    assert storage.list_dirs(root.join("sub")) == ["deeper"]
    assert storage.list_files(root.join("nothing-here")) == []
    assert storage.list_dirs(root.join("nothing-here")) == []

    assert storage.exists(root.join("sub/b.json"))
    assert not storage.exists(root.join("sub/nope.json"))

    storage.delete_file(root.join("sub/b.json"))
    storage.delete_file(root.join("sub/b.json"))  # already gone: not an error
    assert not storage.exists(root.join("sub/b.json"))
    assert _rel(root, storage.list_files(root)) == ["a.json", "other/d.json", "sub/deeper/c.bin"]


def test_parquet_through_resolved_filesystem(root):
    table = pa.table({"id": pa.array(range(100), pa.int64()), "text": [f"review {i}" for i in range(100)]})
    single = root.join("single.parquet")
    storage.ensure_dir(root)  # local parquet writes need the directory; S3 has none
    pq.write_table(table, single.path, filesystem=single.fs)
    assert pq.read_table(single.path, filesystem=single.fs).equals(table)

    # A dataset prefix as scoring writes it: parts published atomically, then a marker.
    out = root.join("scored")
    for i in range(3):
        part = table.slice(i * 34, 34)
        storage.atomic_write(out.join(f"part-{i}.parquet"), lambda f, part=part: pq.write_table(part, f))
    storage.atomic_write(out.join("_SUCCESS"), b"")

    dataset = ds.dataset(out.path, filesystem=out.fs, format="parquet")
    assert len(dataset.files) == 3  # the _SUCCESS marker is not data
    assert dataset.to_table().sort_by("id").equals(table)


# -- credentials and misconfiguration (S3 only) --------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_fail_fast_and_do_not_leak(variable, s3_bucket, s3_env, s3_server):
    good = storage.resolve(s3_bucket).join("data.json")
    storage.write_json(good, {"ok": True})
    wrong = "WRONG" + secrets.token_hex(12).upper()
    s3_env(**{variable: wrong})

    loc = storage.resolve(good.uri)
    operations = {
        "read": lambda: storage.read_json(loc),
        "exists": lambda: storage.exists(loc),
        "list": lambda: storage.list_files(storage.resolve(s3_bucket)),
        "write": lambda: storage.write_json(loc, {"ok": False}),
    }
    for name, op in operations.items():
        began = time.monotonic()
        with pytest.raises(StorageError) as caught:
            op()
        elapsed = time.monotonic() - began
        # Credential errors are final: retrying them for minutes only delays the page.
        assert elapsed < 10, f"{name}: took {elapsed:.1f} s to report bad credentials"
        message = str(caught.value)
        assert good.uri in message or s3_bucket in message, message
        assert "access key and secret" in message, message
        for text in (message, repr(caught.value), str(caught.value.__cause__)):
            assert wrong not in text and s3_server.secret_key not in text

    settings = storage.s3_settings()
    assert wrong not in repr(settings) and s3_server.secret_key not in repr(settings)
    assert s3_server.secret_key not in repr(loc)


def test_store_refusals_carry_location_and_reason(s3_bucket, s3_env):
    import pickle

    s3_env(AWS_SECRET_ACCESS_KEY="WRONG" + secrets.token_hex(12).upper())
    loc = storage.resolve(f"{s3_bucket}/out/").join("_claims", "c0ffee.json")
    with pytest.raises(StorageError) as caught:
        storage.write_json(loc, {})
    # Pickled as Prefect results and Dask workers pass it on: the fields must survive.
    for exc in (caught.value, pickle.loads(pickle.dumps(caught.value))):
        assert "_claims/c0ffee.json" in str(exc), "the full message keeps the exact key for the logs"
        assert exc.uri == loc.uri and exc.reason.startswith("the S3 server refused the credentials"), exc.reason
        assert "access key and secret" in exc.reason and "_claims" not in exc.reason


def test_s3_delete_removes_exactly_the_object_and_reports_refusals(s3_bucket, s3_env, s3_client):
    # pyarrow's own delete_file leaves an empty "out/sub/" marker object behind; ours deletes one key.
    root = storage.resolve(f"{s3_bucket}/out")
    storage.write_json(root.join("sub", "a.json"), {})
    storage.delete_file(root.join("sub", "a.json"))
    storage.delete_file(root.join("sub", "a.json"))  # already gone: not an error
    assert s3_client.list_objects_v2(Bucket=s3_bucket.removeprefix("s3://")).get("Contents", []) == []
    wrong = "WRONG" + secrets.token_hex(12).upper()
    s3_env(AWS_SECRET_ACCESS_KEY=wrong)
    with pytest.raises(StorageError) as caught:
        storage.delete_file(storage.resolve(f"{s3_bucket}/out").join("sub", "b.json"))
    assert caught.value.reason.startswith("the S3 server refused the credentials"), str(caught.value)
    assert wrong not in str(caught.value) and not storage.is_transient(caught.value)


def test_missing_bucket_is_named(s3_server):
    bucket = f"missing-{uuid.uuid4().hex[:10]}"
    loc = storage.resolve(f"s3://{bucket}/prefix/x.json")
    # Reads must not pass a typo'd bucket off as "no data yet"; writes must not create it.
    for op in (lambda: storage.write_json(loc, {}), lambda: storage.read_json(loc), lambda: storage.exists(loc),
               lambda: storage.list_files(storage.resolve(f"s3://{bucket}/prefix")),
               lambda: storage.list_dirs(storage.resolve(f"s3://{bucket}"))):
        with pytest.raises(StorageError, match=bucket) as caught:
            op()
        assert "does not exist" in str(caught.value)
    assert bucket not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


# -- the test server itself ------------------------------------------------------------


def test_server_refuses_anonymous_and_wrong_keys(s3_server, s3_bucket, s3_client):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    bucket = s3_bucket.removeprefix("s3://")
    s3_client.put_object(Bucket=bucket, Key="secret.txt", Body=b"payload")

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{s3_server.endpoint}/{bucket}/secret.txt", timeout=5)
    assert caught.value.code == 403

    path_style = {"addressing_style": "path"}
    anonymous = boto3.session.Session().client(
        "s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, s3=path_style))
    forged = boto3.session.Session().client(
        "s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
        aws_access_key_id=s3_server.access_key, aws_secret_access_key="not-" + s3_server.secret_key,
        config=Config(signature_version="s3v4", s3=path_style))
    for client, code in ((anonymous, "AccessDenied"), (forged, "SignatureDoesNotMatch")):
        for call in (lambda c: c.list_buckets(), lambda c: c.get_object(Bucket=bucket, Key="secret.txt"),
                     lambda c: c.put_object(Bucket=bucket, Key="planted.txt", Body=b"x")):
            with pytest.raises(ClientError) as refused:
                call(client)
            assert refused.value.response["Error"]["Code"] == code
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]] == ["secret.txt"]


def test_server_keeps_its_secret(s3_server):
    identity = s3_server.dir / "s3-identity.json"
    assert identity.stat().st_mode & 0o077 == 0  # owner-only: it holds the secret key
    assert s3_server.secret_key not in repr(s3_server)
    env = s3_server.env()
    assert env["AWS_ENDPOINT_URL_S3"] == s3_server.endpoint.rstrip("/")
    assert env["AWS_SECRET_ACCESS_KEY"] == s3_server.secret_key
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_second_server_runs_alongside_and_stops_cleanly(s3_server):
    from devtools.seaweed import SeaweedS3

    with SeaweedS3() as other:
        assert other.port != s3_server.port and other.secret_key != s3_server.secret_key
        assert other.create_bucket("side-by-side") == "s3://side-by-side"
        assert [b["Name"] for b in other.client().list_buckets()["Buckets"]] == ["side-by-side"]
        data_dir = other.dir
    assert not other.running and not data_dir.exists()  # private temp dir goes with it
    other.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(other.endpoint, timeout=2)
