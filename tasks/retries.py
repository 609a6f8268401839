"""Retry policy shared by the tasks that touch storage.

Only transient storage errors (throttling, dropped connections, 5xx) are retried: a missing or
malformed file fails at once, so a run does not spend minutes retrying what cannot succeed.
"""

from __future__ import annotations

from prefect.tasks import exponential_backoff

from infra import storage


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a throttled or dropped storage request only."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own exception is what we classify
        return storage.is_transient(exc)
    return False


TRANSIENT_RETRIES = dict(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=1),
                         retry_jitter_factor=0.5, retry_condition_fn=retry_if_transient)
