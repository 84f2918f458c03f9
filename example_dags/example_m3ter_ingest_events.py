"""Daily ingest, then check what m3ter rejected while validating it.

m3ter accepts every well-formed ingest request and validates the measurements against their meter
afterwards: a misspelt field or an unknown meter does not fail the ingest call, it becomes an
``ingest.validation.failure`` event. This DAG closes that gap:

1. ``api_calls_meter_ready`` waits until the ``api_calls`` meter exists with the fields the usage
   carries (``example_m3ter_meters`` creates it), so a first run cannot race the meter's creation;
2. ``ingest_api_calls`` sends the data interval's usage (``M3terIngestMeasurementsOperator``); a
   manual run without a logical date (Airflow 3's default) has no data interval and sends the last
   complete day before it was triggered (``[D-1 01:00, D 01:00)`` UTC, ``D 01:00`` at or before the
   run's ``run_after``);
3. ``check_ingest_events`` waits a settle period, then fails the run if any of this run's
   measurements were rejected, with counts by failure type and the first examples. A rerun of a
   day resends the same measurements with the same uids; m3ter ingests them once and reports the
   resends as ``DuplicateUid``, which the check does not count as failures (a uid resent with
   different content still fails it). m3ter's events are the organization's: with
   ``other_loads="ignore"`` the events of measurements this DAG's ingest did not send (another DAG
   loading at the same time, say ``example_m3ter_ingest`` rerunning its day) are left out; that
   is exact here because every uid of this DAG is derived from its content.

The sensors are deferrable: while they wait they hold no worker slot. Waits are m3ter-friendly by
default (``M3TER_EXAMPLE_POLL_SECONDS`` = 30, ``M3TER_EXAMPLE_SETTLE_SECONDS`` = 120); a local
demo against the emulator sets them lower.

Connection ``m3ter_default`` (type ``m3ter``), for example::

    AIRFLOW_CONN_M3TER_DEFAULT='{"conn_type": "m3ter", "host": "https://api.m3ter.com",
      "login": "<Access Key ID>", "password": "<API Secret>", "extra": {"org_id": "<Organization ID>"}}'

Nothing here touches the network while the DAG is parsed.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_m3ter.compat import CronDataIntervalTimetable  # airflow.sdk has it from 3.2
from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.sensors.entity import M3terEntitySensor
from airflow_provider_m3ter.sensors.events import M3terIngestEventsSensor

POLL_SECONDS = float(os.environ.get("M3TER_EXAMPLE_POLL_SECONDS", "30"))
SETTLE_SECONDS = float(os.environ.get("M3TER_EXAMPLE_SETTLE_SECONDS", "120"))
CUSTOMERS = {"acme": "eu-west-1", "globex": "us-east-1", "initech": "eu-west-1"}
DAY_STARTS_AT_HOUR = 1  # UTC; the schedule below runs at this hour


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


@task
def api_usage(dag_run: Any = None) -> list[dict[str, Any]]:
    """The window's API usage, one measurement per customer and 6 hours (stands in for a query)."""
    usage = []
    moment, data_interval_end = usage_window(dag_run)
    while moment < data_interval_end:
        for index, (customer, region) in enumerate(CUSTOMERS.items()):
            usage.append(
                {
                    "meter": "api_calls",
                    "account": customer,
                    "ts": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "who": {"api_key": f"key-{customer}-1"},
                    "what": {"endpoint": "/v1/search"},
                    "where": {"region": region},
                    "measure": {"requests": 500 + 40 * moment.hour + 11 * index, "errors": index},
                }
            )
        moment += timedelta(hours=6)
    return usage


with DAG(
    dag_id="example_m3ter_ingest_events",
    description="Daily ingest into m3ter, then fail on measurements m3ter rejected",
    schedule=CronDataIntervalTimetable("0 1 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    tags=["m3ter", "example"],
):
    meter_ready = M3terEntitySensor(
        task_id="api_calls_meter_ready",
        entity_kind="meter",
        code="api_calls",
        required_fields=[
            "who.api_key",
            "what.endpoint",
            "where.region",
            "measure.requests",
            "measure.errors",
        ],
        poke_interval=POLL_SECONDS,
        timeout=3600,
        deferrable=True,
    )
    ingest = M3terIngestMeasurementsOperator(
        task_id="ingest_api_calls",
        measurements=api_usage(),
        unknown_accounts="allow",  # the demo's accounts are created by m3ter on first use
    )
    check = M3terIngestEventsSensor(
        task_id="check_ingest_events",
        # the window starts when this run started, so earlier runs' failures are not counted again
        settle_seconds=SETTLE_SECONDS,
        on_failure="fail",
        # other DAGs' events in the organization are not this run's (its uids are all derived)
        other_loads="ignore",
        poke_interval=POLL_SECONDS,
        timeout=SETTLE_SECONDS + 1800,
        deferrable=True,
        # a verdict of the check (M3terCheckFailure) never retries; a retry is for Airflow 3.3.2's
        # race that fails a deferred task whose trigger fires before the scheduler saw its worker
        # exit ("state mismatch", apache/airflow#67287, fixed after 3.3.2)
        retries=2,
        retry_delay=timedelta(seconds=10),
    )
    meter_ready >> ingest >> check
