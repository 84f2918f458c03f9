"""Shared fixtures: the emulator (opt-in plugin) and a migrated Airflow home for real DAG runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dagrun import AirflowEnv

pytest_plugins = ["airflow_provider_m3ter.emulator.pytest_plugin"]

TESTS = Path(__file__).resolve().parent
# Tests of the plain client and of the emulator alone do not touch Airflow: `make matrix` runs them
# once, on the newest line (`make test`), and deselects them on the other lines with
# `-m "not airflow_free"`. The gate test stays: the emulator runs on each line's FastAPI.
AIRFLOW_FREE_DIRS = ("client", "emulator")
AIRFLOW_FREE_EXCEPT = {"emulator/test_gate.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that do not touch Airflow (see AIRFLOW_FREE_DIRS)."""
    for item in items:
        try:
            relative = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue
        if relative.split("/", 1)[0] in AIRFLOW_FREE_DIRS and relative not in AIRFLOW_FREE_EXCEPT:
            item.add_marker(pytest.mark.airflow_free)


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> AirflowEnv:
    """A fresh AIRFLOW_HOME with a migrated SQLite metadata DB, shared by the session's DAG runs."""
    env = AirflowEnv(tmp_path_factory.mktemp("airflow_home"))
    env.migrate()
    return env


@pytest.fixture(autouse=True)
def fresh_process_tokens() -> None:
    """Each test starts like a fresh process: no m3ter token cached by an earlier test's clients."""
    from airflow_provider_m3ter.client.auth import PROCESS_TOKENS

    PROCESS_TOKENS.clear()
