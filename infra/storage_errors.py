"""What a failed storage request was, in one line, and whether it is worth retrying.

Kept apart from :mod:`infra.storage` so that the classification rules (which read only the
error's own code and status, never bucket names or keys) can be read and changed on their own;
``infra.storage`` re-exports all three names, and callers use them from there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.storage import Location


class StorageError(RuntimeError):
    """A storage location could not be reached or used; the message says which and why.

    When the store itself refused (credentials, a missing bucket, an unreachable endpoint),
    ``uri`` is the location the request addressed and ``reason`` the short why, the same for
    every object under the URI the user gave: the CLI names that URI rather than an internal
    key such as ``out/_claims/<uuid>.json``.
    """

    def __init__(self, message: str, uri: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.uri, self.reason = uri, reason

    def __reduce__(self):  # uri and reason survive Prefect results and Dask workers
        return type(self), (self.args[0] if self.args else "", self.uri, self.reason)


def describe_error(loc: Location, exc: BaseException) -> StorageError:
    """Turn an Arrow/OS error into one line naming the location, without credentials."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    low = msg.lower()
    # Arrow spells S3 error codes ACCESS_DENIED / NO_SUCH_BUCKET, boto AccessDenied: match without separators.
    flat = "".join(ch for ch in low if ch.isalnum())
    code = next(iter(_AWS_CODE.findall(msg)), None)
    reason = None
    if any(k in flat for k in ("accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch", "forbidden")) or "403" in low:
        hint = " (check the S3 access key and secret in the environment / AWS config / Prefect block)"
        reason = f"the S3 server refused the credentials ({code or 'access denied'}): {hint.strip(' ()')}"
    elif "nosuchbucket" in flat or "bucketdoesnotexist" in flat:
        hint = " (the bucket does not exist; create it first)"
        reason = f"bucket {loc.path.split('/', 1)[0]!r} does not exist (create it first, or fix the URI)"
    elif "connect" in low or "curl" in low:
        hint = " (is the S3 endpoint reachable? set AWS_ENDPOINT_URL_S3)"
        reason = f"cannot reach the S3 endpoint ({code or msg}): {hint.strip(' ()')}"
    else:
        hint = ""
    return StorageError(f"{loc.uri}: {msg}{hint}", uri=loc.uri, reason=reason)


# Classified on the error's own code and status only: bucket names and keys in the
# message ("forbidden-city", "part-a503...") must not decide whether a request is retried.
_AWS_CODE = re.compile(r"AWS Error ([A-Z_]+)")
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})|http response code:? ?(\d{3})", re.IGNORECASE)
_TRANSIENT_CODES = {"SLOW_DOWN", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "NETWORK_CONNECTION",
                    "REQUEST_TIMEOUT", "THROTTLING", "REQUEST_TIME_TOO_SKEWED", "THROTTLING_EXCEPTION"}
_PERMANENT_CODES = {"ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "NO_SUCH_BUCKET",
                    "NO_SUCH_KEY", "RESOURCE_NOT_FOUND", "NO_SUCH_UPLOAD", "INVALID_PARAMETER_VALUE"}
# Transport failures carry no AWS code.
_TRANSPORT = re.compile(r"curl(Code)?|connection (reset|refused|closed)|broken pipe|timed out|"
                        r"failed to flush response stream", re.IGNORECASE)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: 5xx, throttling, resets and time-outs; never bad credentials or missing objects."""
    if isinstance(exc, FileNotFoundError):
        return False
    for e in (exc, exc.__cause__):
        if e is None:
            continue
        text = str(e)
        codes = set(_AWS_CODE.findall(text))
        if codes & _PERMANENT_CODES:
            return False
        statuses = {int(a or b) for a, b in _HTTP_STATUS.findall(text)}
        if codes & _TRANSIENT_CODES or any(st >= 500 or st == 429 for st in statuses):
            return True
        if statuses:
            return False  # an explicit 4xx
        if _TRANSPORT.search(text):
            return True
    return False
