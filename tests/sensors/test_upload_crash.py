"""A worker killed right after the upload: Airflow's retry, in the same DAG run, waits on that job.

One real DAG run through the supervised runner (``tests/supervised.py``): each task try is its own
supervised process, as on a worker. Try 1 of ``upload`` SIGKILLs its own process once the upload is
recorded in the task state store (no cleanup, no exception handler runs: a dead worker). The
runner handles the dead process the way the scheduler does (``up_for_retry``), and try 2 of the
same task instance must find the recorded job and wait on it, without asking for a new upload URL
or sending the file again (the emulator's request counts prove it).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_m3ter.client.encoding import derive_uid
from airflow_provider_m3ter.compat import TASK_STATE_STORE_SUPPORTED
from airflow_provider_m3ter.operators.file_upload import UPLOAD_STATE_KEY
from tests.dagrun import REPO
from tests.supervised import supervised_command

pytestmark = pytest.mark.dags

DAG_ID = "m3ter_file_upload_crash"
DAGS = REPO / "tests" / "sensors" / "dags"
URL_ROUTE = "POST /organizations/{orgId}/fileuploads/measurements/generateUploadUrl"
PUT_ROUTE = "PUT /_upload/{token}"
JOB_ROUTE = "GET /organizations/{orgId}/fileuploads/measurements/jobs/{id}"
STORED_FIELDS = (
    "uid",
    "meter",
    "account",
    "ts",
    "ets",
    "who",
    "where",
    "what",
    "other",
    "metadata",
    "measure",
)


def _requests(emulator: Any, route: str) -> int:
    """Requests to ``route`` whatever their answer (a failed PUT would count too)."""
    return sum(emulator.stats()["requests"].get(route, {}).values())


def _task_instance(home: Path) -> tuple[str, str, int] | None:
    """Run id, state and try number of the latest run's ``upload`` task instance."""
    with sqlite3.connect(home / "airflow.db", timeout=30) as db:
        row = db.execute(
            "SELECT run_id, state, try_number FROM task_instance WHERE dag_id = ? AND task_id = 'upload' "
            "ORDER BY id DESC LIMIT 1",
            (DAG_ID,),
        ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


@pytest.mark.skipif(
    not TASK_STATE_STORE_SUPPORTED,
    reason="version-gated: resuming after a crash needs task_state_store (Airflow 3.3+)",
)
def test_a_killed_upload_is_resumed_by_the_retry_without_uploading_again(
    airflow_env, m3ter_emulator, tmp_path
):
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
    logs = tmp_path / "logs"
    env = {
        **airflow_env.base_env,
        **m3ter_emulator.airflow_env(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "M3TER_TEST_UPLOAD_FILE": str(source),
        "M3TER_TEST_CRASH_MARKER": str(marker),
    }

    output_file = tmp_path / "run.out"
    with output_file.open("w") as out:
        run = subprocess.Popen(
            supervised_command(DAG_ID, "2024-05-02", log_dir=logs),
            env=env,
            cwd=str(REPO),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a failed test ends the task process too
        )
        try:
            # finish the job only once try 2 is visibly waiting on it (its own checks of the job)
            deadline = time.monotonic() + 300
            while run.poll() is None and time.monotonic() < deadline:
                if marker.exists() and _requests(m3ter_emulator, JOB_ROUTE) >= 3:
                    break
                if _requests(m3ter_emulator, URL_ROUTE) > 1:
                    break  # the retry uploaded again: fail now rather than after its wait times out
                time.sleep(0.2)
            assert run.poll() is None, output_file.read_text()[-5000:]
            uploads = (_requests(m3ter_emulator, URL_ROUTE), _requests(m3ter_emulator, PUT_ROUTE))
            assert uploads == (1, 1), (
                f"the retry asked for a new upload URL or sent the file again: {uploads}"
            )
            job_id = marker.read_text()
            waiting = m3ter_emulator.job(job_id)["status"]
            during = _task_instance(airflow_env.home)
            m3ter_emulator.advance_job(job_id, status="succeeded")
            returncode = run.wait(timeout=300)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    output = output_file.read_text()
    assert returncode == 0, output[-5000:]

    # while try 2 was polling, the job was still the running one of try 1
    assert waiting == "running"
    assert during is not None
    assert during[1:] == ("running", 2)
    assert "[SUPERVISED] task_id=upload try_number=1 exit_code=-9" in output
    assert "[SUPERVISED] task_id=upload marked up_for_retry after the crash" in output
    assert "[SUPERVISED] task_id=upload try_number=2 exit_code=0" in output

    # one URL, one PUT in total: the retry never uploaded
    assert (_requests(m3ter_emulator, URL_ROUTE), _requests(m3ter_emulator, PUT_ROUTE)) == (1, 1)
    assert m3ter_emulator.job(job_id)["status"] == "succeeded"
    namespace = f"{DAG_ID}.upload"
    expected = {derive_uid(namespace, row): {**row, "uid": derive_uid(namespace, row)} for row in rows}
    stored = [{k: m[k] for k in STORED_FIELDS if k in m} for m in m3ter_emulator.measurements()]
    assert len(stored) == 600
    assert {m["uid"]: m for m in stored} == expected
    stats = m3ter_emulator.stats()
    assert (stats["measurements_stored"], stats["duplicates_received"]) == (600, 0)

    try1 = (logs / "upload.try1.log").read_text()
    try2 = (logs / "upload.try2.log").read_text()
    assert f"Uploaded backfill.jsonl as file-upload job {job_id}" in try1
    assert f"Reconnecting to file-upload job {job_id} from a previous try (status running)" in try2
    assert "Uploading 600 measurements" not in try2
    for text in (output, try1, try2):
        assert "/_upload/" not in text  # the signed URL is never logged

    run_id = during[0]
    assert _task_instance(airflow_env.home) == (run_id, "success", 2)
    with sqlite3.connect(airflow_env.home / "airflow.db") as db:
        (runs,) = db.execute("SELECT count(*) FROM dag_run WHERE dag_id = ?", (DAG_ID,)).fetchone()
        (value,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'upload' "
            "AND key = 'return_value'",
            (DAG_ID, run_id),
        ).fetchone()
        state_rows = db.execute(
            "SELECT key, value FROM task_state_store WHERE dag_id = ? AND run_id = ? AND task_id = 'upload'",
            (DAG_ID, run_id),
        ).fetchall()
    assert runs == 1  # try 1 and its retry belong to the same DAG run
    summary = json.loads(value)
    assert (summary["job_id"], summary["resumed"], summary["status"], summary["measurements"]) == (
        job_id,
        True,
        "succeeded",
        600,
    )
    assert (summary["totalRows"], summary["processedRows"], summary["failedRows"]) == (600, 600, 0)
    # the record try 2 resumed from: try 1 wrote it after the PUT, the retry did not replace it
    assert [key for key, _ in state_rows] == [UPLOAD_STATE_KEY]
    record = json.loads(state_rows[0][1])
    assert (record["job_id"], record["phase"], record["source"]) == (job_id, "uploaded", str(source))
