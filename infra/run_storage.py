"""A run's storage: S3 settings resolved once, passed to every task, renewed before they expire."""

from __future__ import annotations

import os
import threading
from typing import Any

from infra import storage
from infra.storage import Location, S3Settings

# Temporary credentials are resolved again this long before they expire: longer than any one
# step holds a filesystem (a unit, a manifest write), shorter than botocore's own advisory
# refresh window (15 min), so that a new boto3 session hands out new keys rather than the same.
REFRESH_MARGIN_SECONDS = 5 * 60


class RunStorage:
    """One run's S3 settings, resolved once and handed to every task of the run.

    Resolving them runs boto3's credential chain (files, instance metadata, STS) or loads a
    Prefect block through the API: done per URI that was several times per work unit, and two
    resolutions may even see different keys.  A run resolves once; its tasks resolve URIs with
    these settings, on Dask workers too (it pickles with the settings, without its cached
    locations: each process builds its own filesystems).  Temporary credentials are resolved
    again ``refresh_margin`` seconds before they expire, so a long run outlives them.
    """

    def __init__(self, settings: S3Settings | None = None, refresh_margin: float = REFRESH_MARGIN_SECONDS):
        self.refresh_margin = refresh_margin
        self._settings = settings
        self._lock = threading.Lock()
        self._locations: dict[tuple[str, S3Settings | None], Location] = {}

    @classmethod
    def for_uris(cls, *uris: str | None, refresh_margin: float = REFRESH_MARGIN_SECONDS) -> RunStorage:
        """Settings resolved now if any of ``uris`` is on S3; a run on local disk needs none."""
        run = cls(refresh_margin=refresh_margin)
        if any(u and storage.is_s3(u) for u in uris):
            run.s3_settings()
        return run

    def s3_settings(self) -> S3Settings:
        with self._lock:
            if self._settings is None or self._settings.expires_within(self.refresh_margin):
                self._settings = storage.s3_settings()
                self._locations.clear()  # their filesystems hold the old keys
            return self._settings

    def resolve(self, uri: str | os.PathLike[str] | Location) -> Location:
        """:func:`infra.storage.resolve` with this run's settings, once per URI and set of settings."""
        if isinstance(uri, Location):
            return uri
        text = os.fspath(uri)
        settings = self.s3_settings() if storage.is_s3(text) else None
        with self._lock:
            loc = self._locations.get((text, settings))
        if loc is None:
            loc = storage.resolve(text, settings)
            with self._lock:
                self._locations[(text, settings)] = loc
        return loc

    def __getstate__(self) -> dict[str, Any]:
        return {"refresh_margin": self.refresh_margin, "settings": self._settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"], state["refresh_margin"])

    def __repr__(self) -> str:
        return f"RunStorage({self._settings!r})"
