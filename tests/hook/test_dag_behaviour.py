"""A real DAG run: 4XX fails on the first try despite retries; transient faults recover by a task retry.

``airflow dags test`` in Airflow 3.3 does re-run a task that went UP_FOR_RETRY once its retry delay
has passed (its loop keeps scheduling until the run finishes), so the recovery is shown for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient
from airflow_provider_m3ter.compat import RETRY_POLICY_SUPPORTED
from tests.airflow_db import latest_run_id, task_history, task_instances, xcoms
from tests.dagrun import AirflowEnv

pytestmark = pytest.mark.dags

DAGS = Path(__file__).parent / "dags"
DAG_ID = "m3ter_hook_retry_behaviour"


@pytest.mark.skipif(
    not RETRY_POLICY_SUPPORTED, reason="version-gated: the DAG uses M3terRetryPolicy (Airflow 3.3+)"
)
def test_final_errors_fail_once_and_transient_errors_recover_by_retry(
    airflow_env: AirflowEnv, m3ter_emulator: Any
) -> None:
    emu = m3ter_emulator
    settings = ClientSettings(
        org_id=emu.org_id,
        access_key_id=emu.access_key_id,
        api_secret=emu.api_secret,
        config_url=emu.config_url,
        ingest_url=emu.ingest_url,
    )
    with M3terClient(settings) as client:
        for code in ("seats", "storage"):
            client.request("POST", "products", json={"code": code, "name": code.title()})
    # three faults = the connection's max_attempts: the first try spends them all, the retry none
    emu.set_faults(sequence=["500", "502", "429"], retry_after="1", target="config", path_regex="/products")
    connection = emu.connection()
    connection["extra"].update({"max_attempts": 3, "max_wait": 0.1})

    result = airflow_env.dags_test(
        DAG_ID, dags_folder=DAGS, env={"AIRFLOW_CONN_M3TER_DEFAULT": json.dumps(connection)}
    )

    run_id = latest_run_id(airflow_env.home, DAG_ID)
    tis = task_instances(airflow_env.home, DAG_ID, run_id)
    history = task_history(airflow_env.home, DAG_ID, run_id)
    context = f"task instances: {tis}\nhistory: {history}\noutput tail:\n{result.output[-6000:]}"

    # a 4XX through the hook: AirflowFailException, one try although retries=3
    assert tis["final_4xx"]["state"] == "failed", context
    assert tis["final_4xx"]["try_number"] == 1, context
    assert tis["final_4xx"]["max_tries"] == 3, context
    # a 4XX raised as a plain client error: the retry policy fails it at once
    assert tis["final_via_policy"]["state"] == "failed", context
    assert tis["final_via_policy"]["try_number"] == 1, context
    assert "m3ter final error, retrying cannot help" in result.output, context
    assert not [row for row in history if row["task_id"] in ("final_4xx", "final_via_policy")], context

    # transient faults outlast the client's attempts; the policy retries after Retry-After (1 s)
    assert tis["transient_then_ok"]["state"] == "success", context
    assert tis["transient_then_ok"]["try_number"] == 2, context
    (first_try,) = [row for row in history if row["task_id"] == "transient_then_ok"]
    assert first_try["state"] == "failed", context  # history keeps the try's own outcome
    assert "transient_then_ok manual__" in result.output, context
    assert "[up_for_retry]" in result.output, context  # dags test waited out the retry delay
    assert first_try["try_number"] == 1, context
    assert first_try["retry_delay_override"] == 1.0, context
    assert "m3ter transient error, retrying in 1 s (Retry-After)" in first_try["retry_reason"], context
    assert "429" in first_try["retry_reason"], context
    assert "M3terTransientFailure" in result.output, context
    returned = {
        x["key"]: x["value"]
        for x in xcoms(airflow_env.home, DAG_ID, run_id)
        if x["task_id"] == "transient_then_ok"
    }
    assert json.loads(returned["return_value"]) == 2, context

    # what m3ter saw: each 4XX call exactly once, the faults once each, then one good page
    requests = emu.stats()["requests"]
    assert requests["GET /organizations/{orgId}/meters/{id}"] == {"404": 2}, requests
    assert requests["GET /organizations/{orgId}/products"] == {"500": 1, "502": 1, "429": 1, "200": 1}, (
        requests
    )
