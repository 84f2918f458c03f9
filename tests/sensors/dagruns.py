"""Helpers to read what an ``airflow dags test`` run left behind: task states, XComs, task logs."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

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
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall()
    return dict(rows)


def xcoms(home: Path, dag_id: str, run_id: str, key: str = "return_value") -> dict[str, Any]:
    """XCom values of one run under ``key``, by task id."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = ?",
            (dag_id, run_id, key),
        ).fetchall()
    return {
        task_id: json.loads(value) if isinstance(value, (str, bytes)) else value for task_id, value in rows
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
