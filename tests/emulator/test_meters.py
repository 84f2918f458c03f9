"""Meters: create/validate, list with paging and filters, retrieve, update with versions, delete."""

from __future__ import annotations

import copy

import pytest

from tests.emulator.api import Api, meter_body


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def test_create_and_retrieve_adds_server_fields(api):
    created = api.create_meter("api_calls", customFields={"team": "core"})
    assert created["version"] == 1
    for field in ("id", "dtCreated", "dtLastModified", "createdBy", "lastModifiedBy"):
        assert created[field]
    assert created["customFields"] == {"team": "core"}
    assert api.ok(api.get(f"meters/{created['id']}")) == created
    assert api.get("meters/00000000-0000-0000-0000-00000000dead").status_code == 404


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda b: b.pop("code"), "code: is required"),
        (lambda b: b.update(code=" lead"), "body.code"),
        (lambda b: b.update(code="x" * 81), "at most 80"),
        (lambda b: b.update(name=""), "body.name"),
        (lambda b: b.update(dataFields=[]), "dataFields: must have at least 1"),
        (
            lambda b: b.update(dataFields=[dict(b["dataFields"][0], code=f"f{i}") for i in range(16)]),
            "at most 15",
        ),
        (lambda b: b.pop("derivedFields"), "derivedFields: is required"),
        (lambda b: b["dataFields"][0].update(category="SIZE"), "dataFields[0].category: must be one of"),
        (lambda b: b["dataFields"][0].update(code="1abc"), "dataFields[0].code"),
        (lambda b: b["dataFields"][1].pop("unit"), "dataFields[1].unit: is required for MEASURE"),
        (lambda b: b["derivedFields"][0].pop("calculation"), "derivedFields[0].calculation: is required"),
        (lambda b: b["derivedFields"][0].update(code="calls"), "'calls' is used by more than one field"),
        (lambda b: b.update(productId="nope"), "productId"),
    ],
)
def test_create_refuses_invalid_bodies(api, change, expected):
    body = meter_body()
    change(body)
    response = api.post("meters", json=body)
    assert response.status_code == 400
    assert set(response.json()) == {"message"}
    assert expected in response.json()["message"]
    assert api.ok(api.get("meters"))["data"] == []


def test_non_json_body_and_duplicate_code(api):
    broken = api.post("meters", data="{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["message"]
    not_a_number = b'{"code": "nan", "name": "N", "dataFields": [], "derivedFields": [], "version": NaN}'
    refused = api.post("meters", data=not_a_number, headers={"Content-Type": "application/json"})
    assert refused.status_code == 400
    assert "NaN is not a JSON value" in refused.json()["message"]
    api.create_meter("dup")
    again = api.post("meters", json=meter_body("dup"))
    assert again.status_code == 400
    assert "already exists" in again.json()["message"]


def test_optional_fields_sent_as_null_count_as_absent(api):
    created = api.create_meter("nulls", productId=None, groupId=None)
    assert "productId" not in created
    refused = api.post("meters", json=meter_body("nulls2", name=None))
    assert refused.status_code == 400
    assert "body.name" in refused.json()["message"]


def test_unicode_field_codes_follow_the_letter_pattern(api):
    body = meter_body("unicode")
    body["dataFields"][0]["code"] = "Benutzer_ü$1"
    assert api.post("meters", json=body).status_code == 200


def test_list_newest_first_with_paging_filters_and_page_size_bounds(api):
    ids = [api.create_meter(f"m{i}")["id"] for i in range(7)]
    seen, token, pages = [], None, 0
    while True:
        params = {"pageSize": 3, **({"nextToken": token} if token else {})}
        page = api.ok(api.get("meters", params=params))
        seen += [m["id"] for m in page["data"]]
        pages += 1
        token = page.get("nextToken")
        if token is None:
            break
        api.create_meter(f"late{pages}")  # created between pages: must not shift the listing
    assert seen == list(reversed(ids))
    assert pages == 3
    repeated = api.ok(api.get("meters", params=[("codes", "m1"), ("codes", "m3"), ("codes", "zz")]))["data"]
    assert [m["code"] for m in repeated] == ["m3", "m1"]
    # the spec's filters are form/explode: each value is one whole code, commas included
    assert api.ok(api.get("meters", params={"codes": "m1,m3"}))["data"] == []
    by_id = api.ok(api.get("meters", params={"ids": ids[2]}))["data"]
    assert [m["code"] for m in by_id] == ["m2"]
    for bad in (0, 101, "x"):
        response = api.get("meters", params={"pageSize": bad})
        assert response.status_code == 400
        assert "pageSize" in response.json()["message"]
    assert api.get("meters", params={"nextToken": "garbage"}).status_code == 400
    assert len(api.ok(api.get("meters", params={"pageSize": 100}))["data"]) == 9
    api.create_meter("m1,m3")
    comma = api.ok(api.get("meters", params={"codes": "m1,m3"}))["data"]
    assert [m["code"] for m in comma] == ["m1,m3"]


def test_put_replaces_whole_entity_and_checks_version(api):
    created = api.create_meter("put_me", customFields={"team": "core"})
    body = meter_body("put_me", name="Renamed", version=1)
    updated = api.ok(api.put(f"meters/{created['id']}", json=body))
    assert updated["version"] == 2
    assert updated["name"] == "Renamed"
    assert "customFields" not in updated  # PUT replaces: omitted custom fields are gone
    assert updated["dtCreated"] == created["dtCreated"]
    assert updated["id"] == created["id"]
    stale = api.put(f"meters/{created['id']}", json=dict(body, version=1))
    assert stale.status_code == 409
    assert "Version conflict" in stale.json()["message"]
    missing = api.put(f"meters/{created['id']}", json=meter_body("put_me"))
    assert missing.status_code == 400
    assert "version" in missing.json()["message"]
    assert api.ok(api.get(f"meters/{created['id']}"))["version"] == 2
    assert api.put("meters/00000000-0000-0000-0000-00000000dead", json=body).status_code == 404


def test_update_that_drops_an_aggregated_field_breaks_configuration(api):
    meter = api.create_meter("agg_meter")
    aggregation = api.ok(
        api.post(
            "aggregations",
            json={
                "name": "Calls",
                "meterId": meter["id"],
                "targetField": "calls",
                "aggregation": "SUM",
                "rounding": "NONE",
                "quantityPerUnit": 1,
                "unit": "count",
            },
        )
    )
    body = meter_body("agg_meter", version=1)
    body["dataFields"] = [f for f in body["dataFields"] if f["code"] != "calls"]
    body["derivedFields"] = []
    refused = api.put(f"meters/{meter['id']}", json=body)
    assert refused.status_code == 400
    message = refused.json()["message"]
    assert "breaks configuration" in message
    assert m3ter_secret_free(message, api)
    keeps_field = copy.deepcopy(meter_body("agg_meter", version=1))
    keeps_field["derivedFields"] = []
    assert api.put(f"meters/{meter['id']}", json=keeps_field).status_code == 200
    assert api.delete(f"meters/{meter['id']}").status_code == 400
    assert api.delete(f"aggregations/{aggregation['id']}").status_code == 200
    deleted = api.delete(f"meters/{meter['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["code"] == "agg_meter"
    assert api.get(f"meters/{meter['id']}").status_code == 404


def m3ter_secret_free(text: str, api: Api) -> bool:
    return api.emu.api_secret not in text and api.token() not in text
