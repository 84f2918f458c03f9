"""Issue 11, items 6 and 7 in a real DAG run: Console links on ingest and meter sync tasks (to the
emulator's own page for an emulator connection), and an ingest task paced by its pool's share."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_m3ter.client import ClientSettings, M3terClient
from tests.airflow_db import latest_run_id, task_instances, xcoms
from tests.dagrun import AIRFLOW, AirflowEnv

pytestmark = pytest.mark.dags

DAGS = Path(__file__).parent / "dags"
DAG_ID = "m3ter_links_and_pool"


def test_ingest_and_meter_sync_link_to_the_emulators_page_and_the_pool_paces(
    airflow_env: AirflowEnv, m3ter_emulator: Any
) -> None:
    emu = m3ter_emulator
    with M3terClient(
        ClientSettings(
            org_id=emu.org_id,
            access_key_id=emu.access_key_id,
            api_secret=emu.api_secret,
            config_url=emu.config_url,
            ingest_url=emu.ingest_url,
        )
    ) as client:
        client.request("POST", "products", json={"code": "api_platform", "name": "API platform"})
    subprocess.run(
        [AIRFLOW, "pools", "set", "m3ter_ingest", "4", "m3ter ingest"],
        env=airflow_env.base_env,
        check=True,
        capture_output=True,
    )
    result = airflow_env.dags_test(DAG_ID, dags_folder=DAGS, env=emu.airflow_env())
    run_id = latest_run_id(airflow_env.home, DAG_ID)
    tis = task_instances(airflow_env.home, DAG_ID, run_id)
    context = f"{tis}\n{result.output[-4000:]}"
    assert {task: ti["state"] for task, ti in tis.items()} == {
        "sync_meters": "success",
        "ingest_in_pool": "success",
    }, context
    links = {
        x["task_id"]: json.loads(x["value"])
        for x in xcoms(airflow_env.home, DAG_ID, run_id)
        if x["key"] == "m3ter_console_url"
    }
    base = f"{emu.config_url}/_emulator/console/org/{emu.org_id}"
    assert links == {"sync_meters": f"{base}/metering/meters", "ingest_in_pool": f"{base}/events"}
    assert "console.m3ter.com" not in result.output
    for url in links.values():  # the emulator's page answers, naming the organization
        page = requests.get(url, timeout=10)
        assert page.status_code == 200
        assert emu.org_id in page.text
    # the task held 1 of the pool's 4 slots: a quarter of the connection's limits
    assert "Pacing at 0.25 of the connection's limits: ingest 12.5 req/s and 1250 per window" in result.output
