"""Test DAG: an ingest whose first try is SIGKILLed right after a batch is acknowledged.

The kill comes after m3ter acknowledged batch ``M3TER_TEST_KILL_AFTER + 1`` and before that batch
is recorded in ``task_state_store``: the worst moment, so the retry must resend exactly that batch.
"""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator, TaskStateCheckpoint

KILL_AFTER = int(os.environ.get("M3TER_TEST_KILL_AFTER", "0"))


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


with DAG(
    dag_id="ingest_crash",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
):
    CrashingIngestOperator(
        task_id="ingest",
        source_path=os.environ.get("M3TER_TEST_SOURCE", "/nonexistent.jsonl"),
        uid_namespace="crash-test",
    )
