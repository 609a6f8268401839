"""Environment defaults that make embedded (ephemeral) Prefect dependable on small machines.

Imported before Prefect by the packages that use it; ``setdefault`` keeps any value
the user has set.
"""

import os

# Ephemeral Prefect can miss its 20 s start-up timeout on 2 cores.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# TensorFlow's C++ info lines drown the CLI's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Prefect creates its home with a single mkdir: with a PREFECT_HOME whose parent is missing, the
# temporary server has no database and a run waits out the start-up timeout above before failing
# ("Timed out while attempting to connect to ephemeral Prefect API server", 3 minutes here).
if os.environ.get("PREFECT_HOME"):
    try:
        os.makedirs(os.path.expanduser(os.environ["PREFECT_HOME"]), exist_ok=True)
    except OSError:
        pass  # Prefect's own warning then names the path
