"""Deployment test DAG: several tasks share one organization's limits through an Airflow pool.

Four mapped tasks in pool ``m3ter_ingest`` (4 slots) start together (a file barrier) and send
single-measurement ingest requests as fast as their pace allows. With ``pool_slots_total=4`` each
paces at 1/4 of the connection's limits (what ``M3terIngestMeasurementsOperator(pool=...,
pool_slots_total=...)`` does); with ``pool_slots_total=None`` (the baseline) each paces at the
whole limit, so together they exceed it. Each task returns the times its requests were answered.
"""

from __future__ import annotations

import hashlib
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
    hook = M3terHook(limit_share=share)
    client = hook.get_client()
    barrier = Path(os.environ["M3TER_EXAMPLE_DATA_DIR"]) / "barrier" / dag_run.run_id.replace(":", "_")
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(worker)).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < TASKS:
        if time.monotonic() > deadline:
            raise RuntimeError("the other tasks of the pool did not start within 120 s")
        time.sleep(0.05)
    answered = []
    run = hashlib.blake2b(dag_run.run_id.encode(), digest_size=6).hexdigest()  # uids stay under 50 chars
    for index in range(int(params["requests"])):
        hook.submit_measurements(
            [
                {
                    "uid": f"pool-{run}-{worker}-{index}",
                    "meter": "pool_pacing",
                    "account": f"worker-{worker}",
                    "ts": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "measure": {"requests": 1},
                }
            ]
        )
        answered.append(time.time())
    stats = client.stats if hasattr(client, "stats") else None
    return {"share": share, "answered": answered, "client_stats": repr(stats) if stats else None}


with DAG(
    dag_id="m3ter_pool_pacing",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={"pool_slots_total": TASKS, "requests": 150},
    max_active_tasks=TASKS,
    tags=["m3ter", "deployment-test"],
):
    send.expand(worker=list(range(TASKS)))
