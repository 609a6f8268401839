"""Deleting one S3 object and nothing else (used by :func:`infra.storage.delete_file`).

pyarrow's ``S3FileSystem.delete_file`` re-creates an empty "directory" marker object for the
parent prefix after deleting a key (``out/_claims/`` once the last claim goes), and the marker
then stays in every output.  A plain DeleteObject request through boto3 removes exactly the key.
The client is built from the pyarrow filesystem's own options, so both address the same endpoint
with the same keys.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pyarrow.fs as pafs


def client_for(fs: pafs.S3FileSystem):
    """A boto3 S3 client for the same endpoint and keys as ``fs``, or None to use ``fs`` itself."""
    try:
        opts = fs.__reduce__()[1][0]  # the options ``fs`` was built with (its pickled form)
    except (AttributeError, IndexError, TypeError):
        return None
    if not isinstance(opts, dict) or opts.get("role_arn") or opts.get("anonymous") \
            or (opts.get("proxy_options") or {}).get("host"):
        return None  # settings this project never makes: keep pyarrow's own request path
    endpoint = opts.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{opts.get('scheme') or 'https'}://{endpoint}"
    return _client(endpoint, opts.get("region") or "us-east-1", opts.get("access_key") or None,
                   opts.get("secret_key") or None, opts.get("session_token") or None,
                   opts.get("tls_ca_file_path") or None)


@lru_cache(maxsize=8)
def _client(endpoint, region, access_key, secret_key, session_token, ca_file):
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = dict(region_name=region, endpoint_url=endpoint, config=Config(
        retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
        s3={"addressing_style": "path"}))
    if access_key:  # else boto3's standard chain, as infra.storage.s3_settings resolved it
        kwargs.update(aws_access_key_id=access_key, aws_secret_access_key=secret_key,
                      aws_session_token=session_token)
    if ca_file:
        kwargs["verify"] = ca_file
    return boto3.session.Session().client("s3", **kwargs)


def delete_object(client, path: str) -> None:
    """Delete ``bucket/key``; a missing key is no error (S3 answers 204 either way).

    Failures are raised as OSError spelled like pyarrow's (code, HTTP status), so that
    storage.describe_error and storage.is_transient read them the same way.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = path.partition("/")
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        err, status = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise OSError(f"{err.get('Code', 'error')} (HTTP status {status}) during DeleteObject operation: "
                      f"{err.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise OSError(f"connection error during DeleteObject operation: {exc}") from exc
