"""Test DAG: a file upload whose worker dies right after the upload, like a killed worker would.

``M3TER_TEST_UPLOAD_FILE`` is the measurements file. The first run of ``upload`` SIGKILLs its own
process once the upload is recorded in the task state store (``M3TER_TEST_CRASH_MARKER`` makes it
happen once only); the next run of the task must wait on that job instead of uploading again.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator


class CrashOnceAfterUpload(M3terFileUploadOperator):
    """Dies without any cleanup right after its first upload was recorded."""

    def after_upload(self, job_id, context):
        marker = os.environ.get("M3TER_TEST_CRASH_MARKER")
        if marker and not os.path.exists(marker):
            Path(marker).write_text(job_id)
            os.kill(os.getpid(), signal.SIGKILL)


with DAG("m3ter_file_upload_crash", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    CrashOnceAfterUpload(
        task_id="upload",
        source_path=os.environ.get("M3TER_TEST_UPLOAD_FILE", "/nonexistent.jsonl"),
        poll_interval=0.3,
        wait_timeout=60,
        deferrable=False,
        retries=1,
    )
