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
