"""Test DAG: the meter sync's dry run and its three hard failures, as independent tasks of one run.

Run by tests/meters/test_operator_dags.py with ``airflow dags test`` against the emulator, after the
example meters were synced and an aggregation was put on ``api_calls.requests``. Definition paths
are relative to this file's folder.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG

from airflow_provider_m3ter.operators.meters import M3terSyncMetersOperator

with DAG(
    dag_id="m3ter_meter_sync_checks",
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["test"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
):
    # Plans an update and a create, writes nothing.
    M3terSyncMetersOperator(task_id="dry_run", definitions="definitions/changed.yaml", dry_run=True)
    # m3ter's "request breaks configuration" 400: a final failure naming meter, field, aggregation.
    M3terSyncMetersOperator(task_id="breaks_configuration", definitions=["definitions/without_requests.yaml"])
    # Local validation: fails before any call, naming file, meter and field.
    M3terSyncMetersOperator(task_id="invalid_definitions", definitions="definitions/invalid.yaml")
    # delete_missing would delete api_calls, which an aggregation uses: fails before any write.
    M3terSyncMetersOperator(
        task_id="delete_blocked", definitions="definitions/others_only.yaml", delete_missing=True
    )
