"""A worker killed right after the upload: the next run of the task waits on the same job.

The first ``airflow dags test`` SIGKILLs its own process once the upload is recorded in Airflow's
task state store (no cleanup, no exception handler runs: a dead worker). The DAG run stays behind
in the metadata DB, so ``airflow tasks test`` then runs the same task instance of the same run in a
new process, as a retry would. It must find the recorded job and wait for it, without asking for a
new upload URL or sending the file again (the emulator's request counts prove it).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from tests.dagrun import AIRFLOW, REPO

pytestmark = pytest.mark.dags

DAGS = REPO / "tests" / "sensors" / "dags"
URL_ROUTE = "POST /organizations/{orgId}/fileuploads/measurements/generateUploadUrl"
PUT_ROUTE = "PUT /_upload/{token}"
JOB_ROUTE = "GET /organizations/{orgId}/fileuploads/measurements/jobs/{id}"


def _count(emulator, route: str) -> int:
    return emulator.stats()["requests"].get(route, {}).get("200", 0)


def test_a_killed_upload_is_resumed_without_uploading_again(airflow_env, m3ter_emulator, tmp_path):
    m3ter_emulator.set_job_mode("manual")  # the job stays running until the test finishes it
    source = tmp_path / "backfill.jsonl"
    rows = [
        {
            "meter": "api_calls",
            "account": "acme",
            "ts": f"2024-05-01T{i // 60:02d}:{i % 60:02d}:00Z",
            "measure": {"n": i},
        }
        for i in range(600)
    ]
    source.write_text("\n".join(json.dumps(row) for row in rows))
    marker = tmp_path / "crashed"
    env = {
        **airflow_env.base_env,
        **m3ter_emulator.airflow_env(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "M3TER_TEST_UPLOAD_FILE": str(source),
        "M3TER_TEST_CRASH_MARKER": str(marker),
    }

    first = subprocess.run(
        [AIRFLOW, "dags", "test", "m3ter_file_upload_crash"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == -9, first.stdout[-3000:] + first.stderr[-3000:]
    job_id = marker.read_text()
    assert (_count(m3ter_emulator, URL_ROUTE), _count(m3ter_emulator, PUT_ROUTE)) == (1, 1)
    assert m3ter_emulator.job(job_id)["status"] == "running"
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
            ("m3ter_file_upload_crash",),
        ).fetchone()
        recorded = json.loads(
            db.execute(
                "SELECT value FROM task_state_store WHERE run_id = ? AND task_id = 'upload' AND key = ?",
                (run_id, "m3ter_file_upload"),
            ).fetchone()[0]
        )
    assert state == "running"  # nobody cleaned up after the dead worker
    assert (recorded["job_id"], recorded["phase"]) == (job_id, "uploaded")

    retry = subprocess.Popen(
        [AIRFLOW, "tasks", "test", "m3ter_file_upload_crash", "upload", run_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # finish the job only once the retry is visibly waiting on it
        deadline = time.monotonic() + 300
        while _count(m3ter_emulator, JOB_ROUTE) < 3 and time.monotonic() < deadline and retry.poll() is None:
            time.sleep(0.2)
        m3ter_emulator.advance_job(job_id, status="succeeded")
        output, _ = retry.communicate(timeout=300)
    finally:
        if retry.poll() is None:
            retry.kill()
    assert retry.returncode == 0, output[-5000:]
    assert f"Reconnecting to file-upload job {job_id} from a previous try (status running)" in output
    assert (_count(m3ter_emulator, URL_ROUTE), _count(m3ter_emulator, PUT_ROUTE)) == (1, 1)
    assert m3ter_emulator.stats()["measurements_stored"] == 600
    for text in (first.stdout + first.stderr, output):
        assert "/_upload/" not in text  # the signed URL is never logged
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        value = db.execute(
            "SELECT value FROM xcom WHERE run_id = ? AND task_id = 'upload' AND key = 'return_value'",
            (run_id,),
        ).fetchone()[0]
    summary = json.loads(value)
    assert (summary["job_id"], summary["resumed"], summary["status"], summary["measurements"]) == (
        job_id,
        True,
        "succeeded",
        600,
    )
