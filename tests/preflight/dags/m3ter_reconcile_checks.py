"""Test DAG: pre-flight, then reconciliation, in one mode picked by ``M3TER_TEST_SENSOR_MODE``.

``poke``, ``reschedule`` or ``deferrable``. With ``M3TER_TEST_TAMPER`` set to an emulator's
Config URL, a task drops one stored measurement and alters another between ingest and
reconciliation (the emulator's admin API), so the sensor must fail naming both.
"""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import datetime, timezone

from airflow.sdk import DAG, task

from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator
from airflow_provider_m3ter.sensors.reconcile import M3terReconciliationSensor

MODE = os.environ.get("M3TER_TEST_SENSOR_MODE", "poke")
TAMPER = os.environ.get("M3TER_TEST_TAMPER", "")


def _row(i: int, account: str, **extra):
    row = {
        "uid": f"row-{i}",
        "meter": "api_calls",
        "account": account,
        "ts": f"2024-05-01T{i:02d}:00:00Z",
        "who": {"user": "ann"},
        "where": {"region": "eu"},
        "measure": {"requests": 10 * i, "errors": i % 2},
    }
    row.update(extra)
    return row


ROWS = [_row(i, "acme" if i % 2 else "beta") for i in range(1, 9)]
ROWS.insert(3, _row(99, "acme", measure={"requests": 5}))  # no "errors": m3ter would reject it later


@task
def tamper() -> None:
    if not TAMPER:
        return
    for body in ({"match": {"uid": "row-1"}, "drop": True},
                 {"match": {"uid": "row-2"}, "set": {"measure": {"requests": 21, "errors": 0}}}):  # fmt: skip
        request = urllib.request.Request(
            TAMPER + "/_emulator/measurements/tamper",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["matched"] == 1


with DAG(
    dag_id="m3ter_reconcile_checks",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
):
    ingest = M3terIngestMeasurementsOperator(task_id="ingest", measurements=ROWS, on_invalid="skip")
    reconcile = M3terReconciliationSensor(
        task_id="reconcile",
        summary=ingest.output,
        settle_seconds=3,
        poke_interval=1,
        timeout=60,
        retries=0,
        deferrable=MODE == "deferrable",
        mode="reschedule" if MODE == "reschedule" else "poke",
    )
    ingest >> tamper() >> reconcile
