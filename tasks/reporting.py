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
