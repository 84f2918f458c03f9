"""Test DAG: every wait ends near its own limit whatever m3ter answers while it waits.

``M3TER_TEST_SENSOR_MODE`` is ``poke``, ``reschedule`` or ``deferrable``; ``M3TER_TEST_ADMIN_URL`` is
the emulator's admin base (``.../_emulator/``) and ``M3TER_TEST_UPLOAD_FILE`` a measurements file.
The emulator's jobs never finish (manual job mode). In one chain, a ``fault_<kind>`` task switches
the emulator's answer to job reads (and returns the time), then ``wait_<kind>`` (a bill-job sensor,
or ``upload_<kind>``, a file upload that waits for its job) waits with a ``WAIT`` s limit. The next
``fault_`` task runs whatever the wait did and marks when it ended.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

import requests
from airflow.sdk import DAG, chain, task

from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator
from airflow_provider_m3ter.sensors.jobs import M3terBillJobSensor

MODE = os.environ.get("M3TER_TEST_SENSOR_MODE", "poke")
WAIT = 5.0
# only reads of a job are hit: tokens, job creation and the upload itself work normally
JOB_READS = r"/(billjobs|fileuploads/measurements/jobs)/[^/]+$"
FAULTS = {
    "errors": {"rate": 1.0, "kinds": ["500", "502", "504"]},
    "throttled": {"rate": 1.0, "kinds": ["429"]},
    "retry_after": {"rate": 1.0, "kinds": ["429"], "retry_after": "3600"},
    "silence": {"latency_ms": 600_000},
}
UPLOADS = ("retry_after", "silence")


@task(trigger_rule="all_done")
def start_bill_job() -> str:
    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    return M3terHook().request("POST", "billjobs", json={"accountIds": ["acct-1"]})["id"]


@task(trigger_rule="all_done")
def fault(kind: str) -> float:
    """Make job reads answer with ``kind`` from now on; return the time (the previous wait's end)."""
    body = {**FAULTS[kind], "path_regex": JOB_READS} if kind in FAULTS else {}
    requests.post(os.environ["M3TER_TEST_ADMIN_URL"] + "faults", json=body, timeout=10).raise_for_status()
    return time.time()


with DAG("m3ter_wait_bounds", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    bill = start_bill_job()
    links: list = [bill]
    for kind in FAULTS:
        links += [
            fault.override(task_id=f"fault_{kind}")(kind),
            M3terBillJobSensor(
                task_id=f"wait_{kind}",
                job_id=bill,
                timeout=WAIT,
                poke_interval=2,
                retries=0,
                deferrable=MODE == "deferrable",
                mode="reschedule" if MODE == "reschedule" else "poke",
            ),
        ]
    for kind in UPLOADS:
        links += [
            fault.override(task_id=f"fault_upload_{kind}")(kind),
            M3terFileUploadOperator(
                task_id=f"upload_{kind}",
                source_path=os.environ.get("M3TER_TEST_UPLOAD_FILE", "/nonexistent.jsonl"),
                file_name=f"bounds-{kind}.json",
                poll_interval=2,
                wait_timeout=WAIT,
                retries=0,
                deferrable=MODE == "deferrable",
            ),
        ]
    links.append(fault.override(task_id="fault_end")("none"))
    chain(*links)
