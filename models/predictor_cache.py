"""One parity-checked predictor per process and model version, for scoring workers.

Kept apart from :mod:`models.registry` (which stores and reads versions): this is
process state of whoever serves them, shared by the units a worker scores.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

from infra.run_storage import RunStorage
from models.predictors import Predictor
from models.registry import ModelRegistry

MAX_LOADED = 4

_predictor_lock = threading.Lock()
_loaded: OrderedDict[tuple[str, str, str], Predictor] = OrderedDict()


class CacheInfo(NamedTuple):
    maxsize: int
    currsize: int


def cached_predictor(registry_uri: str, version: str, kind: str = "auto",
                     run_storage: RunStorage | None = None) -> Predictor:
    """One predictor per process and model version (scoring workers reuse it across units).

    ``run_storage``: the run's storage, so that an S3 registry opens with the settings the run
    resolved once rather than looking them up again.  It is not part of the cache key: on a
    Dask worker every unit brings its own unpickled copy of the run's storage, and they all
    share one predictor.  The lock keeps concurrent units of one process from each loading
    their own copy.
    """
    key = (registry_uri, version, kind)
    with _predictor_lock:
        predictor = _loaded.get(key)
        if predictor is None:
            registry = ModelRegistry((run_storage or RunStorage()).resolve(registry_uri))
            predictor = _loaded[key] = registry.load_predictor(version, kind)
            while len(_loaded) > MAX_LOADED:
                _loaded.popitem(last=False)
        else:
            _loaded.move_to_end(key)
        return predictor


def cache_info() -> CacheInfo:
    with _predictor_lock:
        return CacheInfo(MAX_LOADED, len(_loaded))


cached_predictor.cache_info = cache_info  # type: ignore[attr-defined]
