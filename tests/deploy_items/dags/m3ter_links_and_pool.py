"""Test DAG: the ingest and meter-sync tasks' Console links, and an ingest task paced by its pool."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG

from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.operators.meters import M3terSyncMetersOperator

METERS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "example_dags", "meters", "*.yaml")

with DAG(
    dag_id="m3ter_links_and_pool",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
):
    sync = M3terSyncMetersOperator(task_id="sync_meters", definitions=os.path.abspath(METERS))
    ingest = M3terIngestMeasurementsOperator(
        task_id="ingest_in_pool",
        measurements=[
            {
                "meter": "api_calls",
                "account": "acme",
                "ts": "2024-05-01T00:00:00Z",
                "measure": {"requests": 1, "errors": 0},
            }
        ],
        pool="m3ter_ingest",
        unknown_accounts="allow",  # the account is created by m3ter on first use
        pool_slots_total=4,
    )
    sync >> ingest
