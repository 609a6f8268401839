"""Scale-out: score-reviews units on a real Dask cluster (2 worker processes)."""

from __future__ import annotations

import numpy as np
import pytest

from flows.score import score_reviews
from tests.tinymodel import make_dump, read_output


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        yield cluster


def test_dask_scoring_matches_local(tmp_path, registry, dask_cluster, prefect_api):
    src = str(tmp_path / "in")
    make_dump(src, n=900, files_rows=300, rg=100)
    local = score_reviews(input=src, output=str(tmp_path / "local"), registry=registry["uri"],
                          max_rows_per_unit=150)
    dask = score_reviews(input=src, output=str(tmp_path / "dask"), registry=registry["uri"],
                         max_rows_per_unit=150, dask_address=dask_cluster.scheduler_address)
    assert local["rows_scored"] == dask["rows_scored"] == 900
    a = read_output(str(tmp_path / "local")).sort_by("review_id")
    b = read_output(str(tmp_path / "dask")).sort_by("review_id")
    assert a.column("review_id").equals(b.column("review_id"))
    np.testing.assert_array_equal(a.column("score").to_numpy(), b.column("score").to_numpy())
    # The units really ran in the worker processes, not in this one.
    from distributed import Client

    with Client(dask_cluster.scheduler_address) as client:
        loaded = client.run(lambda: __import__("models.predictor_cache").predictor_cache.cached_predictor.cache_info().currsize)
    assert sum(loaded.values()) >= 1
