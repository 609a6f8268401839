"""Shared fixtures.

S3: one real, authenticated SeaweedFS server per test session (it starts in
about a second), a fresh bucket per test so tests never see each other's
objects, and the AWS_* variables set the way production sets them - in the
environment - so code under test resolves ``s3://`` URIs exactly as it would
against AWS.  Nothing here is mocked.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import pytest

from devtools.seaweed import SeaweedS3
from tests.faultproxy import FaultProxy
from infra import storage

# Settings that would silently re-route or re-credential S3 access during tests.
_FOREIGN_AWS_SETTINGS = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "REVIEWS_S3_BLOCK",
)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """The session's S3 server; while it runs, AWS_* in os.environ point at it."""
    env = pytest.MonkeyPatch()  # the function-scoped fixture cannot serve a session
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as server:
        try:
            for name in _FOREIGN_AWS_SETTINGS:
                env.delenv(name, raising=False)
            # A developer's ~/.aws (profiles, a default endpoint) must not leak in.
            aws_home = tmp_path_factory.mktemp("aws-home")
            env.setenv("AWS_CONFIG_FILE", str(aws_home / "config"))
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_home / "credentials"))
            for name, value in server.env().items():
                env.setenv(name, value)
            # storage caches one pyarrow filesystem per settings; make sure the next
            # resolve() builds one from the variables above.
            storage._cached_s3.cache_clear()
            yield server
        finally:
            env.undo()
            storage._cached_s3.cache_clear()


@pytest.fixture(scope="session")
def s3_client(s3_server: SeaweedS3):
    """boto3 S3 client with the server's own keys (independent of os.environ)."""
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3, s3_client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new empty bucket for this test, as an ``s3://bucket`` URI; removed afterwards."""
    # Bucket names: 3-63 of [a-z0-9-]; the test name makes the server log readable.
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].rstrip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:8]}"
    uri = s3_server.create_bucket(name)
    yield uri
    s3_server.delete_bucket(name, s3_client)


@pytest.fixture
def s3_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """``s3_env(AWS_SECRET_ACCESS_KEY="wrong", AWS_REGION=None)``: change (None: unset)
    AWS_* variables for one test; cached S3 filesystems follow the change and its undo."""

    def apply(**changes: str | None) -> None:
        for name, value in changes.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        storage._cached_s3.cache_clear()

    yield apply
    storage._cached_s3.cache_clear()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A local registry whose champion is tests/tinymodel.py's tiny model: ``{"uri", "version", "model"}``.

    One per test module: a module may register more versions or promote, and no other module sees it.
    """
    from tests.tinymodel import register_tiny, tiny_model

    uri = str(tmp_path_factory.mktemp("registry"))
    return {"uri": uri, "version": register_tiny(uri), "model": tiny_model()}


@pytest.fixture(scope="module")
def tiny_tgz(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An npm-format IMDB tarball of 240 reviews whose sentiment words are easy to learn."""
    from tests.training_data import sentiment_tgz

    return sentiment_tgz(tmp_path_factory.mktemp("data") / "tiny.tgz")


@pytest.fixture
def proxy(s3_server, monkeypatch):
    """A fault proxy in front of the session's S3 server; AWS_ENDPOINT_URL_S3 points at it."""
    with FaultProxy(s3_server.endpoint, max_lifetime=300) as p:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", p.endpoint)
        storage._cached_s3.cache_clear()  # a fresh filesystem: its own retry quota, its own endpoint
        yield p
    storage._cached_s3.cache_clear()


# Prefect: a real API for the session (Prefect's own test harness: a temporary database
# and a real server process).
pytest_plugins = ["tests.fixtures_prefect"]
