"""Test DAG: an ingest whose first try is SIGKILLed at a chosen moment.

* ``M3TER_TEST_KILL_AFTER=n``: after m3ter acknowledged an (n + 1)-th batch and before that
  acknowledgement is recorded in ``task_state_store``: the worst moment, so the retry must resend at
  most the batches in flight then (with ``M3TER_TEST_MAX_IN_FLIGHT`` requests at once).
* ``M3TER_TEST_KILL_IN=post_execute``: after ``execute()`` returned, before Airflow records success:
  the retry must send nothing.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator, TaskStateCheckpoint

KILL_AFTER = int(os.environ.get("M3TER_TEST_KILL_AFTER", "0"))
KILL_IN = os.environ.get("M3TER_TEST_KILL_IN", "")
MAX_IN_FLIGHT = int(os.environ.get("M3TER_TEST_MAX_IN_FLIGHT", "1"))


class _KillingCheckpoint(TaskStateCheckpoint):
    def save(self, state: dict[str, Any]) -> None:
        if state["batches"] == KILL_AFTER + 1:
            os.kill(os.getpid(), signal.SIGKILL)
        super().save(state)


class CrashingIngestOperator(M3terIngestMeasurementsOperator):
    """Kills its own process on the first try (only)."""

    def checkpoint_store(self, context: Any) -> TaskStateCheckpoint | None:
        store = super().checkpoint_store(context)
        if store is not None and KILL_AFTER and context["ti"].try_number == 1:
            return _KillingCheckpoint(store.store, store.key)
        return store

    def post_execute(self, context: Any, result: Any = None) -> None:
        if KILL_IN == "post_execute" and context["ti"].try_number == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        super().post_execute(context, result)


with DAG(
    dag_id="ingest_crash",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1), "preflight": False},
):
    CrashingIngestOperator(
        task_id="ingest",
        source_path=os.environ.get("M3TER_TEST_SOURCE", "/nonexistent.jsonl"),
        uid_namespace="crash-test",
        max_in_flight=MAX_IN_FLIGHT,
    )
