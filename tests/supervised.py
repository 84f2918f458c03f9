"""``airflow dags test``, but each task try runs the way a worker runs it: a supervised subprocess.

``airflow dags test`` runs tasks inside its own process. That differs from a deployed worker in two
ways the tests care about:

* Logs: the CLI prints task logs through its own logging, which does not apply Airflow's secrets
  masker. A worker's supervisor receives the task's ``mask_secret`` registrations and writes the
  task log through the masker.
* Crashes: a task that is killed takes the whole run with it, and a second ``airflow dags test``
  creates a new DAG run (with an empty ``task_state_store``).

This script keeps ``dag.test()``'s scheduling loop but hands every task try to the real supervisor
(``supervise_task``) with the in-process Execution API. A task process killed by a signal never
reports a state; like the scheduler does for a worker's task that died (executor event "failed"
for a task still ``running``), the harness then calls ``handle_failure``, which marks it
``up_for_retry``, and ``dag.test()`` runs the retry in the same DAG run, with the same
``task_state_store``. Each try prints ``[SUPERVISED] task_id=... try_number=... exit_code=...``.

Usage: ``python tests/supervised.py [--log-dir DIR] DAG_ID [LOGICAL_DATE] [airflow dags test
options]`` with ``AIRFLOW_HOME`` and ``AIRFLOW__CORE__DAGS_FOLDER`` set (build the command with
:func:`supervised_command`). With ``--log-dir`` each try writes ``<task_id>.try<n>.log`` there;
without it task logs go to stdout. The exit code is ``airflow dags test``'s: 0 when the run
succeeded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

SCRIPT = Path(__file__).resolve()


def supervised_command(dag_id: str, *args: str, log_dir: Path | None = None) -> list[str]:
    """The command line that runs ``dag_id`` through this script.

    :param dag_id: the DAG to run.
    :param args: more ``airflow dags test`` arguments (a logical date, options).
    :param log_dir: where to write one log file per task try; None sends task logs to stdout.
    """
    options = ["--log-dir", str(log_dir)] if log_dir is not None else []
    return [sys.executable, str(SCRIPT), *options, dag_id, *args]


def _supervise_instead(log_dir: Path | None) -> None:
    """Make ``dag.test()`` hand each task try to the real supervisor."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.api.datamodels._generated import BundleInfo
    from airflow.sdk.execution_time import supervisor
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    def run_supervised(ti: Any, task: Any, client: Any = None) -> Any:
        dags_folder = Path(task.dag.fileloc).parent
        # Airflow 3.3 renamed supervise() to supervise_task() (same arguments)
        supervise = getattr(supervisor, "supervise_task", None) or supervisor.supervise
        exit_code = supervise(
            ti=ti,
            bundle_info=BundleInfo(name="dags-folder"),
            dag_rel_path=Path(task.dag.fileloc).relative_to(dags_folder),
            token="",  # the in-process Execution API needs no token
            client=supervisor.InProcessTestSupervisor._api_client(task.dag),
            log_path=str(log_dir / f"{ti.task_id}.try{ti.try_number}.log") if log_dir else None,
            subprocess_logs_to_stdout=log_dir is None,
        )
        print(
            f"[SUPERVISED] task_id={ti.task_id} try_number={ti.try_number} exit_code={exit_code}", flush=True
        )
        with create_session() as session:
            try:
                current = session.get(TaskInstance, ti.id)
            except Exception:  # Airflow 3.1 under SQLAlchemy 2.1 binds the id only as text
                session.rollback()
                current = session.get(TaskInstance, str(ti.id))
            if current.state == TaskInstanceState.RUNNING:
                # the task process died without reporting: the scheduler's handling of a failed executor event
                current.task = task
                current.handle_failure(error=f"task process exited with {exit_code}", session=session)
                print(f"[SUPERVISED] task_id={ti.task_id} marked {current.state} after the crash", flush=True)
            state = current.state
        # what dag.test() reads back from a try: the final state and the task
        return SimpleNamespace(ti=SimpleNamespace(state=state, task=task), msg=None, state=state, error=None)

    supervisor.run_task_in_process = run_supervised  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    """Run ``airflow dags test`` with supervised task tries; return its exit code."""
    log_dir = None
    if argv[:1] == ["--log-dir"]:
        log_dir, argv = Path(argv[1]).resolve(), argv[2:]
    _supervise_instead(log_dir)
    # run as a script: its own folder is on sys.path, the repository perhaps not
    from dags_test_runner import build_execution_api_once, run_airflow_dags_test

    build_execution_api_once()
    return run_airflow_dags_test(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
