"""Test DAG: a file upload whose first try dies right after the upload, like a killed worker would.

``M3TER_TEST_UPLOAD_FILE`` is the measurements file. Try 1 of ``upload`` writes the job id to
``M3TER_TEST_CRASH_MARKER`` and SIGKILLs its own process once the upload is recorded in the task
state store (no cleanup, no exception handler runs). Airflow's retry of the same task instance must
wait on that job instead of uploading again. Run it with ``tests/supervised.py`` so each try is its
own supervised process and the retry happens within the same DAG run.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator


class CrashOnceAfterUpload(M3terFileUploadOperator):
    """Dies without any cleanup right after the upload of its first try was recorded."""

    def after_upload(self, job_id: str, context: Any) -> None:
        if context["ti"].try_number != 1:
            return
        marker = os.environ.get("M3TER_TEST_CRASH_MARKER")
        if marker:
            Path(marker).write_text(job_id)  # tells the test which job to finish
        os.kill(os.getpid(), signal.SIGKILL)


with DAG(
    "m3ter_file_upload_crash",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
):
    CrashOnceAfterUpload(
        task_id="upload",
        source_path=os.environ.get("M3TER_TEST_UPLOAD_FILE", "/nonexistent.jsonl"),
        poll_interval=0.3,
        wait_timeout=60,
        deferrable=False,
    )
