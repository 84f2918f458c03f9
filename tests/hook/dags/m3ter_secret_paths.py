"""Test DAG: every code path that holds a credential or a signed URL, run with DEBUG logging.

Run by tests/hook/test_secret_masking_paths.py under the real supervisor with
``AIRFLOW__LOGGING__LOGGING_LEVEL=DEBUG`` (so urllib3 logs every request line) against an emulator
with a known secret. Paths: the file-upload operator (waiting in the task, and deferred to its
trigger), the job sensor (poke mode and deferred), the hook's connection test, and an upload whose
signature is forged (a failing task: its exception goes to the task log).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_m3ter.client.file_upload import UploadTicket, put_upload, request_upload_url
from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator
from airflow_provider_m3ter.sensors.jobs import M3terFileUploadJobSensor

SOURCE = os.environ.get("M3TER_TEST_UPLOAD_FILE", "/nonexistent.jsonl")

JOB_ID = "{{ ti.xcom_pull(task_ids='upload')['job_id'] }}"

with DAG(
    dag_id="m3ter_secret_paths",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["test"],
):
    upload = M3terFileUploadOperator(
        task_id="upload", source_path=SOURCE, uid_namespace="scan", poll_interval=0.3, wait_timeout=60,
        deferrable=False,
    )  # fmt: skip
    poke = M3terFileUploadJobSensor(
        task_id="sensor_poke", job_id=JOB_ID, poke_interval=0.3, timeout=60, deferrable=False
    )

    @task
    def hook_test() -> list[Any]:
        return list(M3terHook().test_connection())

    @task
    def forged_upload() -> None:
        """An upload whose signature header is forged: m3ter refuses it and the task fails."""
        client = M3terHook().get_client()
        body = b'[{"uid":"f1","meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":1}}]'
        ticket = request_upload_url(client, file_name="forged.json", content_length=len(body))
        forged = UploadTicket(
            ticket.job_id, ticket.url, {**ticket.headers, "x-emulator-upload-signature": "x"}
        )
        put_upload(forged, body)

    upload >> poke
    hook_test()
    forged_upload()


# Deferred paths: the supervised harness runs no triggerer, so these run under ``airflow dags test``,
# which runs each trigger inline in its own process (and applies no Airflow masking to what it
# prints: only the client's own redaction and what never gets logged keep the secrets out).
with DAG(
    dag_id="m3ter_secret_paths_deferred",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["test"],
):
    upload_deferred = M3terFileUploadOperator(
        task_id="upload", source_path=SOURCE, uid_namespace="scan2", poll_interval=0.3, wait_timeout=60,
        deferrable=True,
    )  # fmt: skip
    upload_deferred >> M3terFileUploadJobSensor(
        task_id="sensor_deferred", job_id=JOB_ID, poke_interval=0.3, timeout=60, deferrable=True
    )
