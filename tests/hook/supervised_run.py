"""``airflow dags test``, but each task runs the way a worker runs it: a supervised subprocess.

``airflow dags test`` runs tasks inside its own process and prints their logs through the CLI's
logging, which does not apply Airflow's secrets masker (not even to connection passwords). A
deployed worker instead runs each task in a child process under a supervisor that receives the
task's ``mask_secret`` registrations and writes the task log file through the masker. This script
keeps ``dag.test()``'s scheduling loop but hands every task to the real supervisor
(``supervise_task``) with the in-process Execution API, and writes one log file per task.

Usage: ``python supervised_run.py LOG_DIR DAG_ID`` with ``AIRFLOW_HOME`` and
``AIRFLOW__CORE__DAGS_FOLDER`` set; everything after ``LOG_DIR`` goes to ``airflow dags test``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _supervise_instead(log_dir: Path) -> None:
    """Make ``dag.test()`` hand each task to the real supervisor, one log file per task."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.api.datamodels._generated import BundleInfo
    from airflow.sdk.execution_time import supervisor
    from airflow.utils.session import create_session

    def run_supervised(ti: Any, task: Any, client: Any = None) -> Any:
        dags_folder = Path(task.dag.fileloc).parent
        supervisor.supervise_task(
            ti=ti,
            bundle_info=BundleInfo(name="dags-folder"),
            dag_rel_path=Path(task.dag.fileloc).relative_to(dags_folder),
            token="",  # the in-process Execution API needs no token
            client=supervisor.InProcessTestSupervisor._api_client(task.dag),
            log_path=str(log_dir / f"{ti.task_id}.try{ti.try_number}.log"),
        )
        with create_session() as session:
            state = session.get(TaskInstance, ti.id).state
        # what dag.test() reads back from a run: the final state and the task
        return SimpleNamespace(ti=SimpleNamespace(state=state, task=task), msg=None, state=state, error=None)

    supervisor.run_task_in_process = run_supervised  # type: ignore[assignment]


if __name__ == "__main__":
    _supervise_instead(Path(sys.argv[1]).resolve())
    from airflow.__main__ import main

    sys.argv = ["airflow", "dags", "test", *sys.argv[2:]]
    sys.exit(main())
