"""M3terSyncMetersOperator in real ``airflow dags test`` runs against the emulator (three runs in all).

1. The example DAG on an empty organization: product ensured, three meters created from YAML, usage
   ingested for them. 2. The example DAG again: the plan is all "unchanged" and no write is made.
3. A check DAG: a dry run (zero writes), and the three hard failures (breaks configuration, invalid
   definitions, blocked delete), each failing on its first try although retries are set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_m3ter.client import M3terClient
from airflow_provider_m3ter.client.meter_definitions import load_meter_definitions
from airflow_provider_m3ter.client.meter_sync import read_meters_by_code
from tests.airflow_db import latest_run_id, task_instances, xcoms
from tests.dagrun import EXAMPLE_DAGS, AirflowEnv
from tests.meters.conftest import count, meter_writes

pytestmark = pytest.mark.dags

CHECK_DAGS = Path(__file__).parent / "dags"
EXAMPLE = "example_m3ter_meters"
CHECKS = "m3ter_meter_sync_checks"


def _returned(home: Path, dag_id: str, run_id: str) -> dict[str, Any]:
    return {
        x["task_id"]: json.loads(x["value"])
        for x in xcoms(home, dag_id, run_id)
        if x["key"] == "return_value"
    }


def _successful_writes(stats: dict[str, Any]) -> int:
    return sum(
        count(stats, method, route, "200")
        for method in ("POST", "PUT", "DELETE")
        for route in ("/meters", "/meters/{id}", "/products", "/aggregations")
    )


def test_example_dag_creates_then_writes_nothing_on_the_next_run(
    airflow_env: AirflowEnv, m3ter_emulator: Any, client: M3terClient
) -> None:
    env = {"AIRFLOW_CONN_M3TER_DEFAULT": m3ter_emulator.connection_json()}
    first = airflow_env.dags_test(EXAMPLE, env=env, logical_date="2026-03-01T00:00:00+00:00")
    assert first.succeeded, first.output[-8000:]
    run_id = latest_run_id(airflow_env.home, EXAMPLE)
    returned = _returned(airflow_env.home, EXAMPLE, run_id)["sync_meters"]
    assert returned["summary"] == {"create": 3, "update": 0, "unchanged": 0, "delete": 0, "blocked": 0}
    assert returned["applied"]["created"] == ["api_calls", "data_transfer", "storage"]
    assert returned["dry_run"] is False
    assert "Meter sync plan: 3 create, 0 update, 0 unchanged, 0 delete, 0 blocked" in first.output

    # m3ter now holds exactly the YAML's meters, under the product.
    [product] = list(client.paginate("products"))
    stored = read_meters_by_code(client, ["api_calls", "data_transfer", "storage"])
    assert {m["productId"] for m in stored.values()} == {product["id"]}
    definitions = {d.code: d for d in load_meter_definitions("meters", base_dir=EXAMPLE_DAGS)}
    for code, meter in stored.items():
        assert [f["code"] for f in meter["dataFields"]] == [f["code"] for f in definitions[code].data_fields]
    assert stored["api_calls"]["customFields"] == {"billing_owner": "platform-team"}
    assert stored["api_calls"]["derivedFields"][0]["calculation"] == "requests - errors"
    # ...and the ingest task sent usage for those meters.
    ingested = m3ter_emulator.measurements()
    assert sorted(m["meter"] for m in ingested) == ["api_calls", "api_calls", "data_transfer", "storage"]
    # m3ter validates usage against the meters after accepting it: nothing was refused.
    m3ter_emulator.validate_now()
    failures = list(client.paginate("events", params={"eventName": "ingest.validation.failure"}))
    assert failures == [], failures

    writes = meter_writes(m3ter_emulator.stats())
    assert writes == 3
    second = airflow_env.dags_test(EXAMPLE, env=env, logical_date="2026-03-02T00:00:00+00:00")
    assert second.succeeded, second.output[-8000:]
    returned = _returned(airflow_env.home, EXAMPLE, latest_run_id(airflow_env.home, EXAMPLE))["sync_meters"]
    assert returned["unchanged"] == ["api_calls", "data_transfer", "storage"]
    assert returned["applied"]["writes"] == 0
    assert "Meter sync plan: 0 create, 0 update, 3 unchanged, 0 delete, 0 blocked" in second.output
    assert meter_writes(m3ter_emulator.stats()) == writes  # idempotent: not one write call


def test_dry_run_and_hard_failures_in_a_real_run(
    airflow_env: AirflowEnv, m3ter_emulator: Any, client: M3terClient
) -> None:
    product = client.request("POST", "products", json={"code": "api_platform", "name": "API platform"})
    for definition in load_meter_definitions("meters", base_dir=EXAMPLE_DAGS):
        body = {
            "code": definition.code,
            "name": definition.name,
            "productId": product["id"],
            "dataFields": list(definition.data_fields),
            "derivedFields": list(definition.derived_fields),
            "customFields": definition.custom_fields or {},
        }
        client.request("POST", "meters", json=body)
    api_calls = read_meters_by_code(client, ["api_calls"])["api_calls"]
    body = {
        "name": "Requests",
        "code": "api_requests_total",
        "meterId": api_calls["id"],
        "targetField": "requests",
        "aggregation": "SUM",
        "quantityPerUnit": 1,
        "rounding": "NONE",
        "unit": "{request}",
    }
    client.request("POST", "aggregations", json=body)
    before = m3ter_emulator.stats()

    result = airflow_env.dags_test(
        CHECKS, dags_folder=CHECK_DAGS, env={"AIRFLOW_CONN_M3TER_DEFAULT": m3ter_emulator.connection_json()}
    )

    run_id = latest_run_id(airflow_env.home, CHECKS)
    tis = task_instances(airflow_env.home, CHECKS, run_id)
    context = f"task instances: {tis}\noutput tail:\n{result.output[-8000:]}"
    after = m3ter_emulator.stats()
    # Nothing in this run changed m3ter: the only write attempt is the refused update.
    assert _successful_writes(after) == _successful_writes(before), context
    assert count(after, "PUT", "/meters/{id}", "400") - count(before, "PUT", "/meters/{id}", "400") == 1

    # Dry run: the plan says what apply would do, and the task succeeds.
    assert tis["dry_run"]["state"] == "success", context
    planned = _returned(airflow_env.home, CHECKS, run_id)["dry_run"]
    assert planned["dry_run"] is True
    assert planned["create"] == ["webhooks"]
    assert planned["update"] == {"api_calls": ['dataFields[requests].unit: "{request}" -> "count"']}
    assert "applied" not in planned
    assert "applying this plan takes 2 write(s)" in result.output, context

    # The three failures are final: one try each although retries=2.
    for task_id in ("breaks_configuration", "invalid_definitions", "delete_blocked"):
        assert tis[task_id]["state"] == "failed", context
        assert tis[task_id]["try_number"] == 1, context
        assert tis[task_id]["max_tries"] == 2, context
    output = result.output
    assert "m3ter refused to update meter 'api_calls' because the change breaks configuration" in output
    assert "dataFields[requests] is targeted by aggregation(s) 'api_requests_total'" in output
    assert "invalid.yaml: meter 'broken_meter': dataFields[requests].unit: is required" in output
    assert "invalid.yaml: meter 'broken_meter': dataFields[2fast].code" in output
    assert "invalid.yaml: meter 'broken_meter': dataFields[2fast].category" in output
    assert "'api_calls' is used by 'api_requests_total' (targetField requests)" in output
    assert m3ter_emulator.api_secret not in output
