"""Run logger and artifacts that also work when a task body runs outside Prefect.

Outside a run none of this imports Prefect (the untracked ``reviews score`` never loads it,
``tasks/lazy_task.py``): a process that has not imported ``prefect.context`` is in no run.
"""

from __future__ import annotations

import base64
import logging
import sys
from typing import Any


def _flow_run_context():
    if "prefect.context" not in sys.modules:
        return None
    from prefect.context import FlowRunContext

    return FlowRunContext.get()


def in_run() -> bool:
    if "prefect.context" not in sys.modules:
        return False
    from prefect.context import TaskRunContext

    return _flow_run_context() is not None or TaskRunContext.get() is not None


def logger() -> logging.Logger | logging.LoggerAdapter:
    if not in_run():
        return logging.getLogger("reviews")
    from prefect import get_run_logger

    return get_run_logger()


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    if in_run():
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table=rows, key=key, description=description)


def markdown(key: str, text: str, description: str) -> None:
    if in_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=text, key=key, description=description)


def inline_png(alt: str, png: bytes) -> str:
    """Markdown that shows ``png`` in the artifact itself: Prefect's UI renders a data-URI image,
    and a user looking at a run has no access to the registry path the PNG is also stored at."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def short_uri(uri: str, keep: int = 2) -> str:
    """The last path segments of a URI: enough to recognise a dump in a run name."""
    parts = [p for p in uri.replace("\\", "/").split("/") if p and p != "s3:"]
    return "/".join(parts[-keep:]) or uri


def tag_run(*tags: str) -> None:
    """Add ``tags`` to the current flow run only: a ``prefect.tags`` block around the call would tag
    every task run too, and Prefect asks the API for tag concurrency slots for each tagged task run
    (flows/score.py).  Deployment runs already carry them; CLI and subflow runs get them here."""
    ctx = _flow_run_context()
    if ctx is None or ctx.flow_run is None or set(tags) <= set(ctx.flow_run.tags):
        return
    from prefect.client.orchestration import get_client

    merged = list(dict.fromkeys([*ctx.flow_run.tags, *tags]))
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, tags=merged)
    except Exception as exc:  # noqa: BLE001 - like a rename, tags must never fail a run
        logger().debug("could not tag flow run: %s", exc)


def rename_run(name: str, only_if_named: str | None = None) -> None:
    """Give the current flow run a name that says what ran (e.g. once the model version is known).

    ``only_if_named`` keeps a name someone chose (``--flow-run-name``) over ours.
    """
    ctx = _flow_run_context()
    if ctx is None or ctx.flow_run is None:
        return
    if only_if_named is not None and ctx.flow_run.name != only_if_named:
        return
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(ctx.flow_run.id, name=name)
    except Exception as exc:  # noqa: BLE001 - a cosmetic rename must never fail a run
        logger().debug("could not rename flow run: %s", exc)
