"""Reading Prefect events back from a real API (POST /api/events/filter)."""

from __future__ import annotations

import time
from typing import Any


def read_events(name: str, resource_id: str | None = None, timeout: float = 45.0, api: str | None = None
                ) -> list[dict[str, Any]]:
    """Events called ``name`` (about ``resource_id``, when given), waiting up to ``timeout`` seconds
    for the first: the server's event persister writes them in batches, every few seconds.

    ``api``: that server's API URL; default the current Prefect settings' (the test harness).
    """
    import httpx

    body: dict[str, Any] = {"filter": {"event": {"name": [name]}}, "limit": 50}
    if resource_id is not None:
        body["filter"]["resource"] = {"id": [resource_id]}
    if api is None:
        from prefect.settings import PREFECT_API_URL

        api = PREFECT_API_URL.value()
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.post(f"{api}/events/filter", json=body, timeout=30)
        r.raise_for_status()
        found = r.json()["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1.0)
