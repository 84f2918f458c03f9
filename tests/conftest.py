"""Shared fixtures: the emulator (opt-in plugin) and a migrated Airflow home for real DAG runs."""

from __future__ import annotations

import pytest

from tests.dagrun import AirflowEnv

pytest_plugins = ["airflow_provider_m3ter.emulator.pytest_plugin"]


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
