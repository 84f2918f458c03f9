"""Helpers to read what an ``airflow dags test`` run left behind: task states, XComs, task logs."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests import airflow_db

_RUN_ID = re.compile(r"DagRun Finished: dag_id=(?P<dag>[\w.-]+), .*?run_id=(?P<run>[^,]+),")
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>[\w.-]+)")


def run_id_of(output: str, dag_id: str) -> str:
    """The run id of ``dag_id`` from the run's output."""
    for match in _RUN_ID.finditer(output):
        if match["dag"] == dag_id:
            return match["run"]
    raise AssertionError(f"no finished run of {dag_id} in the output:\n{output[-3000:]}")


def task_states(home: Path, dag_id: str, run_id: str) -> dict[str, str]:
    """Final state of every task instance of one run (from the metadata DB)."""
    return {task: row["state"] for task, row in airflow_db.task_instances(home, dag_id, run_id).items()}


def xcoms(home: Path, dag_id: str, run_id: str, key: str = "return_value") -> dict[str, Any]:
    """XCom values of one run under ``key``, by task id."""
    return {
        row["task_id"]: None if row["value"] is None else json.loads(row["value"])
        for row in airflow_db.xcoms(home, dag_id, run_id)
        if row["key"] == key
    }


def task_logs(output: str) -> dict[str, str]:
    """The output lines of each task (every try and resumption of a task joined together)."""
    logs: dict[str, list[str]] = defaultdict(list)
    current = None
    for line in output.splitlines():
        match = _TASK_START.search(line)
        if match:
            current = match["task"]
        if current:
            logs[current].append(line)
    return {task: "\n".join(lines) for task, lines in logs.items()}
