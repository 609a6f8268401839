"""Development tooling (the SeaweedFS S3 launcher used by tests/, bench/ and ``infra/local-s3``).

Kept outside flows/, tasks/, models/ and infra/ on purpose: so it is not installed
(pyproject's ``packages.find``), not copied into the worker image (``infra/Dockerfile``)
and not part of a model's code version (``infra/code_version.py``).
"""
