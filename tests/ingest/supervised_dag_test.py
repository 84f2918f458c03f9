"""Run one DAG with ``dag.test()``, but each task try in its own supervised process.

``airflow dags test`` runs tasks inside its own process, so a task that is killed takes the whole
run with it, and a second ``airflow dags test`` creates a new DAG run (with an empty
``task_state_store``). Here every task try runs as a worker runs it: Airflow's supervisor forks a
task process and reports its fate to the (in-process) Execution API. A task process killed by a
signal never reports a state; like the scheduler does for a worker's task that died (executor
event "failed" for a task still ``running``), the harness then calls ``handle_failure``, which
marks it ``up_for_retry``, and ``dag.test()`` runs the retry in the same DAG run, with the same
``task_state_store``.

Usage: ``python -m tests.ingest.supervised_dag_test DAG_ID LOGICAL_DATE`` with the usual
``AIRFLOW_HOME`` / ``AIRFLOW__CORE__DAGS_FOLDER`` environment. Exit code 0 when the run succeeded.
"""

from __future__ import annotations

import sys
from pathlib import Path
from uuid import UUID


def _run_task_supervised(*, ti, task, run_triggerer: bool = False):
    """Replacement of ``dag.test``'s in-process runner: supervise the try in a child process."""
    from airflow.executors.workloads import BundleInfo
    from airflow.sdk.api.datamodels._generated import TaskInstance as TaskInstanceSDK
    from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor, supervise_task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    ti.set_state(TaskInstanceState.QUEUED)
    what = TaskInstanceSDK(
        id=UUID(str(ti.id)),
        task_id=ti.task_id,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        try_number=ti.try_number,
        map_index=ti.map_index,
        dag_version_id=UUID(str(ti.dag_version_id)),
    )
    dags_folder = Path(task.dag.fileloc).parent
    exit_code = supervise_task(
        ti=what,
        bundle_info=BundleInfo(name="dags-folder"),
        dag_rel_path=Path(task.dag.fileloc).relative_to(dags_folder),
        token="",
        client=InProcessTestSupervisor._api_client(task.dag),
        subprocess_logs_to_stdout=True,
    )
    print(f"[SUPERVISED] task_id={ti.task_id} try_number={ti.try_number} exit_code={exit_code}", flush=True)
    with create_session() as session:
        current = session.get(type(ti), ti.id)
        if current is not None and current.state == TaskInstanceState.RUNNING:
            # the task process died without reporting: the scheduler's handling of a failed executor event
            current.task = task
            current.handle_failure(error=f"task process exited with {exit_code}", session=session)
            print(f"[SUPERVISED] task_id={ti.task_id} marked {current.state} after the crash", flush=True)
    return None


def main(dag_id: str, logical_date: str) -> int:
    """Run the DAG once; return 0 on success."""
    from airflow.sdk import timezone
    from airflow.sdk.definitions import dag as dag_module
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.state import DagRunState

    dag_module._run_task = _run_task_supervised  # type: ignore[assignment]
    dag = get_bagged_dag(None, dag_id)
    run = dag.test(logical_date=timezone.parse(logical_date))
    print(f"[SUPERVISED] dag run state={run.state}", flush=True)
    return 0 if run.state == DagRunState.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
