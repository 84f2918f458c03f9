"""Data Explorer usage query, the asynchronous meter checks behind it, and tampering with storage."""

from __future__ import annotations

import time

import pytest

from tests.emulator.api import Api, measurement

PERIOD = {"startDate": "2024-05-01T00:00:00Z", "endDate": "2024-05-02T00:00:00Z"}


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def query(api: Api, **body):
    return api.post("usage/query", json={**PERIOD, **body})


def m(uid: str, calls: float, account: str = "acme", ts: str = "2024-05-01T10:00:00Z", user: str = "ann"):
    return measurement(uid, account=account, ts=ts, who={"user": user}, measure={"calls": calls})


def totals_body(meter_id: str, **extra):
    return {
        "meterIds": [meter_id],
        "aggregations": [
            {"meterId": meter_id, "fieldCode": "calls", "fieldType": "MEASURE", "function": "SUM"},
            {"meterId": meter_id, "fieldCode": "calls", "fieldType": "MEASURE", "function": "COUNT"},
        ],
        "groups": [{"groupType": "ACCOUNT"}],
        **extra,
    }


def test_raw_rows_most_recent_first_with_limit_and_has_more(api, m3ter_emulator):
    meter = api.create_meter()
    rows = [m("a", 1), m("b", 2, account="beta"), m("c", 3), m("outside", 9, ts="2024-05-02T00:00:00Z")]
    assert api.ingest(rows).status_code == 200
    m3ter_emulator.validate_now()
    answer = api.ok(query(api))
    assert [row["uid"] for row in answer["data"]] == ["c", "b", "a"]  # endDate is exclusive
    assert answer["hasMoreData"] is False
    assert answer["data"][0]["meterId"] == meter["id"]
    assert answer["data"][0]["measure"] == {"calls": 3}
    limited = api.ok(query(api, limit=2))
    assert [row["uid"] for row in limited["data"]] == ["c", "b"]
    assert limited["hasMoreData"] is True
    beta = api.ok(api.get("accounts", params={"codes": "beta"}))["data"][0]
    only_beta = api.ok(query(api, accountIds=[beta["id"]]))
    assert [row["uid"] for row in only_beta["data"]] == ["b"]


def test_sum_and_count_grouped_by_account(api, m3ter_emulator):
    meter = api.create_meter()
    api.ingest([m("a", 1), m("b", 2.5, account="beta"), m("c", 3), m("d", 4, account="beta")])
    m3ter_emulator.validate_now()
    answer = api.ok(query(api, **totals_body(meter["id"])))
    by_account = {row["account"]: row for row in answer["data"]}
    assert by_account["acme"]["calls:SUM"] == 4
    assert by_account["acme"]["calls:COUNT"] == 2
    assert by_account["beta"]["calls:SUM"] == 6.5
    assert by_account["beta"]["meterId"] == meter["id"]
    assert by_account["beta"]["accountId"]
    assert [row["account"] for row in answer["data"]] == ["beta", "acme"]  # latest received group first


def test_other_functions_dimension_and_time_groups(api, m3ter_emulator):
    meter = api.create_meter()
    api.ingest(
        [
            m("a", 5, user="ann", ts="2024-05-01T01:10:00Z"),
            m("b", 1, user="bob", ts="2024-05-01T01:20:00Z"),
            m("c", 7, user="ann", ts="2024-05-01T02:00:00Z"),
        ]
    )
    m3ter_emulator.validate_now()
    mid = meter["id"]
    aggregations = [
        {"meterId": mid, "fieldCode": "calls", "fieldType": "MEASURE", "function": fn}
        for fn in ("MIN", "MAX", "MEAN", "LATEST")
    ] + [{"meterId": mid, "fieldCode": "user", "fieldType": "DIMENSION", "function": "UNIQUE"}]
    whole = api.ok(query(api, aggregations=aggregations))["data"]
    assert len(whole) == 1
    assert whole[0]["calls:MIN"] == 1
    assert whole[0]["calls:MAX"] == 7
    assert whole[0]["calls:MEAN"] == pytest.approx(13 / 3)
    assert whole[0]["calls:LATEST"] == 7
    assert whole[0]["user:UNIQUE"] == 2
    by_hour = api.ok(
        query(api, aggregations=aggregations[:1], groups=[{"groupType": "TIME", "frequency": "HOUR"}])
    )
    assert {(row["startDate"], row["calls:MIN"]) for row in by_hour["data"]} == {
        ("2024-05-01T01:00:00Z", 1),
        ("2024-05-01T02:00:00Z", 7),
    }
    by_user = api.ok(
        query(
            api,
            aggregations=aggregations[:1],
            groups=[{"groupType": "DIMENSION", "meterId": mid, "fieldCode": "user"}],
        )
    )
    assert {(row["user"], row["calls:MIN"]) for row in by_user["data"]} == {("ann", 5), ("bob", 1)}
    filtered = api.ok(query(api, dimensionFilters=[{"meterId": mid, "fieldCode": "user", "values": ["bob"]}]))
    assert [row["uid"] for row in filtered["data"]] == ["b"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"startDate": None}, "startDate: is required"),
        ({"endDate": "tomorrow"}, "endDate: must be an ISO-8601"),
        ({"endDate": "2024-04-01T00:00:00Z"}, "endDate: must be after startDate"),
        ({"limit": 0}, "limit: must be an integer from 1 to 20000"),
        ({"limit": 20001}, "limit"),
        ({"groups": [{"groupType": "ACCOUNT"}]}, "groups: grouping needs at least one aggregation"),
        ({"colour": 1}, "colour: is not a field"),
    ],
)
def test_refused_queries(api, body, expected):
    sent = {**PERIOD, **body}
    sent = {key: value for key, value in sent.items() if value is not None}
    response = api.post("usage/query", json=sent)
    assert response.status_code == 400
    assert expected in response.json()["message"]


def test_refused_aggregations(api):
    mid = api.create_meter()["id"]
    cases = [
        (
            {"meterId": mid, "fieldCode": "calls", "fieldType": "MEASURE", "function": "UNIQUE"},
            "MEASURE fields take",
        ),
        (
            {"meterId": mid, "fieldCode": "user", "fieldType": "DIMENSION", "function": "SUM"},
            "DIMENSION fields take",
        ),
        ({"meterId": mid, "fieldCode": "user", "fieldType": "MEASURE", "function": "SUM"}, "is a WHO field"),
        (
            {"meterId": mid, "fieldCode": "nope", "fieldType": "MEASURE", "function": "SUM"},
            "not a field of meter",
        ),
        (
            {"meterId": mid, "fieldCode": "doubled", "fieldType": "MEASURE", "function": "SUM"},
            "derived field",
        ),
        ({"meterId": "missing", "fieldCode": "calls", "fieldType": "MEASURE", "function": "SUM"}, "no meter"),
    ]
    for aggregation, expected in cases:
        response = query(api, aggregations=[aggregation])
        assert response.status_code == 400, aggregation
        assert expected in response.json()["message"]


def test_only_validated_measurements_that_passed_are_counted(api, m3ter_emulator):
    meter = api.create_meter()
    api.ingest([m("good", 2), measurement("bad", measure={"calls": 5, "doubled": 10}), m("good", 2)])
    m3ter_emulator.validate_now()
    answer = api.ok(query(api, **totals_body(meter["id"])))
    assert [(row["calls:SUM"], row["calls:COUNT"]) for row in answer["data"]] == [(2, 1)]


def test_measurements_are_invisible_until_validated(m3ter_emulator_factory):
    emulator = m3ter_emulator_factory(validation_delay=30)
    api = Api(emulator)
    api.create_meter()
    api.ingest([m("a", 1)])
    assert api.ok(query(api))["data"] == []
    emulator.validate_now()
    assert [row["uid"] for row in api.ok(query(api))["data"]] == ["a"]


def test_tamper_drops_and_alters_stored_measurements(api, m3ter_emulator):
    meter = api.create_meter()
    api.ingest([m("a", 1), m("b", 2), m("c", 3, account="beta")])
    m3ter_emulator.validate_now()
    assert m3ter_emulator.tamper({"uid": "a"}, drop=True) == 1
    assert m3ter_emulator.tamper({"uid": "c"}, set={"measure": {"calls": 30}}) == 1
    assert [row["uid"] for row in m3ter_emulator.measurements()] == ["b", "c"]
    answer = api.ok(query(api, **totals_body(meter["id"])))
    assert {row["account"]: row["calls:SUM"] for row in answer["data"]} == {"acme": 2, "beta": 30}
    assert m3ter_emulator.tamper({"uid": "zzz"}, drop=True) == 0


def test_data_explorer_rate_limit(api, m3ter_emulator):
    api.create_meter()
    m3ter_emulator.set_limits(enabled=True)
    statuses = [query(api).status_code for _ in range(12)]
    assert statuses[:10] == [200] * 10
    assert 429 in statuses[10:]
    assert m3ter_emulator.stats()["rate_limited"]["data_explorer"] >= 1
    time.sleep(1.1)  # one token back per second
    assert query(api).status_code == 200


def test_async_validation_of_derived_fields(api, m3ter_emulator):
    api.create_meter(
        "calc",
        dataFields=[
            {"category": "WHO", "code": "user", "name": "User"},
            {"category": "WHERE", "code": "region", "name": "Region"},
            {"category": "MEASURE", "code": "calls", "name": "Calls", "unit": "count"},
        ],
        derivedFields=[
            {
                "category": "MEASURE",
                "code": "tagged",
                "name": "T",
                "unit": "count",
                "calculation": "calls * (region == 'user' ? 2 : 1)",
            },
        ],
    )
    rows = [
        measurement("ok", meter="calc", where={"region": "eu"}),
        measurement("no-region", meter="calc"),  # the calculation needs region ('user' is a literal)
        measurement("sent-derived", meter="calc", where={"region": "eu"}, measure={"calls": 1, "tagged": 2}),
    ]
    assert api.ingest(rows).status_code == 200
    m3ter_emulator.validate_now()
    events = api.ok(api.get("events", params={"pageSize": 100}))["data"]
    kinds = sorted((e["m3terEvent"]["uid"], e["m3terEvent"]["failureType"]) for e in events)
    assert kinds == [("no-region", "CalculationError"), ("sent-derived", "UndefinedField")]
