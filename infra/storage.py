"""One way to address storage: a URI resolved once to a pyarrow filesystem.

Accepted forms: ``/abs/path``, ``relative/path``, ``file:///abs/path`` and
``s3://bucket/prefix``.  Everything else in the project (data cache, model
registry, scoring inputs and outputs) goes through :func:`resolve` and the
helpers below, so local disk and S3-compatible stores (MinIO, SeaweedFS, AWS)
share a single code path.

S3 settings never travel as flow parameters: the endpoint and keys come from the
environment / standard AWS config (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``~/.aws/credentials`` …), from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
or from a Prefect block named by ``REVIEWS_S3_BLOCK`` (prefect-aws
``MinIOCredentials`` or ``AwsCredentials``).  A run resolves them once into a
``infra.run_storage.RunStorage`` and hands that to its tasks (in this process or on its Dask
workers); it is never stored by Prefect and never shows its keys.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

# Callers use storage.StorageError / storage.is_transient: one import for all of storage.
from infra.storage_errors import StorageError, describe_error, is_transient  # noqa: F401


@dataclass(frozen=True)
class S3Settings:
    endpoint: str | None
    region: str
    access_key: str | None
    secret_key: str | None
    session_token: str | None
    # When temporary keys (assume-role, instance metadata, credential_process) stop working,
    # in seconds since the epoch; None for keys that do not expire.
    expires_at: float | None = None

    def __repr__(self) -> str:  # never show secrets in logs or tracebacks
        expiry = f", expires_at={self.expires_at!r}" if self.expires_at is not None else ""
        return f"S3Settings(endpoint={self.endpoint!r}, region={self.region!r}, access_key=***{expiry})"

    def expires_within(self, seconds: float) -> bool:
        return self.expires_at is not None and self.expires_at - time.time() < seconds


@dataclass(frozen=True)
class Location:
    """A resolved storage URI: a pyarrow filesystem plus a path inside it."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        for p in parts:
            _check_relative(p)
        path = posixpath.join(self.path, *parts)
        uri = self.uri.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)
        return Location(self.fs, path, uri)

    def __str__(self) -> str:
        return self.uri


def _check_relative(part: str) -> None:
    # Paths built from user input (versions, part names) must stay inside their prefix.
    segs = part.replace("\\", "/").split("/")
    if part.startswith("/") or any(s == ".." for s in segs):
        raise StorageError(f"path component {part!r} would escape its storage prefix")


def s3_settings() -> S3Settings:
    block_name = os.environ.get("REVIEWS_S3_BLOCK")
    if block_name:
        return _settings_from_prefect_block(block_name)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    import boto3  # resolves env vars, profiles and ~/.aws files the standard way
    from botocore.credentials import RefreshableCredentials

    creds = boto3.Session().get_credentials()
    if creds is None:
        return S3Settings(endpoint, region, None, None, None)
    frozen = creds.get_frozen_credentials()
    # pyarrow gets fixed keys, so botocore's own refreshing cannot reach it: keep the expiry
    # (botocore exposes it only as this attribute) for RunStorage to resolve again in time.
    expiry = creds._expiry_time if isinstance(creds, RefreshableCredentials) else None
    return S3Settings(endpoint, region, frozen.access_key, frozen.secret_key, frozen.token,
                      expires_at=expiry.timestamp() if expiry is not None else None)


def _settings_from_prefect_block(name: str) -> S3Settings:
    from prefect.blocks.core import Block

    # A bare name is looked up among the two credential block types.
    candidates = [name] if "/" in name else [f"minio-credentials/{name}", f"aws-credentials/{name}"]
    for ref in candidates:
        try:
            block = Block.load(ref)
            break
        except ValueError:
            continue
    else:
        raise StorageError(f"no Prefect block {name!r} (REVIEWS_S3_BLOCK); use 'minio-credentials/NAME' or "
                           "'aws-credentials/NAME'")
    kind = type(block).__name__
    if kind == "MinIOCredentials":
        key, secret, token = block.minio_root_user, block.minio_root_password, None
    elif kind == "AwsCredentials":
        key, secret, token = block.aws_access_key_id, block.aws_secret_access_key, block.aws_session_token
    else:
        raise StorageError(f"Prefect block {name!r} is a {kind}; expected MinIOCredentials or AwsCredentials")
    params = block.aws_client_parameters
    return S3Settings(
        endpoint=params.endpoint_url if params else None,
        region=block.region_name or "us-east-1",
        access_key=key,
        secret_key=secret.get_secret_value() if secret is not None else None,
        session_token=token,
    )


def s3_filesystem(settings: S3Settings | None = None) -> pafs.S3FileSystem:
    s = settings or s3_settings()
    kwargs: dict[str, Any] = dict(
        region=s.region,
        # Standard retry strategy covers 5xx, throttling and connection resets.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5),
        connect_timeout=5,
        request_timeout=60,
        force_virtual_addressing=False,  # path-style: MinIO/SeaweedFS-friendly
        check_directory_existence_before_creation=False,
        allow_bucket_creation=False,
        allow_bucket_deletion=False,
    )
    if s.access_key:
        kwargs.update(access_key=s.access_key, secret_key=s.secret_key)
        if s.session_token:
            kwargs["session_token"] = s.session_token
    if s.endpoint:
        parsed = urlparse(s.endpoint if "://" in s.endpoint else f"http://{s.endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme or "http"
    return pafs.S3FileSystem(**kwargs)


@lru_cache(maxsize=8)
def _cached_s3(settings: S3Settings) -> pafs.S3FileSystem:
    return s3_filesystem(settings)


def is_s3(uri: str | os.PathLike[str] | Location) -> bool:
    text = uri.uri if isinstance(uri, Location) else os.fspath(uri)
    return urlparse(text).scheme in ("s3", "s3a")


def resolve(uri: str | os.PathLike[str] | Location, settings: S3Settings | None = None) -> Location:
    """Resolve a storage URI once into a :class:`Location`.

    ``settings``: the S3 settings to use (an ``infra.run_storage.RunStorage``'s); by default they are
    resolved now, from the environment, AWS config or Prefect block.
    """
    if isinstance(uri, Location):
        return uri
    text = os.fspath(uri)
    if not text:
        raise StorageError("empty storage URI")
    parsed = urlparse(text)
    if parsed.scheme in ("s3", "s3a"):
        bucket = parsed.netloc
        if not bucket:
            raise StorageError(f"{text!r}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        key = parsed.path.strip("/")
        path = f"{bucket}/{key}" if key else bucket
        return Location(_cached_s3(settings or s3_settings()), path, f"s3://{path}")
    if parsed.scheme == "file":
        text = parsed.path
    elif parsed.scheme and len(parsed.scheme) > 1:
        raise StorageError(f"{text!r}: unsupported URI scheme {parsed.scheme!r} (use a path, file:// or s3://)")
    path = os.path.abspath(os.path.expanduser(text))
    return Location(pafs.LocalFileSystem(), path, path)



def _require_bucket(loc: Location) -> None:
    """On S3 a missing bucket reads like an empty prefix; a typo in the URI must not pass for "no data yet"."""
    if loc.is_local:
        return
    bucket = loc.path.split("/", 1)[0]
    try:
        missing = loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except (OSError, pa.ArrowException):
        return  # e.g. keys allowed on objects but not on HeadBucket: keep the caller's answer
    if missing:
        reason = f"bucket {bucket!r} does not exist (create it first, or fix the URI)"
        raise StorageError(f"{loc.uri}: {reason}", uri=loc.uri, reason=reason)


def exists(loc: Location) -> bool:
    try:
        found = loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound
    except (OSError, pa.ArrowException) as exc:
        raise describe_error(loc, exc) from exc
    if not found:
        _require_bucket(loc)
    return found


def read_bytes(loc: Location) -> bytes:
    try:
        # A random-access file knows its size, so read() fills one buffer; a stream grows and
        # joins chunks (2-3x slower on a 180 MB model file, and twice the memory while it reads).
        with loc.fs.open_input_file(loc.path) as f:
            return f.read()
    except FileNotFoundError as exc:
        _require_bucket(loc)
        raise FileNotFoundError(f"{loc.uri}: not found") from exc
    except (OSError, pa.ArrowException) as exc:
        raise describe_error(loc, exc) from exc


def read_json(loc: Location) -> Any:
    return json.loads(read_bytes(loc))


def ensure_dir(loc: Location) -> None:
    if loc.is_local:
        os.makedirs(loc.path, exist_ok=True)


def atomic_write(loc: Location, write: bytes | Callable[[pa.NativeFile], None]) -> None:
    """Publish ``loc`` all at once: readers see the old object or the new one, never a part.

    On S3 an object appears only when its PUT / multipart upload completes, so the
    stream is written in place; on a filesystem a temporary sibling is renamed over.
    """
    target = loc.path
    tmp = target
    if loc.is_local:
        parent = posixpath.dirname(target)
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(target)}")
    elif not isinstance(write, (bytes, bytearray, memoryview)):
        # Closing an S3 stream completes the upload even after a failed writer, so
        # render into memory first: a failure then never reaches the store.
        buf = pa.BufferOutputStream()
        write(buf)
        write = buf.getvalue().to_pybytes()
    try:
        with loc.fs.open_output_stream(tmp) as out:
            if isinstance(write, (bytes, bytearray, memoryview)):
                out.write(write)
            else:
                write(out)
        if tmp != target:
            os.replace(tmp, target)
    except BaseException as exc:
        if tmp != target and os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, (OSError, pa.ArrowException)) and not isinstance(exc, FileNotFoundError):
            raise describe_error(loc, exc) from exc
        raise


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_json(loc: Location, obj: Any) -> None:
    atomic_write(loc, json_bytes(obj))


def list_files(loc: Location, recursive: bool = True) -> list[pafs.FileInfo]:
    """Files under ``loc`` (sorted by path); hidden temporaries are skipped."""
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=recursive, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise describe_error(loc, exc) from exc
    if not infos:
        _require_bucket(loc)
    files = [i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(".tmp-")]
    return sorted(files, key=lambda i: i.path)


def list_dirs(loc: Location) -> list[str]:
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=False, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        raise describe_error(loc, exc) from exc
    if not infos:
        _require_bucket(loc)
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def delete_file(loc: Location) -> None:
    """Remove one file (gone already is fine).

    On S3 exactly that object is deleted: pyarrow's ``delete_file`` also writes an empty
    "directory" marker object for the parent (``out/_claims/``) that then stays forever.
    """
    from infra import s3_exact_delete

    client = s3_exact_delete.client_for(loc.fs) if isinstance(loc.fs, pafs.S3FileSystem) else None
    try:
        if client is not None:
            s3_exact_delete.delete_object(client, loc.path)
        else:
            loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass
    except (OSError, pa.ArrowException) as exc:
        raise describe_error(loc, exc) from exc


def remove_empty_dir(loc: Location) -> None:
    """Remove a local directory if it is empty; an S3 prefix with no objects does not exist anyway."""
    if loc.is_local:
        try:
            os.rmdir(loc.path)
        except OSError:  # not empty (e.g. another run's claim) or gone already
            pass


def download(loc: Location, local_path: str) -> None:
    pafs.copy_files(loc.path, local_path, source_filesystem=loc.fs, destination_filesystem=pafs.LocalFileSystem())


def upload(local_path: str, loc: Location) -> None:
    with open(local_path, "rb") as f:
        data = f.read()
    atomic_write(loc, data)


