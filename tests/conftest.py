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
