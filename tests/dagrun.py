"""Run real DAGs with ``airflow dags test`` in a subprocess, against a throwaway Airflow home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.dags_test_runner import dags_test_command

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO / "example_dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@dataclass
class DagRunResult:
    """What one ``airflow dags test`` run left behind."""

    returncode: int
    output: str

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and "state=success" in self.output


class AirflowEnv:
    """A migrated Airflow home that DAG runs share; each run gets its own dags folder and env."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.base_env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        }

    def migrate(self) -> None:
        """Create the metadata database once (SQLite, a few seconds)."""
        subprocess.run(
            [AIRFLOW, "db", "migrate"], env=self.base_env, check=True, capture_output=True, timeout=300
        )

    def dags_test(
        self,
        dag_id: str,
        *,
        dags_folder: Path = EXAMPLE_DAGS,
        env: dict[str, str] | None = None,
        conf: dict | None = None,
        logical_date: str | None = None,
        timeout: float = 600,
    ) -> DagRunResult:
        """Run ``airflow dags test DAG_ID [LOGICAL_DATE]`` and return its exit code and full output.

        Airflow's own command, through :mod:`tests.dags_test_runner` (on Airflow < 3.3 its in-process
        Execution API is built once per run, as 3.3 does).
        """
        cmd = dags_test_command(dag_id)
        if logical_date:
            cmd.append(logical_date)
        if conf is not None:
            cmd += ["--conf", json.dumps(conf)]
        full_env = {**self.base_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder), **(env or {})}
        proc = subprocess.run(
            cmd, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO)
        )
        return DagRunResult(proc.returncode, proc.stdout + proc.stderr)
