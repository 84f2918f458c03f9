"""Sync meters, ingest with pre-flight, then prove m3ter counted exactly what was sent.

1. ``sync_meters`` makes m3ter's meters match ``meters/*.yaml`` (beside this file).
2. ``ensure_accounts`` makes sure the customers exist (pre-flight refuses unknown account codes,
   because m3ter would silently create a new account for a typo).
3. ``ingest_usage`` checks every row against m3ter's configuration *before sending*: the one row
   here that lacks the meter's ``errors`` measure would be accepted by m3ter now and rejected later;
   pre-flight reports it (row, field, reason, dead-letter file) and the other rows are sent.
4. ``reconcile`` asks m3ter's usage query for the run's totals per meter, account and field and
   compares them with what the run sent, waiting for m3ter to catch up; it fails naming every
   difference. This proves the count as long as nothing else writes usage for these meters and
   accounts in the same data interval.
5. ``print_reconciliation`` prints the table.

Waits default to production values (``M3TER_EXAMPLE_POLL_SECONDS`` = 30,
``M3TER_EXAMPLE_SETTLE_SECONDS`` = 120); a local demo against the emulator sets them lower.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_m3ter.client.reconcile import format_table
from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.operators.meters import M3terSyncMetersOperator
from airflow_provider_m3ter.sensors.reconcile import M3terReconciliationSensor

POLL_SECONDS = float(os.environ.get("M3TER_EXAMPLE_POLL_SECONDS", "30"))
SETTLE_SECONDS = float(os.environ.get("M3TER_EXAMPLE_SETTLE_SECONDS", "120"))
PRODUCT = {"code": "api_platform", "name": "API platform"}
ACCOUNTS = ["northwind", "umbrella"]


def _api_calls(account: str, endpoint: str, requests: int, errors: int) -> dict[str, Any]:
    return {
        "meter": "api_calls",
        "account": account,
        "who": {"api_key": f"key-{account}"},
        "what": {"endpoint": endpoint},
        "where": {"region": "eu-west-1"},
        "measure": {"requests": requests, "errors": errors},
    }


USAGE = [
    _api_calls("northwind", "/v1/search", 1200, 7),
    _api_calls("northwind", "/v1/export", 40, 1),
    _api_calls("umbrella", "/v1/search", 310, 0),
    # deliberately bad: the api_calls meter requires its "errors" measure, so m3ter would accept
    # this row now and reject it later; pre-flight reports it before anything is sent
    {**_api_calls("umbrella", "/v1/export", 5, 0), "measure": {"requests": 5}},
    {
        "meter": "data_transfer",
        "account": "northwind",
        "where": {"region": "eu-west-1"},
        "what": {"direction": "egress"},
        "measure": {"bytes": 52_000_000_000},
    },
]


@dag(
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["m3ter", "example"],
    doc_md=__doc__,
)
def example_m3ter_reconcile() -> None:
    """Meters, accounts, pre-flight ingest, reconciliation."""

    @task
    def ensure_product() -> None:
        """The meters belong to a product; create it when the organization lacks it."""
        hook = M3terHook()
        if not any(p.get("code") == PRODUCT["code"] for p in hook.paginate("products", page_size=200)):
            hook.request("POST", "products", json=PRODUCT)

    @task
    def ensure_accounts() -> None:
        """Create the customers' accounts when missing (usually they exist already)."""
        hook = M3terHook()
        found = hook.get_client().find_accounts_by_codes(ACCOUNTS)
        for code in ACCOUNTS:
            if code not in found:
                body = {"code": code, "name": code.title(), "emailAddress": f"billing@{code}.example"}
                hook.request("POST", "accounts", json=body)

    sync_meters = M3terSyncMetersOperator(task_id="sync_meters", definitions="meters/*.yaml")

    @task
    def run_usage(data_interval_start: Any = None, dag_run: Any = None) -> list[dict[str, Any]]:
        """This run's usage, stamped with the start of its data interval (a manual run: its time)."""
        moment = data_interval_start or dag_run.run_after
        ts = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [{**measurement, "ts": ts} for measurement in USAGE]

    ingest_usage = M3terIngestMeasurementsOperator(
        task_id="ingest_usage",
        measurements=run_usage(),
        on_invalid="skip",  # send the good rows; the bad one goes to the dead-letter file
        # preflight=True and unknown_accounts="fail" are the defaults
    )

    reconcile = M3terReconciliationSensor(
        task_id="reconcile",
        summary=ingest_usage.output,
        settle_seconds=SETTLE_SECONDS,
        poke_interval=POLL_SECONDS,
        timeout=SETTLE_SECONDS + 10 * POLL_SECONDS,
    )

    @task
    def print_reconciliation(report: dict[str, Any]) -> None:
        """Print what was compared: sent vs m3ter, per meter, account and field."""
        print(f"Reconciliation {report['start']} .. {report['end']}: {report['different']} differences")
        print(format_table(report["table"]))

    ensure_product() >> sync_meters >> ensure_accounts() >> ingest_usage >> reconcile
    print_reconciliation(reconcile.output)


example_m3ter_reconcile()
