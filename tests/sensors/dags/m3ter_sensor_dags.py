"""Test DAGs: every m3ter sensor against emulator jobs that move through their states.

``M3TER_TEST_SENSOR_MODE`` picks how the sensors wait: ``poke`` (one events sensor in
``reschedule`` mode) or ``deferrable`` (the triggers run inline under ``airflow dags test``).

Each sensor runs right after the task that starts what it waits for, in one chain (later links
run whatever the earlier ones did), so every wait starts while the job is still running: the first
check finds it pending and, in deferrable mode, the trigger sees it finish.

- ``m3ter_sensors_pass``: every sensor ends in success (a meter update arrives while waiting).
- ``m3ter_sensors_fail``: every sensor ends in its failure outcome (the test sets the emulator's
  job outcomes to failed first).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime

from airflow.sdk import DAG, chain, task

from airflow_provider_m3ter.client.file_upload import JsonArrayBody, put_upload, request_upload_url
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


@task(trigger_rule="all_done")
def start_bill_job() -> str:
    return _client().request("POST", "billjobs", json={"accountIds": ["acct-1"]})["id"]


@task(trigger_rule="all_done")
def start_data_export() -> str:
    body = {"sourceType": "OPERATIONAL", "operationalDataTypes": ["METERS"]}
    return _client().request("POST", "dataexports/adhoc", json=body)["jobId"]


@task(trigger_rule="all_done")
def start_file_upload(rows: list) -> str:
    """Upload rows as they are (no validation: the failure DAG wants a row m3ter rejects)."""
    records = [json.dumps(row, separators=(",", ":")).encode() for row in rows]
    length = 2 + sum(map(len, records)) + len(records) - 1
    ticket = request_upload_url(_client(), file_name="sensor-test.json", content_length=length)
    put_upload(ticket, JsonArrayBody(records, length))
    return ticket.job_id


@task(trigger_rule="all_done")
def start_meter() -> None:
    """Create meter v1 now; version 2 (with a custom field) arrives while the sensor waits."""
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
    body = {key: meter[key] for key in ("code", "name", "dataFields", "derivedFields", "version")}
    update = {**body, "customFields": {"stage": "ready"}}
    threading.Timer(1.5, lambda: client.request("PUT", f"meters/{meter['id']}", json=update)).start()


@task(trigger_rule="all_done")
def start_ingest(measurements: list, delay: float = 0.0) -> None:
    """Ingest now, or ``delay`` seconds later (so a failure appears while the sensor waits)."""
    client = _client()
    threading.Timer(delay, client.submit_measurements, args=(measurements,)).start()


def _job(sensor_cls, task_id: str, upstream, **kwargs):
    return sensor_cls(task_id=task_id, job_id=upstream, **kwargs, **COMMON)


with DAG("m3ter_sensors_pass", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    bill = start_bill_job()
    export = start_data_export()
    upload = start_file_upload([{**GOOD, "uid": "file-1"}])
    ingest = start_ingest([{**GOOD, "uid": "good-1"}, {**GOOD, "uid": "bad-1", "meter": "no_such_meter"}])
    chain(
        start_meter(),
        M3terEntitySensor(
            task_id="meter_ready",
            entity_kind="meter",
            code="sensor_meter",
            required_fields=["measure.requests"],
            min_version=2,
            where={"customFields.stage": "ready"},
            **COMMON,
        ),
        bill,
        _job(M3terBillJobSensor, "bill_job", bill),
        export,
        _job(M3terDataExportJobSensor, "data_export", export),
        upload,
        _job(M3terFileUploadJobSensor, "file_upload", upload, fail_on_failed_rows=True),
        ingest,
        M3terIngestEventsSensor(task_id="events_clean_uids", uids=["good-1"], settle_seconds=1.0, **COMMON),
        M3terIngestEventsSensor(
            task_id="events_warn",
            on_failure="warn",
            settle_seconds=1.5,
            mode="poke" if DEFERRABLE else "reschedule",
            **{**COMMON, "poke_interval": 1},
        ),
    )


with DAG("m3ter_sensors_fail", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    bill_f = start_bill_job()
    export_f = start_data_export()
    # one row lacks "ts": m3ter counts it as a failed row of a succeeded job
    upload_f = start_file_upload(
        [{**GOOD, "uid": "f-1"}, {"meter": "sensor_meter", "account": "acme", "uid": "f-2"}]
    )
    chain(
        bill_f,
        _job(M3terBillJobSensor, "bill_cancelled", bill_f),
        export_f,
        _job(M3terDataExportJobSensor, "export_failed", export_f),
        upload_f,
        _job(M3terFileUploadJobSensor, "upload_failed_rows", upload_f, fail_on_failed_rows=True),
        M3terEntitySensor(
            task_id="meter_never",
            entity_kind="meter",
            code="never_there",
            trigger_rule="all_done",
            **{**COMMON, "timeout": 2},
        ),
        start_ingest([{**GOOD, "uid": "bad-2", "meter": "no_such_meter"}], delay=1.0),
        M3terIngestEventsSensor(task_id="events_fail", uids=["bad-2"], settle_seconds=30, **COMMON),
        M3terJobSensor(
            task_id="job_unknown",
            job_kind="billjob",
            job_id="00000000-0000-0000-0000-00000000dead",
            trigger_rule="all_done",
            **COMMON,
        ),
    )
