"""S3 settings from a Prefect block (prefect-aws MinIOCredentials), against the real S3 server."""

from __future__ import annotations

import uuid

import pytest

from infra import storage


def test_minio_credentials_block_drives_s3_access(s3_server, s3_bucket, s3_env, prefect_api):
    from prefect_aws import MinIOCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    name = f"reviews-s3-{uuid.uuid4().hex[:6]}"
    MinIOCredentials(minio_root_user=s3_server.access_key, minio_root_password=s3_server.secret_key,
                     region_name="us-east-1",
                     aws_client_parameters=AwsClientParameters(endpoint_url=s3_server.endpoint)).save(name)
    # The environment holds no usable keys or endpoint: only the block does.
    s3_env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_ENDPOINT_URL_S3=None, REVIEWS_S3_BLOCK=name)
    settings = storage.s3_settings()
    assert settings.endpoint == s3_server.endpoint and settings.access_key == s3_server.access_key
    assert s3_server.secret_key not in repr(settings)
    loc = storage.resolve(f"{s3_bucket}/from-block.json")
    storage.write_json(loc, {"ok": True})
    assert storage.read_json(loc) == {"ok": True}
    # The explicit "type/name" form works too.
    s3_env(REVIEWS_S3_BLOCK=f"minio-credentials/{name}")
    assert storage.s3_settings().access_key == s3_server.access_key


def test_missing_block_is_a_clear_error(s3_env, prefect_api):
    s3_env(REVIEWS_S3_BLOCK="no-such-block")
    with pytest.raises(storage.StorageError, match="no Prefect block 'no-such-block'"):
        storage.resolve("s3://bucket/key")


def test_block_of_the_wrong_kind_is_refused(s3_env, prefect_api):
    from prefect.blocks.system import Secret

    name = f"not-s3-{uuid.uuid4().hex[:6]}"
    Secret(value="x").save(name)
    s3_env(REVIEWS_S3_BLOCK=f"secret/{name}")
    with pytest.raises(storage.StorageError, match="expected MinIOCredentials or AwsCredentials"):
        storage.resolve("s3://bucket/key")
