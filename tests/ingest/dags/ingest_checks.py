"""Test DAG: the ingest operator's sources, invalid input and error boundary in one run.

* ``ingest_from_xcom``: measurements returned by an upstream task (XCom); one holds Jinja text.
* ``ingest_inline_literal``: inline measurements holding Jinja text, which is data: never rendered.
* ``ingest_csv_skip``: a gzip CSV with bad rows, ``on_invalid="skip"`` and a templated dead-letter path.
* ``ingest_invalid_fail``: invalid inline rows with ``on_invalid="fail"``: fails at once, no retry.
* ``ingest_forbidden``: a connection to an organization m3ter refuses (403): fails at once, no retry.
* ``ingest_unreachable``: an ingest host that refuses connections: transient, so it is retried.

Paths and connections come from the environment the test sets.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator

OUT = os.environ.get("M3TER_TEST_OUT", "/tmp")


@task
def make_usage() -> list[dict]:
    """Five measurements, as an upstream task would compute them."""
    rows = [
        {"meter": "api_calls", "account": f"xcom-{i}", "ts": f"2024-05-01T0{i}:00:00Z", "measure": {"n": i}}
        for i in range(5)
    ]
    rows[0]["who"] = {"note": "{{ 7*7 }}"}
    return rows


with DAG(
    dag_id="ingest_checks",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    # these tasks test sources and error handling, not pre-flight (tests/preflight covers it)
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1), "preflight": False},
):
    M3terIngestMeasurementsOperator(task_id="ingest_from_xcom", measurements=make_usage())
    M3terIngestMeasurementsOperator(
        task_id="ingest_inline_literal",
        measurements=[
            {
                "meter": "api_calls",
                "account": "{{ ds }}",
                "ts": "2024-05-01T00:00:00Z",
                "who": {"n": "{{ 7*7 }}"},
            }
        ],
    )
    M3terIngestMeasurementsOperator(
        task_id="ingest_csv_skip",
        source_path=os.environ.get("M3TER_TEST_CSV", "/nonexistent.csv.gz"),
        mapping={"customer": "account", "time": "ts", "calls": "measure.calls", "user": "who.user"},
        meter="api_calls",
        on_invalid="skip",
        dead_letter_path=OUT + "/dead-{{ ds }}.jsonl",
    )
    M3terIngestMeasurementsOperator(
        task_id="ingest_invalid_fail",
        measurements=[
            {"meter": "api_calls", "account": "ok", "ts": "2024-05-01T00:00:00Z"},
            {"meter": "api_calls", "account": "bad ", "ts": "2024-05-01T00:00:00Z"},
            {"meter": "api_calls", "account": "ok", "ts": "May 1st"},
        ],
    )
    M3terIngestMeasurementsOperator(
        task_id="ingest_forbidden",
        m3ter_conn_id="m3ter_other_org",
        measurements=[{"meter": "api_calls", "account": "acme", "ts": "2024-05-01T00:00:00Z"}],
    )
    M3terIngestMeasurementsOperator(
        task_id="ingest_unreachable",
        m3ter_conn_id="m3ter_unreachable",
        measurements=[{"meter": "api_calls", "account": "acme", "ts": "2024-05-01T00:00:00Z"}],
        retries=1,
    )
