"""Measurement ingest: synchronous checks, de-duplication, skeleton accounts, validation events."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.emulator.api import Api, measurement


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def wait_for_events(api: Api, count: int, **params):
    deadline = time.monotonic() + 5
    while True:
        events = api.ok(api.get("events", params={"pageSize": 100, **params}))["data"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_accepts_and_stores_once_per_uid(api, m3ter_emulator):
    batch = [measurement(f"u-{i}") for i in range(5)] + [measurement(None), measurement(None)]
    response = api.ingest(batch)
    assert response.status_code == 200
    assert response.json() == {"result": "accepted"}
    assert api.ingest([*batch[:3], measurement("u-new")]).status_code == 200
    stats = m3ter_emulator.stats()
    assert stats["measurements_received"] == 11
    assert stats["duplicates_received"] == 3
    assert stats["measurements_stored"] == 8  # 5 uids + 2 without uid + u-new
    assert stats["ingest_requests"] == 2
    stored = m3ter_emulator.measurements()
    assert stored[:7] == batch  # exactly as sent, in arrival order
    assert stored[7]["uid"] == "u-new"
    assert m3ter_emulator.measurements(offset=7, limit=1) == [stored[7]]
    assert stats["requests"]["POST /organizations/{orgId}/measurements"] == {"200": 2}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"meter": None}, "measurements[1].meter: is required"),
        ({"account": 5}, "measurements[1].account: must be a string"),
        ({"ts": None}, "measurements[1].ts: is required"),
        ({"ts": "yesterday"}, "measurements[1].ts: must be an ISO-8601"),
        ({"ets": "2024-13-01T00:00:00Z"}, "measurements[1].ets"),
        ({"uid": "x" * 51}, "measurements[1].uid: must be at most 50"),
        ({"metadata": {"note": "n" * 257}}, "measurements[1].metadata.note: must be at most 256"),
        ({"measure": {"calls": "3"}}, "measurements[1].measure.calls: must be a number"),
        ({"measure": {"calls": True}}, "measurements[1].measure.calls: must be a number"),
        ({"who": {"user": 1}}, "measurements[1].who.user: must be a string"),
        ({"who": ["ann"]}, "measurements[1].who: must be an object"),
        ({"colour": "red"}, "measurements[1].colour: is not a measurement field"),
        ({"meter": " spaced"}, "measurements[1].meter: must have no control characters"),
        ({"account": "tab\there"}, "measurements[1].account"),
    ],
)
def test_schema_errors_name_index_and_field(api, m3ter_emulator, bad, expected):
    broken = measurement("bad")
    for key, value in bad.items():
        if value is None:
            broken.pop(key, None)
        else:
            broken[key] = value
    response = api.ingest([measurement("good"), broken])
    assert response.status_code == 400
    assert expected in response.json()["message"]
    assert m3ter_emulator.measurements() == []  # the whole request is refused


def test_request_level_errors(api, m3ter_emulator):
    cases = [
        (b"{nope", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (json.dumps({"measurements": []}).encode(), 400, "1 to 1000"),
        (
            json.dumps({"measurements": [measurement(f"u{i}") for i in range(1001)]}).encode(),
            400,
            "1 to 1000",
        ),
        (json.dumps({"measurements": [measurement()], "extra": 1}).encode(), 400, "extra"),
        (json.dumps({"items": [measurement()]}).encode(), 400, "items"),
        (b"{" + b" " * 512_000 + b"nope", 403, "512000"),  # size is checked before parsing
        # Python's json would read these; JSON (and m3ter) has no such numbers
        (json.dumps({"measurements": [measurement(measure={"calls": float("nan")})]}).encode(), 400, "NaN"),
        (
            json.dumps({"measurements": [measurement(measure={"calls": float("inf")})]}).encode(),
            400,
            "Infinity",
        ),
    ]
    for body, status, text in cases:
        response = api.post(
            "measurements", api="ingest", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, body[:40]
        assert text in response.json()["message"]
    assert m3ter_emulator.measurements() == []


def test_body_of_exactly_512000_bytes_is_accepted(api):
    rows = [measurement(f"pad-{i}", metadata={"pad": "p" * 200}) for i in range(1000)]
    body = json.dumps({"measurements": rows}, separators=(",", ":"))
    while len(body.encode()) > 511_000:
        rows.pop()
        body = json.dumps({"measurements": rows}, separators=(",", ":"))
    body = body[:-2] + " " * (512_000 - len(body.encode())) + body[-2:]  # JSON allows the padding
    assert len(body.encode()) == 512_000
    assert api.post("measurements", api="ingest", data=body.encode()).status_code == 200
    over = body[:-2] + " " + body[-2:]
    assert api.post("measurements", api="ingest", data=over.encode()).status_code == 403


def test_unknown_account_code_creates_skeleton_account(api):
    api.ingest([measurement("a", account="new-customer")])
    accounts = api.ok(api.get("accounts", params={"codes": "new-customer"}))["data"]
    assert len(accounts) == 1
    assert accounts[0]["code"] == "new-customer"


def test_listeners_are_separate_but_config_also_takes_measurements(api, m3ter_emulator):
    # One-host clients (the official SDK given one base_url) post measurements to the Config host.
    on_config = api.post("measurements", api="config", json={"measurements": [measurement()]})
    assert on_config.status_code == 200, on_config.text
    assert on_config.json() == {"result": "accepted"}
    assert m3ter_emulator.measurements() == [measurement()]
    bad = api.post("measurements", api="config", json={"measurements": [measurement(uid="x" * 51)]})
    assert bad.status_code == 400
    on_ingest = requests.get(
        api.url("meters", "ingest"), headers={"Authorization": f"Bearer {api.token()}"}, timeout=10
    )
    assert on_ingest.status_code == 404
    assert m3ter_emulator.measurements() == [measurement()]


def test_validation_failures_become_events(api, m3ter_emulator):
    api.create_meter("api_calls")
    batch = [
        measurement("ok-1"),
        measurement("undef-meter", meter="no_such_meter"),
        measurement("undef-field", who={"user": "ann", "region": "eu"}),
        measurement("missing", measure={"other": 1}),
        measurement("dup-field", what={"user": "x"}),
        measurement("ok-1"),
    ]
    assert api.ingest(batch).status_code == 200
    m3ter_emulator.validate_now()
    events = wait_for_events(api, 8, eventName="ingest.validation.failure")
    kinds = sorted((e["m3terEvent"]["uid"], e["m3terEvent"]["failureType"]) for e in events)
    assert kinds == [
        ("dup-field", "DuplicateField"),
        ("dup-field", "UndefinedField"),
        ("missing", "CalculationError"),  # the derived field "doubled" is calls*2
        ("missing", "MissingField"),
        ("missing", "UndefinedField"),
        ("ok-1", "DuplicateUid"),
        ("undef-field", "UndefinedField"),
        ("undef-meter", "UndefinedMeter"),
    ]
    event = events[0]
    assert set(event) == {"id", "eventName", "eventTime", "m3terEvent", "dtActioned"}
    detail = next(e for e in events if e["m3terEvent"]["failureType"] == "UndefinedMeter")["m3terEvent"]
    assert detail["meter"] == "no_such_meter"
    assert detail["account"] == "acme"
    assert api.ok(api.get(f"events/{event['id']}")) == event
    assert api.get("events/missing").status_code == 404
    first = api.ok(api.get("events", params={"pageSize": 4}))
    second = api.ok(api.get("events", params={"pageSize": 4, "nextToken": first["nextToken"]}))
    assert len(first["data"]) == 4
    assert len(second["data"]) == 4
    assert "nextToken" not in second
    assert api.ok(api.get("events", params={"eventName": "other.event"}))["data"] == []
    assert len(api.ok(api.get("events", params={"eventType": "ingest", "pageSize": 100}))["data"]) == 8


def test_validation_runs_asynchronously_after_the_call(api, m3ter_emulator):
    assert api.ingest([measurement("later", meter="ghost")]).status_code == 200
    events = wait_for_events(api, 1)
    assert [e["m3terEvent"]["failureType"] for e in events] == ["UndefinedMeter"]
