"""Thin Prefect tasks over plain functions in ``models/`` and ``infra/``.

Each task's body is callable on its own as ``task.fn`` (that is how the unit tests
call them); logging and artifacts degrade gracefully outside a Prefect run.
"""

import infra.prefect_defaults  # noqa: F401  (must precede the Prefect import)
