"""Pre-flight: rows m3ter would accept now and reject later are row errors before anything is sent."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_m3ter.client.ingest import IngestRun
from airflow_provider_m3ter.client.ingest_progress import InvalidMeasurementsError
from airflow_provider_m3ter.client.preflight import Preflight, calculation_fields
from tests.preflight.conftest import good, setup_config

NOW = datetime(2024, 5, 20, tzinfo=timezone.utc)
LIST_ACCOUNTS = "GET /organizations/{orgId}/accounts"
LIST_METERS = "GET /organizations/{orgId}/meters"
INGEST = "POST /organizations/{orgId}/measurements"


def run(client: Any, rows: list[Any], unknown_accounts: str = "fail", **kwargs: Any):
    ingest = IngestRun(
        client,
        namespace="dag.task",
        now=lambda: NOW,
        preflight=Preflight(client, unknown_accounts=unknown_accounts),  # type: ignore[arg-type]
        **kwargs,
    )
    return ingest, ingest.run([(i, i + 1, m) for i, m in enumerate(rows, start=1)], "usage.jsonl")


def without(m: dict[str, Any], path: str) -> dict[str, Any]:
    name, _, key = path.partition(".")
    copy = json.loads(json.dumps(m))
    del copy[name][key]
    return copy


# (measurement, the field pre-flight names, a fragment of its reason)
KINDS = {
    "unknown meter": (good(1, meter="api_callz"), "meter", "no meter has the code 'api_callz'"),
    "field not on the meter": (good(2, what={"endpoint": "/x"}), "what.endpoint", "has no data field"),
    "wrong category": (good(3, who={"user": "a", "region": "eu"}, where={}), "who.region", "a WHERE field"),
    "measure missing": (without(good(4), "measure.errors"), "measure.errors", "is missing"),
    "derived field sent": (
        good(5, measure={"requests": 1, "errors": 0, "billable": 1}),
        "measure.billable",
        "is a derived field",
    ),
    "calculation input missing": (without(good(6), "where.region"), "measure.eu_requests", "needs region"),
    "field given twice": (good(7, cost={"requests": 1.0}), "measure.requests", "is also in cost"),
    "unknown account": (good(8, account="acmee"), "account", "m3ter would create a new account"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_stopped_before_any_ingest_request(kind, api, m3ter_emulator, client_factory):
    setup_config(api)
    bad, field, reason = KINDS[kind]
    with pytest.raises(InvalidMeasurementsError) as caught:
        run(client_factory(), [good(0), bad, good(9)])
    error = caught.value
    assert error.invalid_rows == 1
    assert {e.field for e in error.errors} >= {field}
    named = [e for e in error.errors if e.field == field]
    assert any(reason in e.reason for e in named), named
    named = named[:1]
    [named] = named
    assert (named.row, named.line, named.source) == (2, 3, "usage.jsonl")
    assert INGEST not in m3ter_emulator.stats()["requests"]  # nothing left the worker
    assert m3ter_emulator.measurements() == []


def test_without_preflight_m3ter_accepts_them_all_and_rejects_later(api, m3ter_emulator, client_factory):
    """The same rows reach m3ter without pre-flight: accepted now, failures (or a new account) later."""
    setup_config(api)
    rows = [bad for bad, _field, _reason in KINDS.values()]
    ingest = IngestRun(client_factory(), namespace="dag.task", now=lambda: NOW)
    assert ingest.run_measurements(rows).sent == len(rows)
    m3ter_emulator.validate_now()
    events = api.ok(api.get("events", params={"pageSize": 100}))["data"]
    failed = {e["m3terEvent"]["uid"] for e in events}
    stored = [m["uid"] for m in m3ter_emulator.measurements()]
    assert failed == set(stored[:-1])  # every row but the unknown account's fails validation ...
    codes = {a["code"] for a in api.ok(api.get("accounts", params={"pageSize": 100}))["data"]}
    assert "acmee" in codes  # ... and that one silently became a new account


def test_skip_sends_the_rest_and_dead_letters_each_rejection(api, m3ter_emulator, client_factory, tmp_path):
    setup_config(api)
    dead = tmp_path / "dead.jsonl"
    rows = [good(0), KINDS["unknown meter"][0], {"meter": "api_calls"}, good(3), KINDS["unknown account"][0]]
    _ingest, summary = run(client_factory(), rows, on_invalid="skip", dead_letter_path=str(dead))
    assert (summary.read, summary.valid, summary.invalid, summary.sent) == (5, 2, 3, 2)
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(letter["row"] for letter in letters) == [2, 3, 5]  # schema error kept with pre-flight ones
    by_row = {letter["row"]: letter for letter in letters}
    assert by_row[2]["errors"][0]["field"] == "meter"
    assert by_row[2]["line"] == 3
    assert by_row[2]["data"]["meter"] == "api_callz"
    assert by_row[5]["errors"][0]["field"] == "account"
    assert [m["ts"] for m in m3ter_emulator.measurements()] == [good(0)["ts"], good(3)["ts"]]
    assert summary.totals == {
        "api_calls": {"acme": {"measurements": 2, "measure.requests": [3, 2], "measure.errors": [1, 2]}}
    }


def test_unknown_accounts_allow_lets_m3ter_create_them(api, m3ter_emulator, client_factory):
    setup_config(api)
    _ingest, summary = run(client_factory(), [good(0, account="newco")], unknown_accounts="allow")
    assert summary.sent == 1
    assert LIST_ACCOUNTS not in m3ter_emulator.stats()["requests"]  # nothing to look up
    codes = {a["code"] for a in api.ok(api.get("accounts", params={"pageSize": 100}))["data"]}
    assert "newco" in codes


def test_one_config_call_per_100_codes_never_per_row(api, m3ter_emulator, client_factory):
    accounts = tuple(f"c{i:03d}" for i in range(250))
    setup_config(api, accounts)
    before = m3ter_emulator.stats()["requests"]
    rows = [good(i, account=accounts[i % 250]) for i in range(2000)]
    _ingest, summary = run(client_factory(), rows)
    assert summary.sent == 2000
    requests = m3ter_emulator.stats()["requests"]
    assert sum(requests[LIST_ACCOUNTS].values()) - sum(before.get(LIST_ACCOUNTS, {}).values()) == 3
    assert sum(requests[LIST_METERS].values()) - sum(before.get(LIST_METERS, {}).values()) == 1


def test_codes_with_commas_are_found_without_the_comma_filter(api, m3ter_emulator, client_factory):
    setup_config(api, ("acme", "a,b", "x,y,z"))
    _ingest, summary = run(client_factory(), [good(0), good(1, account="a,b"), good(2, account="x,y,z")])
    assert summary.sent == 3
    with pytest.raises(InvalidMeasurementsError) as caught:
        run(client_factory(), [good(0, account="a")])  # "a" is part of "a,b" but not an account
    assert caught.value.errors[0].field == "account"


def test_totals_per_meter_account_and_field(api, client_factory):
    setup_config(api)
    rows = [good(i, account="acme" if i % 2 else "beta", cost={"cpu": 0.1}) for i in range(10)]
    api.ok(
        api.put(
            f"meters/{api.ok(api.get('meters'))['data'][0]['id']}",
            json={
                **{k: v for k, v in api.ok(api.get("meters"))["data"][0].items()},
                "dataFields": [
                    *api.ok(api.get("meters"))["data"][0]["dataFields"],
                    {"category": "COST", "code": "cpu", "name": "CPU", "unit": "USD"},
                ],
            },
        )
    )
    _ingest, summary = run(client_factory(), rows)
    acme, beta = summary.totals["api_calls"]["acme"], summary.totals["api_calls"]["beta"]
    assert acme["measurements"] == beta["measurements"] == 5
    assert acme["measure.requests"] == [1 + 3 + 5 + 7 + 9, 5]
    assert beta["measure.errors"] == [0, 5]
    assert beta["cost.cpu"][0] == pytest.approx(0.5)
    assert "who.user" not in acme  # only numeric fields are totalled


@pytest.mark.parametrize(
    ("calculation", "expected"),
    [
        ("requests - errors", {"requests", "errors"}),
        ("region == 'requests' ? $x : errors", {"region", "$x", "errors"}),
        ('region == "it\\"s" ? a1 : 2b', {"region", "a1", "b"}),
        ("näme + _x9", {"näme", "_x9"}),
    ],
)
def test_calculation_fields(calculation, expected):
    assert calculation_fields(calculation) == expected


def test_preflight_refuses_bad_unknown_accounts_value(client_factory):
    with pytest.raises(ValueError, match="unknown_accounts"):
        Preflight(client_factory(), unknown_accounts="maybe")  # type: ignore[arg-type]


def test_identical_rows_survive_a_preflight_rejection(api, m3ter_emulator, client_factory):
    """The second preparation after a rejection derives the same uids: identical rows stay distinct."""
    setup_config(api)
    same = good(5)
    rows = [same, dict(same), KINDS["unknown meter"][0], dict(same), good(6, uid="own-uid")]
    _ingest, summary = run(client_factory(), rows, on_invalid="skip")
    assert (summary.read, summary.invalid, summary.sent) == (5, 1, 4)
    stored = m3ter_emulator.measurements()
    assert len(stored) == 4
    assert len({m["uid"] for m in stored}) == 4
    assert "own-uid" in {m["uid"] for m in stored}
    assert summary.totals["api_calls"]["acme"]["measure.requests"] == [5 * 3 + 6, 4]
