"""Run logger and artifacts that also work when a task body runs outside Prefect."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError


def logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("reviews")


def in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    if in_run():
        create_table_artifact(table=rows, key=key, description=description)


def markdown(key: str, text: str, description: str) -> None:
    if in_run():
        create_markdown_artifact(markdown=text, key=key, description=description)


def short_uri(uri: str, keep: int = 2) -> str:
    """The last path segments of a URI: enough to recognise a dump in a run name."""
    parts = [p for p in uri.replace("\\", "/").split("/") if p and p != "s3:"]
    return "/".join(parts[-keep:]) or uri


def rename_run(name: str, only_if_named: str | None = None) -> None:
    """Give the current flow run a name that says what ran (e.g. once the model version is known).

    ``only_if_named`` keeps a name someone chose (``--flow-run-name``) over ours.
    """
    ctx = FlowRunContext.get()
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
