"""M3terSyncMetersOperator in real ``airflow dags test`` runs against the emulator (three runs in all).

1. The example DAG on an empty organization: product ensured, three meters created from YAML, usage
   ingested for them. 2. The example DAG again: the plan is all "unchanged" and no write is made.
3. A check DAG: a dry run (zero writes) and the three hard failures (breaks configuration, invalid
   definitions, blocked delete), each failing on its first try although retries are set; then an
   update, an update that meets a concurrent edit (409, re-read, re-plan once) and a delete_missing
   sync that deletes an unused meter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_m3ter.client import M3terClient
from airflow_provider_m3ter.client.meter_definitions import load_meter_definitions
from airflow_provider_m3ter.client.meter_diff import SERVER_FIELDS
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


def test_every_sync_case_in_one_real_run(
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
    legacy = {
        "code": "legacy_events",
        "name": "Legacy events",
        "dataFields": [{"category": "MEASURE", "code": "events", "name": "Events", "unit": "{event}"}],
        "derivedFields": [],
    }
    client.request("POST", "meters", json=legacy)
    stored = read_meters_by_code(client, ["api_calls", "data_transfer", "storage", "legacy_events"])
    # A Console edit the definitions do not manage: the update must keep it.
    transfer = {k: v for k, v in stored["data_transfer"].items() if k not in SERVER_FIELDS}
    transfer.update(customFields={"cost_center": "network"}, version=stored["data_transfer"]["version"])
    client.request("PUT", f"meters/{stored['data_transfer']['id']}", json=transfer)
    body = {
        "name": "Requests",
        "code": "api_requests_total",
        "meterId": stored["api_calls"]["id"],
        "targetField": "requests",
        "aggregation": "SUM",
        "quantityPerUnit": 1,
        "rounding": "NONE",
        "unit": "{request}",
    }
    client.request("POST", "aggregations", json=body)
    before = read_meters_by_code(client, ["api_calls", "data_transfer", "storage", "legacy_events"])
    stats_before = m3ter_emulator.stats()

    result = airflow_env.dags_test(
        CHECKS, dags_folder=CHECK_DAGS, env={"AIRFLOW_CONN_M3TER_DEFAULT": m3ter_emulator.connection_json()}
    )

    run_id = latest_run_id(airflow_env.home, CHECKS)
    tis = task_instances(airflow_env.home, CHECKS, run_id)
    returned = _returned(airflow_env.home, CHECKS, run_id)
    context = f"task instances: {tis}\noutput tail:\n{result.output[-8000:]}"
    output = result.output
    stats_after = m3ter_emulator.stats()

    def delta(method: str, route: str, status: str | None = None) -> int:
        return count(stats_after, method, route, status) - count(stats_before, method, route, status)

    # Each task ran exactly once: failures are final although retries=2, the rest succeeded.
    assert {task_id: (ti["state"], ti["try_number"], ti["max_tries"]) for task_id, ti in tis.items()} == {
        "dry_run": ("success", 1, 2),
        "breaks_configuration": ("failed", 1, 2),
        "invalid_definitions": ("failed", 1, 2),
        "delete_blocked": ("failed", 1, 2),
        "update": ("success", 1, 2),
        "update_after_conflict": ("success", 1, 2),
        "delete_unused": ("success", 1, 2),
    }, context
    # Every write of the run, by outcome: the refused update (400), the concurrent edit and the two
    # updates (200), the stale write (409), the one delete. No create, and nothing else.
    assert delta("PUT", "/meters/{id}", "400") == 1, context
    assert delta("PUT", "/meters/{id}", "409") == 1, context
    assert delta("PUT", "/meters/{id}", "200") == 3, context
    assert delta("PUT", "/meters/{id}") == 5, context
    assert delta("DELETE", "/meters/{id}") == delta("DELETE", "/meters/{id}", "200") == 1, context
    assert delta("POST", "/meters") == 0, context
    assert _successful_writes(stats_after) - _successful_writes(stats_before) == 4, context
    assert delta("GET", "/meters/{id}") == 1, context  # only the re-read after the 409

    # Dry run: the plan says what apply would do, and nothing is written.
    planned = returned["dry_run"]
    assert planned["dry_run"] is True
    assert planned["create"] == ["webhooks"]
    assert planned["update"] == {"api_calls": ['dataFields[requests].unit: "{request}" -> "count"']}
    assert "applied" not in planned
    assert "applying this plan takes 2 write(s)" in output, context

    # Breaks configuration: m3ter's 400 names the meter, the removed field and the aggregation.
    assert "m3ter refused to update meter 'api_calls' because the change breaks configuration" in output
    assert "dataFields[requests] is targeted by aggregation(s) 'api_requests_total'" in output
    # Invalid definitions: every problem at once, each naming file, meter and field.
    assert "invalid.yaml: meter 'broken_meter': dataFields[requests].unit: is required" in output
    assert "invalid.yaml: meter 'broken_meter': dataFields[2fast].code" in output
    assert "invalid.yaml: meter 'broken_meter': dataFields[2fast].category" in output
    # Blocked delete: refused before any write, naming the aggregation, although legacy_events
    # (also missing) could have gone; it was still there for delete_unused, which ran later.
    assert (
        "delete_missing would delete 1 meter(s) that aggregations still use, so nothing was changed" in output
    )
    assert "'api_calls' is used by 'api_requests_total' (targetField requests)" in output
    for task_id in ("breaks_configuration", "invalid_definitions", "delete_blocked"):
        assert task_id not in returned, context  # a failed task returns nothing

    after = read_meters_by_code(client, ["api_calls", "data_transfer", "storage", "legacy_events"])
    # Update: the changed fields, sent as the whole meter with its version; the rest kept.
    assert returned["update"]["update"] == {
        "data_transfer": [
            'dataFields[direction].name: "Direction (ingress or egress)" -> "Traffic direction"',
            'derivedFields[gigabytes].calculation: "bytes / 1000000000" -> "bytes / 1073741824"',
        ]
    }, returned["update"]
    assert returned["update"]["applied"]["updated"] == ["data_transfer"]
    transfer = after["data_transfer"]
    assert transfer["id"] == before["data_transfer"]["id"]
    assert transfer["version"] == before["data_transfer"]["version"] + 1
    assert {f["code"]: f["name"] for f in transfer["dataFields"]} == {
        "region": "Region",
        "direction": "Traffic direction",
        "bytes": "Bytes transferred",
    }
    assert transfer["derivedFields"][0]["calculation"] == "bytes / 1073741824"
    assert transfer["productId"] == product["id"]
    assert transfer["customFields"] == {"cost_center": "network"}  # unmanaged: preserved

    # Conflict: the planned version went stale, the meter was re-read and re-planned once.
    conflict = returned["update_after_conflict"]
    assert conflict["update"] == {"storage": ['name: "Object storage" -> "Object storage (all classes)"']}
    assert conflict["applied"]["replanned"] == ["storage"]
    assert conflict["applied"]["updated"] == ["storage"]
    assert "Meter storage changed concurrently" in output, context
    storage = after["storage"]
    assert storage["version"] == before["storage"]["version"] + 2  # the other writer's, then ours
    assert storage["name"] == "Object storage (all classes)"
    assert storage["customFields"] == {"edited_in": "console"}  # the concurrent edit survived

    # delete_missing: the unused meter is deleted, the aggregated one kept, the rest untouched.
    deleted = returned["delete_unused"]
    assert deleted["delete"] == ["legacy_events"]
    assert deleted["blocked"] == {}
    assert deleted["unchanged"] == ["api_calls", "data_transfer", "storage"]
    assert deleted["applied"]["deleted"] == ["legacy_events"]
    assert deleted["applied"]["writes"] == 1
    assert "legacy_events" not in after
    assert after["api_calls"] == before["api_calls"]  # every failed task left it as it was
    assert {m["code"] for m in client.paginate("meters")} == {"api_calls", "data_transfer", "storage"}
    [aggregation] = list(client.paginate("aggregations"))
    assert aggregation["meterId"] == after["api_calls"]["id"]
    assert m3ter_emulator.api_secret not in output
