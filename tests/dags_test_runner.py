"""``airflow dags test`` as the tests run it: Airflow's own command, with the in-process Execution
API built once per run on every Airflow line.

``airflow dags test`` serves each task try (and each inline trigger run) through an in-process
Execution API. Airflow 3.3 builds that API once per process; Airflow 3.2 and older build a new one
for every task start, every resumption after a deferral and every inline trigger run, which costs
about 4 s each on the CI machine. That is the test runner's own overhead, not the provider's, but
it moves every time-based observation: a job that moves through its states in a few seconds has
finished before the sensor's first check (so nothing defers), and a wait's end as seen by the next
task is late by several task starts. :func:`build_execution_api_once` makes the older lines build it
once too, so every line's DAG runs time the same. Nothing else about the run changes: the task,
the triggers and the provider run exactly as under ``airflow dags test``.

Usage: ``python tests/dags_test_runner.py DAG_ID [LOGICAL_DATE] [airflow dags test options]`` with
``AIRFLOW_HOME`` and ``AIRFLOW__CORE__DAGS_FOLDER`` set (build it with :func:`dags_test_command`).
The exit code is ``airflow dags test``'s.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def dags_test_command(dag_id: str, *args: str) -> list[str]:
    """The command line that runs ``airflow dags test DAG_ID ARGS...`` through this script."""
    return [sys.executable, str(SCRIPT), dag_id, *args]


def build_execution_api_once() -> None:
    """On Airflow < 3.3, keep the first in-process Execution API for the rest of the process
    (Airflow 3.3 does the same itself; there this changes nothing)."""
    from airflow.sdk.execution_time import supervisor

    build = supervisor.in_process_api_server
    if not hasattr(build, "cache_info"):  # Airflow 3.3 caches it already
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(build)


def run_airflow_dags_test(argv: list[str]) -> int:
    """Run ``airflow dags test ARGV...`` in this process; return its exit code."""
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", "dags", "test", *argv]
    try:
        airflow_main()
    except SystemExit as exit:
        return exit.code if isinstance(exit.code, int) else 1
    return 0


if __name__ == "__main__":
    build_execution_api_once()
    sys.exit(run_airflow_dags_test(sys.argv[1:]))
