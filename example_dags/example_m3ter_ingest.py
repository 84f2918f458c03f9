"""Load each day's usage into m3ter: from an exported file and from a SQL database.

Every day this DAG ingests the data interval's usage twice over, the two ways usage usually
arrives:

* ``export_api_usage`` stands in for an upstream export: it writes the interval's API calls to a
  gzip-compressed JSON Lines file, and ``ingest_api_usage`` sends that file to m3ter.
* ``prepare_usage_db`` stands in for an application database: it (re)fills a SQLite table with the
  interval's data transfer, and ``ingest_data_transfer`` selects the interval's rows with a SQL
  query and maps columns to measurement fields.

Both ingest tasks choose their data with the run's usage window (the ``usage_start``,
``usage_end`` and ``usage_day`` template macros below), so a rerun of a day sends the same rows
with the same uids and m3ter de-duplicates them.

The usage window is the run's data interval. A manual run without a logical date (Airflow 3's
default for ``airflow dags trigger`` and the UI's Trigger button) has no data interval: it loads
the last complete day before it was triggered (``[D-1 00:00, D 00:00)`` UTC with ``D 00:00`` at or
before the run's ``run_after``). To load another day, trigger with a logical date, e.g.
``airflow dags trigger --logical-date 2024-05-02T00:00:00+00:00 example_m3ter_ingest`` loads
2024-05-01.

Connections (environment variables shown; the Airflow UI works as well):

* ``m3ter_default``, type ``m3ter``::

    AIRFLOW_CONN_M3TER_DEFAULT='{"conn_type": "m3ter", "host": "https://api.m3ter.com",
      "login": "<Access Key ID>", "password": "<API Secret>", "extra": {"org_id": "<Organization ID>"}}'

* ``usage_db``, any database with a ``DbApiHook`` (SQLite here: install the provider with
  ``pip install "airflow-provider-m3ter[examples]"``, which adds ``apache-airflow-providers-sqlite``)::

    AIRFLOW_CONN_USAGE_DB='{"conn_type": "sqlite", "host": "/path/to/usage.db"}'

  When the variable is not set, this file points ``usage_db`` at a SQLite file in
  ``M3TER_EXAMPLE_DATA_DIR`` (default: ``<temp dir>/m3ter-example``), which
  ``prepare_usage_db`` creates, so the DAG runs anywhere.

Nothing here touches the network while the DAG is parsed.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_m3ter.compat import CronDataIntervalTimetable  # airflow.sdk has it from 3.2
from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.retry_policy import RETRY_POLICY_SUPPORTED, M3terRetryPolicy

DATA_DIR = os.environ.get("M3TER_EXAMPLE_DATA_DIR") or os.path.join(tempfile.gettempdir(), "m3ter-example")
os.environ.setdefault(
    "AIRFLOW_CONN_USAGE_DB", json.dumps({"conn_type": "sqlite", "host": os.path.join(DATA_DIR, "usage.db")})
)

CUSTOMERS = ("acme", "globex", "initech")
DAY_STARTS_AT_HOUR = 0  # UTC; the schedule below runs at this hour
REGIONS = ("eu-west-1", "us-east-1")
ENDPOINTS = ("/v1/search", "/v1/export")


def usage_window(dag_run: Any) -> tuple[datetime, datetime]:
    """The run's data interval; for a run without one, the last complete day before ``run_after``."""
    start, end = dag_run.data_interval_start, dag_run.data_interval_end
    if start is not None and end is not None:
        return start, end
    after = dag_run.run_after.astimezone(timezone.utc)
    end = after.replace(hour=DAY_STARTS_AT_HOUR, minute=0, second=0, microsecond=0)
    if end > after:
        end -= timedelta(days=1)
    return end - timedelta(days=1), end


def usage_start(dag_run: Any) -> str:
    """Template macro: the usage window's start as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _iso(usage_window(dag_run)[0])


def usage_end(dag_run: Any) -> str:
    """Template macro: the usage window's end as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _iso(usage_window(dag_run)[1])


def usage_day(dag_run: Any) -> str:
    """Template macro: the usage window's first day as ``YYYY-MM-DD`` (names the export file)."""
    return usage_window(dag_run)[0].strftime("%Y-%m-%d")


def _hours(start: datetime, end: datetime) -> list[datetime]:
    """The whole hours of the data interval."""
    return [start + timedelta(hours=h) for h in range(int((end - start).total_seconds()) // 3600)]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@task
def export_api_usage(dag_run: Any = None) -> str:
    """Write the window's API usage as gzip JSON Lines (stands in for an upstream export)."""
    data_interval_start, data_interval_end = usage_window(dag_run)
    path = Path(DATA_DIR) / f"api-usage-{usage_day(dag_run)}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as out:
        for hour in _hours(data_interval_start, data_interval_end):
            for index, customer in enumerate(CUSTOMERS):
                measurement = {
                    "meter": "api_calls",
                    "account": customer,
                    "ts": _iso(hour),
                    "ets": _iso(hour + timedelta(hours=1)),
                    "who": {"api_key": f"key-{customer}-1"},
                    "what": {"endpoint": ENDPOINTS[hour.hour % len(ENDPOINTS)]},
                    "where": {"region": REGIONS[index % len(REGIONS)]},
                    "measure": {
                        "requests": 100 + 7 * hour.hour + 13 * index,
                        "errors": (hour.hour + index) % 4,
                    },
                }
                out.write(json.dumps(measurement) + "\n")
    partial.replace(path)  # readers never see half a file
    return str(path)


@task
def prepare_usage_db(dag_run: Any = None) -> int:
    """Fill the ``data_transfer`` table with the window's rows (stands in for an application DB).

    The columns match the ``data_transfer`` meter of ``meters/api.yaml``: bytes (MEASURE),
    region (WHERE) and direction (WHAT).
    """
    from airflow.sdk import BaseHook

    data_interval_start, data_interval_end = usage_window(dag_run)
    connection = BaseHook.get_connection("usage_db")
    if connection.conn_type == "sqlite":
        try:
            import airflow.providers.sqlite  # noqa: F401
        except ImportError:
            raise RuntimeError(
                "usage_db is a SQLite connection but apache-airflow-providers-sqlite is not installed: "
                'pip install "airflow-provider-m3ter[examples]" (or point usage_db at your own database)'
            ) from None
    hook = connection.get_hook()
    Path(DATA_DIR).mkdir(parents=True, exist_ok=True)
    rows = [
        (customer, _iso(hour), 250_000_000 * (hour.hour + 1) * (index + 1), REGIONS[hour.hour % 2], "egress")
        for hour in _hours(data_interval_start, data_interval_end)
        for index, customer in enumerate(CUSTOMERS)
    ]
    conn = hook.get_conn()
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS data_transfer ("
            " customer TEXT NOT NULL, event_time TEXT NOT NULL, bytes INTEGER, region TEXT,"
            " direction TEXT, PRIMARY KEY (customer, event_time))"
        )
        conn.executemany("INSERT OR REPLACE INTO data_transfer VALUES (?, ?, ?, ?, ?)", rows)
        conn.commit()
    finally:
        conn.close()
    return len(rows)


default_args: dict[str, Any] = {
    "retries": 3,
    "retry_delay": timedelta(minutes=2),
}
if RETRY_POLICY_SUPPORTED:
    # Airflow 3.3+: 4XX fail at once, 5XX/429 retry after m3ter's Retry-After or a back-off
    default_args["retry_policy"] = M3terRetryPolicy()

with DAG(
    dag_id="example_m3ter_ingest",
    description="Daily usage from a file export and a SQL database into m3ter",
    # a data-interval timetable: each run covers [data_interval_start, data_interval_end)
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    user_defined_macros={"usage_start": usage_start, "usage_end": usage_end, "usage_day": usage_day},
    tags=["m3ter", "example"],
):
    ingest_api_usage = M3terIngestMeasurementsOperator(
        task_id="ingest_api_usage",
        source_path=DATA_DIR + "/api-usage-{{ usage_day(dag_run) }}.jsonl.gz",
        # an external export may carry bad rows: send the good ones, keep the rest as dead letters
        on_invalid="skip",
        # this demo's customers get their m3ter accounts on first use (pre-flight would refuse them)
        unknown_accounts="allow",
    )
    ingest_data_transfer = M3terIngestMeasurementsOperator(
        task_id="ingest_data_transfer",
        sql=(
            "SELECT customer, event_time, bytes, region, direction FROM data_transfer"
            " WHERE event_time >= ? AND event_time < ? ORDER BY event_time, customer"
        ),
        sql_conn_id="usage_db",
        sql_parameters=["{{ usage_start(dag_run) }}", "{{ usage_end(dag_run) }}"],
        mapping={
            "customer": "account",
            "event_time": "ts",
            "bytes": "measure.bytes",
            "region": "where.region",
            "direction": "what.direction",
        },
        meter="data_transfer",
        unknown_accounts="allow",
    )
    export_api_usage() >> ingest_api_usage
    prepare_usage_db() >> ingest_data_transfer
