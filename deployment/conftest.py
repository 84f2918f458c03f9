"""One real Airflow deployment for the deployment and browser tests of a pytest session.

``M3TER_DEPLOY_WORK`` sets the scratch directory (default: a fresh temporary one);
``M3TER_DEPLOY_REUSE_VENV=1`` keeps an existing venv there (local iteration; CI installs afresh).
The browser test's screenshots and a copy of the components' and tasks' logs go to
``artifacts/e2e`` in the repository (gitignored; ``M3TER_E2E_ARTIFACTS`` moves it), emptied at the
start of each run; a scratch directory made here is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployment.harness import ARTIFACTS, REPO, Deployment, say

EXAMPLES = [
    "example_m3ter_meters",
    "example_m3ter_ingest",
    "example_m3ter_ingest_events",
    "example_m3ter_backfill",
]
TEST_DAGS = ["m3ter_pool_pacing"]


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    given = os.environ.get("M3TER_DEPLOY_WORK")
    work = Path(given or tempfile.mkdtemp(prefix="m3ter-deploy-"))
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    deploy = Deployment(work, reuse_venv=os.environ.get("M3TER_DEPLOY_REUSE_VENV") == "1")
    dag_files = [*sorted((REPO / "example_dags").glob("example_*.py")), REPO / "example_dags" / "meters"]
    dag_files += sorted((REPO / "deployment" / "dags").glob("*.py"))
    try:
        deploy.start(dag_files)
        deploy.wait_dags_parsed(EXAMPLES + TEST_DAGS)
        connection = deploy.emulator.connection()
        deploy.api(
            "POST",
            "connections",
            {
                "connection_id": "m3ter_default",
                "conn_type": "m3ter",
                "host": connection["host"],
                "login": connection["login"],
                "password": connection["password"],
                "extra": json.dumps(connection["extra"]),
            },
        )
        yield deploy
    finally:
        codes = deploy.stop()  # raises when a process or a child of one outlived its stop
        say(f"stopped by pid: {codes}")
        # the components' and the tasks' logs next to the screenshots, for a failed CI run
        if deploy.logs.exists():
            shutil.copytree(deploy.logs, ARTIFACTS / "process-logs", dirs_exist_ok=True)
        if (deploy.home / "logs").exists():
            shutil.copytree(deploy.home / "logs", ARTIFACTS / "task-logs", dirs_exist_ok=True)
        if not given:  # a scratch directory of our own (its venv alone is some 500 MB)
            shutil.rmtree(work, ignore_errors=True)
