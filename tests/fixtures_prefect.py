"""A real Prefect API for the test session (Prefect's own test harness: a temporary
database and a real server process)."""

import pytest


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
