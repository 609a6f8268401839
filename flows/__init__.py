"""Prefect flows: they only wire the tasks together."""

import infra.prefect_defaults  # noqa: F401  (must precede the Prefect import)
