"""The score-reviews flow's body run untracked: no Prefect API, no server, no run records.

With no API configured, Prefect 3 starts a temporary API server (a uvicorn child process and
its SQLite database) on the first flow *or task* call, even for an empty task: 20-45 s on
2 cores before the first row.  ``reviews score`` with no API needs nothing that server
records, so it runs :func:`flows.score.score_run`, the flow's own body, with
:class:`UntrackedSteps`:

* every step is its Prefect task's body (``task.fn``), retried as the task declares it
  (``tasks/retries.py``: count, delays, jitter and retry condition are read off the task), so a
  throttled S3 request is retried here exactly when the tracked run would retry it;
* the units run on a local thread pool of the flow's size, or on the Dask cluster named by
  ``dask_address`` through ``distributed`` itself (Prefect's Dask runner needs an API);
* artifacts are skipped and the run logger is the ``reviews`` logger (``tasks/reporting.py``
  does both outside a run); the claim's run id is a random one, as for any caller outside a run.

Parameters are validated by the flow's own validator, so both paths accept and coerce the same
values and write the same parameters into the manifest.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import Task
from prefect.states import Failed
from prefect.utilities.math import clamped_poisson_interval

from flows.score import UNIT_THREADS, score_reviews, score_run

_LOG = logging.getLogger("reviews")


def retry_delay(task: Task, retry: int) -> float:
    """Seconds before retry number ``retry`` (0-based), the way Prefect's task engine picks them."""
    delays = task.retry_delay_seconds
    if not delays:
        return 0.0
    delay = delays[min(retry, len(delays) - 1)] if isinstance(delays, Sequence) else delays
    if task.retry_jitter_factor and delay > 0:
        delay = clamped_poisson_interval(delay, clamping_factor=task.retry_jitter_factor)
    return float(delay)


def should_retry(task: Task, exc: Exception) -> bool:
    if task.retry_condition_fn is None:
        return True
    # The condition gets the failed state it would get in a task run (there is no task run:
    # tasks/retries.py's condition reads only the state's exception).
    return bool(task.retry_condition_fn(task, None, Failed(data=exc)))


def call(task: Task, *args: Any, **kwargs: Any) -> Any:
    """``task``'s body, retried on failure as the task declares."""
    retry = 0
    while True:
        try:
            return task.fn(*args, **kwargs)
        except Exception as exc:
            if retry >= task.retries or not should_retry(task, exc):
                raise
            delay = retry_delay(task, retry)
            retry += 1
            _LOG.warning("%s failed with %r - retry %s/%s in %.1f s", task.name, exc, retry, task.retries, delay)
            time.sleep(delay)


class UntrackedSteps:
    """:class:`flows.score.Steps` that need no Prefect API: task bodies, local threads or Dask."""

    def run(self, task: Task, *args: Any, **kwargs: Any) -> Any:
        return call(task, *args, **kwargs)

    def map(self, task: Task, mapped: dict[str, list[Any]], shared: dict[str, Any],
            dask_address: str | None) -> list[Any]:
        calls = [{**dict(zip(mapped, values)), **shared} for values in zip(*mapped.values())]
        if dask_address:
            return _on_dask(dask_address, task, calls)
        with ThreadPoolExecutor(UNIT_THREADS, thread_name_prefix="score-unit") as pool:
            futures = [pool.submit(call, task, **kwargs) for kwargs in calls]
            try:
                return [f.result() for f in futures]
            except BaseException:
                # The run fails either way; units not started yet would only delay saying so.
                for f in futures:
                    f.cancel()
                raise


def _call_by_name(module: str, name: str, kwargs: dict[str, Any]) -> Any:
    return call(getattr(importlib.import_module(module), name), **kwargs)


def _on_dask(address: str, task: Task, calls: list[dict[str, Any]]) -> list[Any]:
    from distributed import Client

    # The task travels by name: the worker imports it, as it would for Prefect's Dask runner.
    where = task.fn.__module__, task.fn.__name__
    with Client(address, set_as_default=False) as client:
        # pure=False: two units are never one result, even with equal arguments.
        futures = [client.submit(_call_by_name, *where, kwargs, pure=False) for kwargs in calls]
        return client.gather(futures)


def score_untracked(**parameters: Any) -> dict[str, Any]:
    """``score_reviews(**parameters)`` without Prefect: the same run, summary and outputs."""
    return score_run(score_reviews.validate_parameters(parameters), UntrackedSteps())
