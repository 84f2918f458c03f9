"""Test DAGs: every m3ter sensor against emulator jobs that move through their states.

``M3TER_TEST_SENSOR_MODE`` picks how the sensors wait: ``poke`` (one events sensor in
``reschedule`` mode) or ``deferrable`` (the triggers run inline under ``airflow dags test``).

- ``m3ter_sensors_pass``: every sensor ends in success (one meter update arrives while waiting).
- ``m3ter_sensors_fail``: every sensor ends in its failure outcome (the test sets the emulator's
  job outcomes to failed first).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_m3ter.client.jobs import JsonArrayBody, put_upload, request_upload_url
from airflow_provider_m3ter.sensors.entity import M3terEntitySensor
from airflow_provider_m3ter.sensors.events import M3terIngestEventsSensor
from airflow_provider_m3ter.sensors.jobs import (
    M3terBillJobSensor,
    M3terDataExportJobSensor,
    M3terFileUploadJobSensor,
    M3terJobSensor,
)

MODE = os.environ.get("M3TER_TEST_SENSOR_MODE", "poke")
DEFERRABLE = MODE == "deferrable"
COMMON = {"deferrable": DEFERRABLE, "poke_interval": 0.3, "timeout": 60, "retries": 0}
GOOD = {"meter": "sensor_meter", "account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {"requests": 1}}


def _client():
    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    return M3terHook().get_client()


def _upload(client, rows: list[dict]) -> str:
    """Upload rows as they are (no validation: the failure DAG wants rows m3ter rejects)."""
    records = [json.dumps(row, separators=(",", ":")).encode() for row in rows]
    length = 2 + sum(map(len, records)) + len(records) - 1
    ticket = request_upload_url(client, file_name="sensor-test.json", content_length=length)
    put_upload(ticket, JsonArrayBody(records, length))
    return ticket.job_id


def _start(client) -> dict:
    bill = client.request("POST", "billjobs", json={"accountIds": ["acct-1"]})
    export = client.request(
        "POST", "dataexports/adhoc", json={"sourceType": "OPERATIONAL", "operationalDataTypes": ["METERS"]}
    )
    return {"bill": bill["id"], "export": export["jobId"]}


with DAG("m3ter_sensors_pass", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):

    @task
    def start_pass() -> dict:
        client = _client()
        meter = client.request(
            "POST",
            "meters",
            json={
                "code": "sensor_meter",
                "name": "Sensor meter",
                "dataFields": [{"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "1"}],
                "derivedFields": [],
            },
        )

        def update_meter() -> None:
            # arrives while the entity sensor waits: version 2 with a custom field
            body = {k: meter[k] for k in ("code", "name", "dataFields", "derivedFields", "version")}
            client.request("PUT", f"meters/{meter['id']}", json={**body, "customFields": {"stage": "ready"}})

        threading.Timer(1.5, update_meter).start()
        client.submit_measurements(
            [{**GOOD, "uid": "good-1"}, {**GOOD, "uid": "bad-1", "meter": "no_such_meter"}]
        )
        return {
            **_start(client),
            "upload": _upload(client, [{**GOOD, "uid": "file-1"}]),
            "good_uids": ["good-1"],
        }

    started = start_pass()
    waits = [
        M3terBillJobSensor(task_id="bill_job", job_id="{{ ti.xcom_pull('start_pass')['bill'] }}", **COMMON),
        M3terDataExportJobSensor(
            task_id="data_export", job_id="{{ ti.xcom_pull('start_pass')['export'] }}", **COMMON
        ),
        M3terFileUploadJobSensor(
            task_id="file_upload",
            job_id="{{ ti.xcom_pull('start_pass')['upload'] }}",
            fail_on_failed_rows=True,
            **COMMON,
        ),
        M3terEntitySensor(
            task_id="meter_ready",
            entity_kind="meter",
            code="sensor_meter",
            required_fields=["measure.requests"],
            min_version=2,
            where={"customFields.stage": "ready"},
            **COMMON,
        ),
        M3terIngestEventsSensor(
            task_id="events_warn",
            on_failure="warn",
            settle_seconds=1.5,
            mode="poke" if DEFERRABLE else "reschedule",
            **{**COMMON, "poke_interval": 1},
        ),
        M3terIngestEventsSensor(
            task_id="events_clean_uids", uids=started["good_uids"], settle_seconds=1.0, **COMMON
        ),
    ]
    started >> waits


with DAG("m3ter_sensors_fail", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):

    @task
    def start_fail() -> dict:
        client = _client()
        # the test made bill jobs and data exports end badly; one upload row lacks "ts"
        rows = [{**GOOD, "uid": "f-1"}, {"meter": "sensor_meter", "account": "acme", "uid": "f-2"}]
        client.submit_measurements([{**GOOD, "uid": "bad-2", "meter": "no_such_meter"}])
        return {**_start(client), "upload": _upload(client, rows)}

    started_f = start_fail()
    started_f >> [
        M3terBillJobSensor(
            task_id="bill_cancelled", job_id="{{ ti.xcom_pull('start_fail')['bill'] }}", **COMMON
        ),
        M3terDataExportJobSensor(
            task_id="export_failed", job_id="{{ ti.xcom_pull('start_fail')['export'] }}", **COMMON
        ),
        M3terFileUploadJobSensor(
            task_id="upload_failed_rows",
            job_id="{{ ti.xcom_pull('start_fail')['upload'] }}",
            fail_on_failed_rows=True,
            **COMMON,
        ),
        M3terEntitySensor(
            task_id="meter_never", entity_kind="meter", code="never_there", **{**COMMON, "timeout": 2}
        ),
        M3terIngestEventsSensor(task_id="events_fail", settle_seconds=30, **COMMON),
        M3terJobSensor(
            task_id="job_unknown", job_kind="billjob", job_id="00000000-0000-0000-0000-00000000dead", **COMMON
        ),
    ]
