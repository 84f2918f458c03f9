"""Read what a real ``airflow dags test`` run stored in the test Airflow home's SQLite metadata DB."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def _rows(home: Path, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    with sqlite3.connect(home / "airflow.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params)]


def _retry_columns(home: Path, table: str) -> str:
    """The retry-policy columns (Airflow 3.3+), or NULLs under their names on older metadata DBs."""
    with sqlite3.connect(home / "airflow.db") as db:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    return ", ".join(
        name if name in present else f"NULL AS {name}" for name in ("retry_delay_override", "retry_reason")
    )


def latest_run_id(home: Path, dag_id: str) -> str:
    """The run id of the DAG's most recent run."""
    rows = _rows(home, "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,))
    assert rows, f"no run of {dag_id} in {home}"
    return str(rows[0]["run_id"])


def task_instances(home: Path, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    """Final task instance rows of a run, by task id."""
    rows = _rows(
        home,
        f"SELECT task_id, state, try_number, max_tries, {_retry_columns(home, 'task_instance')} "  # noqa: S608
        "FROM task_instance WHERE dag_id = ? AND run_id = ?",
        (dag_id, run_id),
    )
    return {row["task_id"]: row for row in rows}


def task_history(home: Path, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Earlier tries of the run's task instances (one row per finished try that was retried)."""
    return _rows(
        home,
        f"SELECT task_id, state, try_number, {_retry_columns(home, 'task_instance_history')} "  # noqa: S608
        "FROM task_instance_history WHERE dag_id = ? AND run_id = ? ORDER BY task_id, try_number",
        (dag_id, run_id),
    )


def xcoms(home: Path, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every XCom of a run (values as stored: JSON text)."""
    return _rows(
        home,
        "SELECT task_id, key, CAST(value AS TEXT) AS value FROM xcom WHERE dag_id = ? AND run_id = ?",
        (dag_id, run_id),
    )


def rendered_fields(home: Path, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Rendered template fields of a run, as stored."""
    return _rows(
        home,
        "SELECT task_id, CAST(rendered_fields AS TEXT) AS rendered_fields "
        "FROM rendered_task_instance_fields WHERE dag_id = ? AND run_id = ?",
        (dag_id, run_id),
    )
