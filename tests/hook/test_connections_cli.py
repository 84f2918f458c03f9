"""``airflow connections test`` (the CLI twin of the UI's Test button) with an m3ter connection."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from airflow_provider_m3ter.compat import AIRFLOW_VERSION
from tests.dagrun import AIRFLOW, REPO, AirflowEnv


def _connections_test(airflow_env: AirflowEnv, conn: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = {
        **airflow_env.base_env,
        # Airflow disables connection testing by default
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW_CONN_M3TER_CLI": json.dumps(conn),
    }
    return subprocess.run(
        [AIRFLOW, "connections", "test", "m3ter_cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(REPO),
    )


def test_connections_test_cli(airflow_env: AirflowEnv, m3ter_emulator: Any) -> None:
    good = _connections_test(airflow_env, m3ter_emulator.connection())
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Connection success!" in good.stdout
    assert m3ter_emulator.stats()["requests"]["GET /organizations/{orgId}/meters"] == {"200": 1}

    wrong = m3ter_emulator.connection()
    wrong["password"] = "Cli-Wrong-Secret-4e5f6a"
    bad = _connections_test(airflow_env, wrong)
    if AIRFLOW_VERSION >= (3, 3):  # before 3.3 `airflow connections test` exits 0 on a failed test too
        assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "Connection failed!" in bad.stdout
    assert "/oauth/token" in bad.stdout
    assert "Cli-Wrong-Secret-4e5f6a" not in bad.stdout + bad.stderr
