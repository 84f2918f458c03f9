"""Test DAG: a 4XX fails at once despite retries; transient faults recover through a task retry.

Run by tests/hook/test_dag_behaviour.py with ``airflow dags test`` against the emulator.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, task

from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.retry_policy import M3terRetryPolicy

MISSING_METER = "meters/00000000-0000-4000-8000-00000000dead"

with DAG(
    dag_id="m3ter_hook_retry_behaviour",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["test"],
):

    @task(retries=3, retry_delay=timedelta(seconds=1), retry_policy=M3terRetryPolicy())
    def final_4xx() -> None:
        """A 404 through the hook: M3terFinalFailure is an AirflowFailException, so one try only."""
        M3terHook().request("GET", MISSING_METER)

    @task(retries=3, retry_delay=timedelta(seconds=1), retry_policy=M3terRetryPolicy())
    def final_via_policy() -> None:
        """A 404 from the raw client (a plain exception): only the retry policy stops the retries."""
        M3terHook().get_client().request("GET", MISSING_METER)

    # without the policy's Retry-After delay, the retry would wait 90 s
    @task(
        retries=2,
        retry_delay=timedelta(seconds=90),
        retry_policy=M3terRetryPolicy(first_delay=timedelta(seconds=2), max_delay=timedelta(seconds=5)),
    )
    def transient_then_ok() -> int:
        """Listing products meets more 5XX/429 than the client's attempts; the task retry recovers."""
        return sum(1 for _ in M3terHook().paginate("products"))

    final_4xx()
    final_via_policy()
    transient_then_ok()
