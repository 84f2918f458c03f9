"""Accounts, aggregations, products and plans."""

from __future__ import annotations

import pytest

from tests.emulator.api import Api

TEMPLATE_ID = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def test_accounts_create_list_filter_retrieve(api):
    acme = api.ok(
        api.post("accounts", json={"code": "acme", "name": "Acme", "emailAddress": "ops@acme.test"})
    )
    api.ok(api.post("accounts", json={"code": "zeta", "name": "Zeta", "emailAddress": "z@zeta.test"}))
    assert api.ok(api.get(f"accounts/{acme['id']}"))["code"] == "acme"
    listed = api.ok(api.get("accounts", params={"codes": "acme"}))["data"]
    assert [a["id"] for a in listed] == [acme["id"]]
    assert [a["code"] for a in api.ok(api.get("accounts"))["data"]] == ["zeta", "acme"]
    bad_email = api.post("accounts", json={"code": "x", "name": "X", "emailAddress": "not-an-email"})
    assert bad_email.status_code == 400
    assert "emailAddress" in bad_email.json()["message"]
    duplicate = api.post("accounts", json={"code": "acme", "name": "Again", "emailAddress": "a@b.test"})
    assert duplicate.status_code == 400
    assert api.get("accounts/missing").status_code == 404


def test_aggregation_target_field_must_belong_to_the_meter(api):
    meter = api.create_meter("agg")
    body = {
        "name": "Users",
        "meterId": meter["id"],
        "targetField": "nope",
        "aggregation": "UNIQUE",
        "rounding": "NONE",
        "quantityPerUnit": 1,
        "unit": "users",
    }
    refused = api.post("aggregations", json=body)
    assert refused.status_code == 400
    assert "targetField" in refused.json()["message"]
    assert api.post("aggregations", json=dict(body, aggregation="AVERAGE")).status_code == 400
    assert api.post("aggregations", json=dict(body, meterId="x" * 36)).status_code == 400
    created = api.ok(api.post("aggregations", json=dict(body, targetField="user", code="users")))
    assert created["meterId"] == meter["id"]
    assert api.ok(api.get(f"aggregations/{created['id']}"))["targetField"] == "user"
    assert [a["id"] for a in api.ok(api.get("aggregations", params={"codes": "users"}))["data"]] == [
        created["id"]
    ]
    assert api.ok(api.delete(f"aggregations/{created['id']}"))["id"] == created["id"]
    assert api.get(f"aggregations/{created['id']}").status_code == 404


def test_products_allow_page_size_up_to_200(api):
    for i in range(3):
        api.ok(api.post("products", json={"code": f"p{i}", "name": f"Product {i}"}))
    page = api.ok(api.get("products", params={"pageSize": 200}))
    assert [p["code"] for p in page["data"]] == ["p2", "p1", "p0"]
    assert "nextToken" not in page
    assert api.get("products", params={"pageSize": 201}).status_code == 400
    first = page["data"][0]
    assert api.ok(api.get(f"products/{first['id']}"))["code"] == "p2"
    product_meter = api.create_meter("scoped", productId=first["id"])
    scoped = api.ok(api.get("meters", params={"productId": first["id"]}))["data"]
    assert [m["id"] for m in scoped] == [product_meter["id"]]


def test_plans_with_codes_filter(api):
    body = {"code": "gold", "name": "Gold", "planTemplateId": TEMPLATE_ID}
    gold = api.ok(api.post("plans", json=body))
    api.ok(api.post("plans", json=dict(body, code="silver", name="Silver")))
    assert [p["id"] for p in api.ok(api.get("plans", params={"codes": "gold"}))["data"]] == [gold["id"]]
    assert api.ok(api.get(f"plans/{gold['id']}"))["planTemplateId"] == TEMPLATE_ID
    short = api.post("plans", json=dict(body, code="x", planTemplateId="short"))
    assert short.status_code == 400
    assert "planTemplateId" in short.json()["message"]


def test_unknown_paths_and_methods_answer_with_messages(api, m3ter_emulator):
    not_there = api.get("widgets")
    assert not_there.status_code == 404
    assert set(not_there.json()) == {"message"}
    wrong_method = api.call("PATCH", "meters")
    assert wrong_method.status_code == 405
    assert set(wrong_method.json()) == {"message"}
    m3ter_emulator.set_job_mode("manual", step_seconds=0.1)
    m3ter_emulator.reset()
    assert m3ter_emulator.admin("POST", "jobs/mode", {}) == {"mode": "time", "step_seconds": 1.0}
