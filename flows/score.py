"""``score-reviews``: Parquet review dumps in, predictions out (local disk or S3).

The flow is :func:`flows.score_run.score_reviews` (its parameters and its body) under
Prefect's ``@flow``; that module says how tracked and untracked runs share the body.  The
wrapper is defined here, not the body decorated there, so that the flow's entrypoint (which
Prefect derives from the function's module) is this module's flow, as prefect.yaml names it.
"""

from __future__ import annotations

import functools

from prefect import flow

from flows import score_run


@flow(name="score-reviews", validate_parameters=True, log_prints=True, flow_run_name=score_run.run_name)
@functools.wraps(score_run.score_reviews, assigned=("__name__", "__qualname__", "__doc__", "__annotations__"))
def score_reviews(*args, **kwargs):
    return score_run.score_reviews(*args, **kwargs)
