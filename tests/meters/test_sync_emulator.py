"""Plan and apply against the emulator over real HTTP: every case the sync claims to handle."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_m3ter.client import M3terClient
from airflow_provider_m3ter.client.errors import M3terBreaksConfigurationError, M3terFinalError
from airflow_provider_m3ter.client.meter_apply import apply_meter_plan
from airflow_provider_m3ter.client.meter_definitions import MeterDefinitionError, load_meter_definitions
from airflow_provider_m3ter.client.meter_diff import SERVER_FIELDS
from airflow_provider_m3ter.client.meter_sync import (
    MeterBreaksConfigurationError,
    MeterDeleteBlockedError,
    MeterSyncConflictError,
    plan_meter_sync,
    read_meters_by_code,
)
from tests.meters.conftest import count, meter_writes


def _meter(code: str, unit: str = "{request}", **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "code": code,
        "name": code.replace("_", " ").title(),
        "dataFields": [
            {"category": "WHO", "code": "tier", "name": "Tier"},
            {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": unit},
        ],
    }
    raw.update(overrides)
    return raw


def _sync(client: Any, *raw: dict[str, Any], delete_missing: bool = False):
    plan = plan_meter_sync(client, load_meter_definitions(list(raw)), delete_missing=delete_missing)
    return plan, apply_meter_plan(client, plan)


def _aggregation(client: M3terClient, meter_id: str, code: str, target: str) -> dict[str, Any]:
    body = {
        "name": code,
        "code": code,
        "meterId": meter_id,
        "targetField": target,
        "aggregation": "SUM",
        "quantityPerUnit": 1,
        "rounding": "NONE",
        "unit": "{request}",
    }
    return client.request("POST", "aggregations", json=body)


def _console_edit(client: M3terClient, meter: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Someone else updates the meter (as the m3ter Console would), bumping its version."""
    body = {k: v for k, v in meter.items() if k not in SERVER_FIELDS}
    body.update(changes, version=meter["version"])
    return client.request("PUT", f"meters/{meter['id']}", json=body)


class RecordingClient:
    """The real client, recording each call; with ``interfere`` another writer changes the meter
    just before each of our PUTs (a concurrent Console edit that always wins the race)."""

    def __init__(self, client: M3terClient, *, interfere: bool = False) -> None:
        self.client = client
        self.interfere = interfere
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path))
        if self.interfere and method == "PUT" and path.startswith("meters/"):
            current = self.client.request("GET", path)
            _console_edit(self.client, current, customFields={"edits": len(self.calls)})
        return self.client.request(method, path, **kwargs)

    def paginate(self, path: str, **kwargs: Any) -> Any:
        self.calls.append(("LIST", path))
        return self.client.paginate(path, **kwargs)


def test_create_unchanged_update_and_custom_fields(client: M3terClient, m3ter_emulator: Any) -> None:
    product = client.request("POST", "products", json={"code": "api_platform", "name": "API platform"})
    api = _meter("api_calls", unit="count", product="api_platform")
    storage = _meter(
        "storage",
        dataFields=[{"category": "MEASURE", "code": "gb_hours", "name": "GB hours", "unit": "GBy.h"}],
        derivedFields=[
            {
                "category": "MEASURE",
                "code": "tb_hours",
                "name": "TB hours",
                "unit": "TBy.h",
                "calculation": "gb_hours / 1000",
            }
        ],
    )
    plan = plan_meter_sync(client, load_meter_definitions([api, storage]))
    assert plan.summary() == {"create": 2, "update": 0, "unchanged": 0, "delete": 0, "blocked": 0}
    assert plan.of("create")[0].changes == [
        "new meter: 2 data field(s), 0 derived field(s), product api_platform"
    ]
    stats = m3ter_emulator.stats()
    # Planning is one filtered meters call and one products call, nothing else.
    assert count(stats, "GET", "/meters") == 1
    assert count(stats, "GET", "/products") == 1
    assert meter_writes(stats) == 0
    result = apply_meter_plan(client, plan)
    assert result.created == ["api_calls", "storage"]
    assert result.writes == 2
    stored = read_meters_by_code(client, ["api_calls", "storage"])
    assert stored["api_calls"]["productId"] == product["id"]
    assert "productId" not in stored["storage"] or not stored["storage"]["productId"]
    assert stored["storage"]["derivedFields"][0]["calculation"] == "gb_hours / 1000"

    # Same definitions again: everything unchanged, zero writes.
    before = meter_writes(m3ter_emulator.stats())
    plan, result = _sync(client, api, storage)
    assert [c.action for c in plan.changes] == ["unchanged", "unchanged"]
    assert result.writes == 0
    assert meter_writes(m3ter_emulator.stats()) == before

    # Someone adds a custom field in the Console; the definitions change a unit and add a field.
    _console_edit(client, stored["api_calls"], customFields={"owner": "billing"})
    api["dataFields"][1]["unit"] = "{request}"
    api["dataFields"].append({"category": "WHERE", "code": "region", "name": "Region"})
    plan, result = _sync(client, api, storage)
    [update] = plan.of("update")
    assert update.changes == [
        "dataFields[region]: added",
        'dataFields[requests].unit: "count" -> "{request}"',
    ]
    assert plan.to_dict()["update"] == {"api_calls": update.changes}
    assert result.updated == ["api_calls"]
    now = read_meters_by_code(client, ["api_calls"])["api_calls"]
    assert now["customFields"] == {"owner": "billing"}  # not managed by the definition: preserved
    assert now["version"] == stored["api_calls"]["version"] + 2
    assert {f["code"]: f.get("unit") for f in now["dataFields"]} == {
        "tier": None,
        "requests": "{request}",
        "region": None,
    }

    # Once the definition has customFields, it owns them.
    api["customFields"] = {"team": "platform"}
    plan, result = _sync(client, api, storage)
    assert plan.of("update")[0].changes == [
        'customFields.owner: "billing" -> null',
        'customFields.team: null -> "platform"',
    ]
    assert read_meters_by_code(client, ["api_calls"])["api_calls"]["customFields"] == {"team": "platform"}
    assert _sync(client, api, storage)[1].writes == 0


def test_unknown_product_code_is_a_definition_error(client: M3terClient, m3ter_emulator: Any) -> None:
    with pytest.raises(MeterDefinitionError) as exc:
        plan_meter_sync(client, load_meter_definitions([_meter("a", product="nope")]))
    [problem] = exc.value.problems
    assert (problem.source, problem.meter, problem.field) == ("definitions[0]", "a", "product")
    assert "'nope'" in problem.reason
    assert count(m3ter_emulator.stats(), "GET", "/meters") == 0  # failed before reading meters


def test_version_conflict_is_replanned_once(client: M3terClient, m3ter_emulator: Any) -> None:
    _sync(client, _meter("api_calls"))
    renamed = _meter("api_calls", name="API requests")
    plan = plan_meter_sync(client, load_meter_definitions([renamed]))
    # Between plan and apply, someone else edits the meter: the planned version is now stale.
    _console_edit(client, plan.changes[0].current, customFields={"owner": "billing"})
    result = apply_meter_plan(client, plan)
    assert result.updated == ["api_calls"]
    assert result.replanned == ["api_calls"]
    stats = m3ter_emulator.stats()
    assert count(stats, "PUT", "/meters/{id}", "409") == 1
    assert count(stats, "GET", "/meters/{id}") == 1  # the one re-read
    now = read_meters_by_code(client, ["api_calls"])["api_calls"]
    # The retry was planned against the re-read meter, so the concurrent custom field survived.
    assert now["name"] == "API requests"
    assert now["customFields"] == {"owner": "billing"}

    # The concurrent writer made exactly our change: nothing left to write after the re-plan.
    again = _meter("api_calls", name="API calls v2")
    plan = plan_meter_sync(client, load_meter_definitions([again]))
    _console_edit(client, plan.changes[0].current, name="API calls v2")
    result = apply_meter_plan(client, plan)
    assert result.converged == ["api_calls"]
    assert result.writes == 0


def test_conflict_twice_fails_clearly(client: M3terClient, m3ter_emulator: Any) -> None:
    _sync(client, _meter("api_calls"))
    writer = RecordingClient(client, interfere=True)
    plan = plan_meter_sync(writer, load_meter_definitions([_meter("api_calls", name="Renamed")]))
    with pytest.raises(MeterSyncConflictError) as exc:
        apply_meter_plan(writer, plan)
    assert isinstance(exc.value, M3terFinalError)
    assert exc.value.status == 409
    assert "meter 'api_calls' changed again while it was being updated" in str(exc.value)
    assert count(m3ter_emulator.stats(), "PUT", "/meters/{id}", "409") == 2


def test_create_racing_a_concurrent_create_becomes_an_update(
    client: M3terClient, m3ter_emulator: Any
) -> None:
    plan = plan_meter_sync(client, load_meter_definitions([_meter("api_calls", name="Ours")]))
    _sync(client, _meter("api_calls", name="Theirs"))  # created by someone else after our plan
    result = apply_meter_plan(client, plan)
    assert result.replanned == ["api_calls"]
    assert result.updated == ["api_calls"]
    assert not result.created
    assert read_meters_by_code(client, ["api_calls"])["api_calls"]["name"] == "Ours"
    assert count(m3ter_emulator.stats(), "POST", "/meters", "400") == 1


def test_breaks_configuration_names_meter_field_and_aggregation(client: M3terClient) -> None:
    _sync(client, _meter("api_calls"))
    meter = read_meters_by_code(client, ["api_calls"])["api_calls"]
    _aggregation(client, meter["id"], "api_requests_total", "requests")
    _aggregation(client, meter["id"], "tier_count", "tier")
    without_requests = _meter("api_calls", dataFields=[{"category": "WHO", "code": "tier", "name": "Tier"}])
    with pytest.raises(MeterBreaksConfigurationError) as exc:
        _sync(client, without_requests)
    error = exc.value
    assert isinstance(error, M3terBreaksConfigurationError)
    assert error.status == 400
    text = str(error)
    assert text.startswith(
        "m3ter refused to update meter 'api_calls' because the change breaks configuration"
    )
    assert (
        "dataFields[requests] is targeted by aggregation(s) 'api_requests_total' (targetField requests)"
        in text
    )
    assert "tier_count" not in text  # only the aggregations that target the removed field

    # Through the hook's boundary it is a final task failure with the same message.
    from airflow_provider_m3ter.compat import AirflowFailException
    from airflow_provider_m3ter.exceptions import to_airflow_failure

    failure = to_airflow_failure(error)
    assert isinstance(failure, AirflowFailException)
    assert "api_requests_total" in str(failure)
    assert "dataFields[requests]" in str(failure)


def test_delete_missing_blocked_by_an_aggregation_then_allowed(
    client: M3terClient, m3ter_emulator: Any
) -> None:
    _sync(client, _meter("keep"), _meter("old_unused"), _meter("old_used"))
    used = read_meters_by_code(client, ["old_used"])["old_used"]
    aggregation = _aggregation(client, used["id"], "legacy_sum", "requests")
    before = m3ter_emulator.stats()

    # Without delete_missing the other meters are neither read nor touched.
    plan = plan_meter_sync(client, load_meter_definitions([_meter("keep")]))
    assert [(c.code, c.action) for c in plan.changes] == [("keep", "unchanged")]

    definitions = load_meter_definitions([_meter("keep"), _meter("new_one")])
    plan = plan_meter_sync(client, definitions, delete_missing=True)
    assert [(c.code, c.action) for c in plan.changes] == [
        ("keep", "unchanged"),
        ("new_one", "create"),
        ("old_unused", "delete"),
        ("old_used", "blocked"),
    ]
    assert plan.to_dict()["blocked"] == {"old_used": ["'legacy_sum' (targetField requests)"]}
    with pytest.raises(MeterDeleteBlockedError) as exc:
        apply_meter_plan(client, plan)
    assert "'old_used' is used by 'legacy_sum' (targetField requests)" in str(exc.value)
    assert "nothing was changed" in str(exc.value)
    after = m3ter_emulator.stats()
    assert meter_writes(after) == meter_writes(before)  # refused before any write
    # The whole list once (filter-free), the aggregations once, per plan with delete_missing.
    assert count(after, "GET", "/aggregations") - count(before, "GET", "/aggregations") == 1

    client.request("DELETE", f"aggregations/{aggregation['id']}")
    recorder = RecordingClient(client)
    plan = plan_meter_sync(recorder, definitions, delete_missing=True)
    result = apply_meter_plan(recorder, plan)
    assert result.created == ["new_one"]
    assert sorted(result.deleted) == ["old_unused", "old_used"]
    writes = [call for call in recorder.calls if call[0] in ("POST", "PUT", "DELETE")]
    assert writes[0] == ("POST", "meters")
    assert {m for m, _ in writes[1:]} == {"DELETE"}
    remaining = {m["code"] for m in client.paginate("meters")}
    assert remaining == {"keep", "new_one"}


def test_500_meters_plan_in_list_pages_and_second_apply_writes_nothing(
    client: M3terClient, m3ter_emulator: Any
) -> None:
    meters = [_meter(f"meter_{i:03d}") for i in range(500)]
    definitions = load_meter_definitions(meters)
    plan = plan_meter_sync(client, definitions)
    assert len(plan.of("create")) == 500
    result = apply_meter_plan(client, plan)
    assert result.writes == 500

    def requests_made(stats: dict[str, Any]) -> int:
        return sum(sum(by_status.values()) for by_status in stats["requests"].values())

    before = m3ter_emulator.stats()
    plan = plan_meter_sync(client, definitions)
    after = m3ter_emulator.stats()
    assert len(plan.of("unchanged")) == 500
    # 500 codes, 100 per filtered list call: exactly 5 requests in all, no per-meter GET.
    assert count(after, "GET", "/meters") - count(before, "GET", "/meters") == 5
    assert requests_made(after) - requests_made(before) == 5

    result = apply_meter_plan(client, plan)
    assert result.writes == 0
    assert meter_writes(m3ter_emulator.stats()) == meter_writes(after)

    # With delete_missing the whole list is read: still 5 pages of 100, and nothing to delete.
    plan = plan_meter_sync(client, definitions, delete_missing=True)
    final = m3ter_emulator.stats()
    assert requests_made(final) - requests_made(after) == 5
    assert plan.writes == 0
