"""Backfill a month of usage through m3ter's file upload, and wait for m3ter to process it.

The Ingest API takes at most 1,000 measurements per request (about 16,700 per second per client
IP); a backfill of months of history is better sent as files of up to 1 GiB each.
``M3terFileUploadOperator`` validates the file, gives rows without a ``uid`` a deterministic one
(so uploading the same month again is de-duplicated by m3ter), streams it as one JSON array to the
upload URL m3ter issues, and waits (deferred) for the file-upload job. If a worker dies after the
upload, the retry finds the job in the task state store (Airflow 3.3+) and waits on it instead of
uploading the month again.

Trigger it with the month to load (default 2024-05)::

    airflow dags trigger example_m3ter_backfill --conf '{"month": "2024-05"}'

``export_month`` stands in for the export from your warehouse. Waits are m3ter-friendly by
default (``M3TER_EXAMPLE_POLL_SECONDS`` = 30); a local demo against the emulator sets it lower.
Connection ``m3ter_default`` as in ``example_m3ter_ingest_events``.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator
from airflow_provider_m3ter.sensors.entity import M3terEntitySensor
from airflow_provider_m3ter.sensors.events import M3terIngestEventsSensor

POLL_SECONDS = float(os.environ.get("M3TER_EXAMPLE_POLL_SECONDS", "30"))
SETTLE_SECONDS = float(os.environ.get("M3TER_EXAMPLE_SETTLE_SECONDS", "120"))
DATA_DIR = os.environ.get("M3TER_EXAMPLE_DATA_DIR") or os.path.join(tempfile.gettempdir(), "m3ter-example")
CUSTOMERS = {"acme": "eu-west-1", "globex": "us-east-1", "initech": "eu-west-1"}


@task
def export_month(params: Any = None) -> str:
    """Write the month's hourly API usage as gzip JSON Lines; return the file's path."""
    month = datetime.strptime(params["month"], "%Y-%m").replace(tzinfo=timezone.utc)
    end = (month + timedelta(days=32)).replace(day=1)
    path = Path(DATA_DIR) / f"backfill-api-calls-{params['month']}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as out:
        hour = month
        while hour < end:
            for index, (customer, region) in enumerate(CUSTOMERS.items()):
                row = {
                    "meter": "api_calls",
                    "account": customer,
                    "ts": hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "who": {"api_key": f"key-{customer}-1"},
                    "what": {"endpoint": "/v1/search"},
                    "where": {"region": region},
                    "measure": {"requests": 100 + 3 * hour.hour + 17 * index, "errors": hour.hour % 3},
                }
                out.write(json.dumps(row) + "\n")
            hour += timedelta(hours=1)
    partial.replace(path)  # the upload never reads half a file
    return str(path)


with DAG(
    dag_id="example_m3ter_backfill",
    description="Backfill a month of usage into m3ter through file upload",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    params={"month": Param("2024-05", type="string", pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["m3ter", "example"],
):
    meter_ready = M3terEntitySensor(
        task_id="api_calls_meter_ready",
        entity_kind="meter",
        code="api_calls",
        required_fields=["measure.requests", "measure.errors"],
        poke_interval=POLL_SECONDS,
        timeout=3600,
        deferrable=True,
    )
    upload = M3terFileUploadOperator(
        task_id="upload_month",
        source_path=export_month(),
        file_name="api-calls-{{ params.month }}.json",
        # the same month always gets the same uids: a second backfill of it is de-duplicated
        uid_namespace="example_m3ter_backfill.api_calls.{{ params.month }}",
        fail_on_failed_rows=True,
        poll_interval=POLL_SECONDS,
        wait_timeout=6 * 3600,
        deferrable=True,
    )
    check = M3terIngestEventsSensor(
        task_id="check_ingest_events",
        settle_seconds=SETTLE_SECONDS,
        # a backfill is large: report rejected rows instead of failing the whole load
        on_failure="warn",
        # a second backfill of the month resends it: its DuplicateUids are proven resends; other
        # loads' events in the organization are not this backfill's (its uids are all derived)
        uid_namespaces=["example_m3ter_backfill.api_calls.{{ params.month }}"],
        other_loads="ignore",
        poke_interval=POLL_SECONDS,
        retry_delay=timedelta(seconds=10),  # see example_m3ter_ingest_events: Airflow 3.3.2's race
        timeout=SETTLE_SECONDS + 1800,
        deferrable=True,
    )
    meter_ready >> upload >> check
