"""The score-reviews flow's body run untracked: no Prefect at all, no server, no run records.

With no API configured, Prefect 3 starts a temporary API server (a uvicorn child process and
its SQLite database) on the first flow *or task* call, even for an empty task: 20-45 s on
2 cores before the first row; importing Prefect alone takes about 1 s.  ``reviews score`` with
no API needs nothing that server records, so it runs :func:`flows.score_run.score_run`, the
flow's own body, with :class:`UntrackedSteps`, and never imports Prefect:

* every step is its task's body (``task.fn``), retried as the task declares it
  (:class:`tasks.lazy_task.LazyTask`: count, delays, jitter and retry condition), so a
  throttled S3 request is retried here exactly when the tracked run would retry it;
* the units run on a local thread pool of the flow's size, or on the Dask cluster named by
  ``dask_address`` through ``distributed`` itself (Prefect's Dask runner needs an API);
* artifacts are skipped and the run logger is the ``reviews`` logger (``tasks/reporting.py``
  does both outside a run); the claim's run id is a random one, as for any caller outside a run.

Parameters are validated against the flow's own signature by pydantic, as Prefect's flow
validation does (tests/test_untracked.py holds the two to the same answers), so both paths
accept and coerce the same values and write the same parameters into the manifest.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flows.score_run import UNIT_THREADS, score_reviews, score_run
from tasks.lazy_task import LazyTask

_LOG = logging.getLogger("reviews")


class ParameterError(ValueError):
    """Parameters the flow would refuse (Prefect's ParameterTypeError in a tracked run)."""


def call(task: LazyTask, *args: Any, **kwargs: Any) -> Any:
    """``task``'s body, retried on failure as the task declares."""
    retry = 0
    while True:
        try:
            return task.fn(*args, **kwargs)
        except Exception as exc:
            if retry >= task.retries or not task.should_retry(exc):
                raise
            delay = task.retry_delay(retry)
            retry += 1
            _LOG.warning("%s failed with %r - retry %s/%s in %.1f s", task.name, exc, retry, task.retries, delay)
            time.sleep(delay)


class UntrackedSteps:
    """:class:`flows.score_run.Steps` that need no Prefect: task bodies, local threads or Dask."""

    def run(self, task: LazyTask, *args: Any, **kwargs: Any) -> Any:
        return call(task, *args, **kwargs)

    def map(self, task: LazyTask, mapped: dict[str, list[Any]], shared: dict[str, Any],
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


def _on_dask(address: str, task: LazyTask, calls: list[dict[str, Any]]) -> list[Any]:
    from distributed import Client

    # The task travels by name: the worker imports it, as it would for Prefect's Dask runner.
    where = task.fn.__module__, task.fn.__name__
    with Client(address, set_as_default=False) as client:
        # pure=False: two units are never one result, even with equal arguments.
        futures = [client.submit(_call_by_name, *where, kwargs, pure=False) for kwargs in calls]
        return client.gather(futures)


@functools.cache
def _parameters_model(fn: Callable[..., Any]):
    import pydantic

    fields = {name: (Any if p.annotation is p.empty else p.annotation, ... if p.default is p.empty else p.default)
              for name, p in inspect.signature(fn).parameters.items()}
    config = pydantic.ConfigDict(arbitrary_types_allowed=True, extra="forbid")
    return pydantic.create_model(f"{fn.__name__}_parameters", __config__=config, **fields)


def validated_parameters(fn: Callable[..., Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """All of ``fn``'s parameters, defaults applied, each coerced to its annotation as Prefect's
    ``Flow.validate_parameters`` does; :class:`ParameterError` naming each refused one."""
    import pydantic

    try:
        return dict(_parameters_model(fn)(**parameters))
    except pydantic.ValidationError as exc:
        problems = "\n".join(f" - {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ParameterError(f"invalid parameters:\n{problems}") from None


def score_untracked(**parameters: Any) -> dict[str, Any]:
    """``score_reviews(**parameters)`` without Prefect: the same run, summary and outputs."""
    return score_run(validated_parameters(score_reviews, parameters), UntrackedSteps())
