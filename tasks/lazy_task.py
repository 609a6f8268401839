"""Tasks declared without importing Prefect: ``@task(...)`` here makes a :class:`LazyTask`.

``import prefect`` alone takes about a second here (its context, client and result modules),
and ``reviews score`` with no Prefect API (``flows/untracked.py``) runs the task bodies with
no Prefect at all.  So a task module declares its task with this decorator: the declaration
(name, retry policy, Prefect's other options) is read without Prefect, and the Prefect task is
built on first use, from the same declaration, by whatever calls it inside a flow.

* ``task.fn`` is the body (the unit tests call it, the untracked run too);
* ``task(...)``, ``task.submit``, ``task.map``, ``task.with_options``: the Prefect task's, as
  with ``prefect.task``; ``task.prefect`` is that task, for a task runner's ``map``;
* ``retry_on(exception) -> bool`` is the retry condition in plain terms: the untracked run asks
  it directly, the Prefect task gets it as its ``retry_condition_fn``;
* no task caches its result (Prefect's default cache key hashes the inputs: datasets,
  registries and output datasets here, none of which a cached result may stand in for).
"""

from __future__ import annotations

import functools
import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any


class LazyTask:
    def __init__(self, fn: Callable[..., Any], name: str, retries: int = 0,
                 retry_delay_seconds: float | Sequence[float] = 0, retry_jitter_factor: float | None = None,
                 retry_on: Callable[[BaseException], bool] | None = None, **options: Any):
        self.fn = fn
        self.name = name
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.retry_jitter_factor = retry_jitter_factor
        self.retry_on = retry_on
        self.options = options
        self._prefect = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    @property
    def prefect(self):
        """The Prefect task of this declaration, built once."""
        with self._lock:
            if self._prefect is None:
                from prefect import task
                from prefect.cache_policies import NO_CACHE

                condition = None if self.retry_on is None else _state_condition(self.retry_on)
                self._prefect = task(self.fn, name=self.name, retries=self.retries,
                                     retry_delay_seconds=self.retry_delay_seconds,
                                     retry_jitter_factor=self.retry_jitter_factor, retry_condition_fn=condition,
                                     **{"cache_policy": NO_CACHE, **self.options})
            return self._prefect

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.prefect(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        # Only for what this class does not define (submit, map, with_options, ...).  Never for
        # private or special names: copy and pickle probe those on a half-built object.
        if item.startswith("_"):
            raise AttributeError(item)
        return getattr(self.prefect, item)

    def should_retry(self, exc: BaseException) -> bool:
        return self.retry_on is None or bool(self.retry_on(exc))

    def retry_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based), drawn as Prefect's task engine draws them."""
        delays = self.retry_delay_seconds
        if not delays:
            return 0.0
        delay = float(delays[min(retry, len(delays) - 1)] if isinstance(delays, Sequence) else delays)
        if self.retry_jitter_factor and delay > 0:
            delay = clamped_poisson_interval(delay, self.retry_jitter_factor)
        return delay


def task(**declaration: Any) -> Callable[[Callable[..., Any]], LazyTask]:
    """``@task(name=..., retries=..., retry_on=..., **prefect_options)``."""
    return lambda fn: LazyTask(fn, **declaration)


def _state_condition(retry_on: Callable[[BaseException], bool]) -> Callable[..., bool]:
    def retry_condition_fn(task, task_run, state) -> bool:
        try:
            state.result()
        except Exception as exc:  # noqa: BLE001 - the failed state's own exception is what is judged
            return bool(retry_on(exc))
        return False

    return retry_condition_fn


def clamped_poisson_interval(average: float, clamping_factor: float) -> float:
    """An exponential draw with mean ``average`` kept within (lower, ``average`` * (1 + factor)]:
    what ``prefect.utilities.math.clamped_poisson_interval`` draws (importing it costs Prefect)."""
    upper_multiple = 1 + clamping_factor
    lower_multiple = 0.0 if upper_multiple >= 50 else math.log2(max(2 ** upper_multiple / (2 ** upper_multiple - 1),
                                                                    1e-10))

    def cdf(x: float) -> float:
        return 1 - math.exp(-x / average)

    u = random.uniform(cdf(max(0.0, average * lower_multiple)), cdf(average * upper_multiple))
    return -math.log(max(1 - u, 1e-10)) * average
