"""Retry policy shared by the tasks that touch storage.

Only transient storage errors (throttling, dropped connections, 5xx) are retried: a missing or
malformed file fails at once, so a run does not spend minutes retrying what cannot succeed.
"""

from __future__ import annotations

from infra import storage

# Prefect's exponential_backoff(backoff_factor=1) for 4 retries, jittered by up to 1.5x.
TRANSIENT_RETRIES = {"retries": 4, "retry_delay_seconds": [1, 2, 4, 8], "retry_jitter_factor": 0.5,
                     "retry_on": storage.is_transient}
