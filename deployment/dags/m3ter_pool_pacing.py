"""Deployment test DAG: several tasks share one organization's limits through an Airflow pool.

Four mapped tasks in pool ``m3ter_ingest`` (4 slots) start together (a file barrier, so they
overlap in time) and each sends ``requests`` Config API calls (``GET meters``) as fast as its pace
allows. The Config API is the one where m3ter's per-organization limit (50 requests/s) is what
binds from one host (its per-IP window allows about 66/s; ingest's per-IP window, about 16.7/s,
binds before the organization's 50/s). With ``pool_slots_total=4`` each task paces at 1/4 of the
connection's limits (what ``M3terIngestMeasurementsOperator(pool=..., pool_slots_total=...)``
does); with ``pool_slots_total=None`` (the baseline) each paces at the whole limit, so together
they exceed it. Each task returns the times (epoch seconds) its requests were answered and the
429 responses its client met.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

POOL = "m3ter_ingest"
TASKS = 4


@task(pool=POOL, retries=0)
def send(worker: int, params: Any = None, dag_run: Any = None, ti: Any = None) -> dict[str, Any]:
    from airflow_provider_m3ter.hooks.m3ter import M3terHook
    from airflow_provider_m3ter.hooks.pool_pacing import pool_share

    total = params["pool_slots_total"]
    share = pool_share(ti.task_id, POOL, 1, total)
    client = M3terHook(limit_share=share).get_client()
    barrier = Path(os.environ["M3TER_EXAMPLE_DATA_DIR"]) / "barrier" / dag_run.run_id.replace(":", "_")
    barrier.mkdir(parents=True, exist_ok=True)
    client.request("GET", "meters", params={"pageSize": 1})  # token and connection before the barrier
    (barrier / str(worker)).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < TASKS:
        if time.monotonic() > deadline:
            raise RuntimeError("the other tasks of the pool did not start within 120 s")
        time.sleep(0.02)
    answered = []
    for _ in range(int(params["requests"])):
        client.request("GET", "meters", params={"pageSize": 1})
        answered.append(time.time())
    return {"share": share, "answered": answered, "throttled": client.stats.throttled}


with DAG(
    dag_id="m3ter_pool_pacing",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={"pool_slots_total": TASKS, "requests": 500},
    max_active_tasks=TASKS,
    tags=["m3ter", "deployment-test"],
):
    send.expand(worker=list(range(TASKS)))
