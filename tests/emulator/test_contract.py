"""Contract: every implemented operation answers with bodies valid against the shipped OpenAPI subset."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import requests

from airflow_provider_m3ter.emulator.schema import SUBSET_PATH, SchemaValidator, java_pattern_to_python
from tests.emulator.api import Api, measurement

REPO = Path(__file__).resolve().parents[2]
SUBSET = json.loads(SUBSET_PATH.read_text())
PROSE = {"description", "summary", "example", "examples", "externalDocs", "title"}


def openapi_to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema draft 4: nullable becomes a type union, Java patterns Python ones."""
    if isinstance(node, list):
        return [openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_json_schema(value) for key, value in node.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if isinstance(out.get("pattern"), str):
        out["pattern"] = java_pattern_to_python(node["pattern"])
    for key in ("discriminator", "format", "deprecated", "style", "explode"):
        if not isinstance(out.get(key), dict):
            out.pop(key, None)
    return out


COMPONENTS = openapi_to_json_schema(SUBSET["components"])


def validate(instance: Any, schema: dict[str, Any]) -> None:
    root = {"components": COMPONENTS, "allOf": [openapi_to_json_schema(schema)]}
    jsonschema.Draft4Validator(root).validate(instance)


def declared_properties(schema: dict[str, Any]) -> set[str]:
    while "$ref" in schema:
        schema = SUBSET["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= declared_properties(part)
    return names


class Recorder:
    """Calls the emulator and remembers (operation, status, body) for every call."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.calls: list[tuple[str, str, int, Any]] = []
        self.templates = [
            (method, template, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"))
            for template, operations in SUBSET["paths"].items()
            for method in operations
        ]

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.call(method, path, **kwargs)
        return self.record(method, response)

    def record(self, method: str, response: requests.Response) -> Any:
        url_path = "/" + response.url.split("/", 3)[3].split("?")[0]
        for op_method, template, regex in self.templates:
            if op_method == method.lower() and regex.match(url_path):
                body = response.json() if response.content else None
                self.calls.append((op_method, template, response.status_code, body))
                return body
        raise AssertionError(f"{method} {url_path} is not an operation of the subset")


def test_every_operation_matches_the_subset(m3ter_emulator):
    api = Api(m3ter_emulator)
    rec = Recorder(api)
    m3ter_emulator.set_job_mode("manual")
    token = requests.post(
        m3ter_emulator.config_url + "/oauth/token",
        auth=(m3ter_emulator.access_key_id, m3ter_emulator.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    rec.record("POST", token)
    rec.record(
        "POST",
        requests.post(m3ter_emulator.config_url + "/oauth/token", data={"grant_type": "x"}, timeout=10),
    )
    product = rec("POST", "products", json={"code": "prod", "name": "Product"})
    rec("GET", f"products/{product['id']}")
    rec("GET", "products")
    meter = rec(
        "POST",
        "meters",
        json={
            "code": "api_calls",
            "name": "API calls",
            "productId": product["id"],
            "customFields": {"team": "core", "tier": 2},
            "dataFields": [
                {"category": "WHO", "code": "user", "name": "User"},
                {"category": "MEASURE", "code": "calls", "name": "Calls", "unit": "count"},
            ],
            "derivedFields": [
                {
                    "category": "MEASURE",
                    "code": "x2",
                    "name": "Twice",
                    "unit": "count",
                    "calculation": "calls*2",
                }
            ],
        },
    )
    rec("GET", f"meters/{meter['id']}")
    rec("GET", "meters", params={"pageSize": 1})
    rec("POST", "meters", json={"code": "bad"})
    updated = rec("PUT", f"meters/{meter['id']}", json={**meter, "name": "Renamed", "version": 1})
    rec("PUT", f"meters/{meter['id']}", json={**meter, "version": 1})
    account = rec("POST", "accounts", json={"code": "acme", "name": "Acme", "emailAddress": "a@acme.test"})
    rec("GET", f"accounts/{account['id']}")
    rec("GET", "accounts", params={"codes": "acme"})
    aggregation = rec(
        "POST",
        "aggregations",
        json={
            "name": "Calls",
            "code": "calls_sum",
            "meterId": meter["id"],
            "targetField": "calls",
            "aggregation": "SUM",
            "rounding": "NONE",
            "quantityPerUnit": 1,
            "unit": "count",
        },
    )
    rec("GET", f"aggregations/{aggregation['id']}")
    rec("GET", "aggregations")
    plan = rec("POST", "plans", json={"code": "gold", "name": "Gold", "planTemplateId": "t" * 36})
    rec("GET", f"plans/{plan['id']}")
    rec("GET", "plans")
    rec(
        "POST",
        "measurements",
        api="ingest",
        json={"measurements": [measurement("c-1"), measurement("c-2", meter="x")]},
    )
    rec("POST", "measurements", api="ingest", json={"measurements": []})
    m3ter_emulator.validate_now()
    events = rec("GET", "events", params={"eventName": "ingest.validation.failure"})
    rec("GET", f"events/{events['data'][0]['id']}")
    body = json.dumps([measurement("f-1")]).encode()
    grant = rec(
        "POST",
        "fileuploads/measurements/generateUploadUrl",
        json={"fileName": "f.json", "contentType": "application/json", "contentLength": len(body)},
    )
    requests.put(grant["url"], data=body, headers=grant["headers"], timeout=10).raise_for_status()
    m3ter_emulator.advance_job(grant["jobId"])
    rec("GET", f"fileuploads/measurements/jobs/{grant['jobId']}")
    rec("GET", "fileuploads/measurements/jobs")
    bill = rec("POST", "billjobs", json={"billDate": "2024-05-31", "billingFrequency": "MONTHLY"})
    rec("GET", f"billjobs/{bill['id']}")
    rec("GET", "billjobs")
    rec("POST", f"billjobs/{bill['id']}/cancel")
    export = rec("POST", "dataexports/adhoc", json={"sourceType": "USAGE", "meterIds": [meter["id"]]})
    m3ter_emulator.advance_job(export["jobId"])
    rec("GET", f"dataexports/jobs/{export['jobId']}")
    rec("DELETE", f"aggregations/{aggregation['id']}")
    rec("DELETE", f"meters/{meter['id']}")
    assert updated["version"] == 2

    covered = {(method, template) for method, template, status, _ in rec.calls if status == 200}
    implemented = {(method, template) for template, ops in SUBSET["paths"].items() for method in ops}
    assert covered == implemented
    errors = 0
    for method, template, status, body in rec.calls:
        operation = SUBSET["paths"][template][method]
        if status == 200:
            content = operation["responses"]["200"].get("content")
            if content is None:
                continue
            schema = content["application/json"]["schema"]
            validate(body, schema)
            undeclared = set(body) - declared_properties(schema) if isinstance(body, dict) else set()
            assert not undeclared, f"{method} {template} returns undeclared fields {undeclared}"
            for item in body.get("data", []) if isinstance(body, dict) else []:
                item_schema = schema
                while "$ref" in item_schema:
                    item_schema = SUBSET["components"]["schemas"][item_schema["$ref"].rsplit("/", 1)[1]]
                item_ref = item_schema["properties"]["data"]["items"]
                assert not set(item) - declared_properties(item_ref), f"{template} list item"
        else:
            errors += 1
            assert 400 <= status < 500
            validate(
                body, SUBSET["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
            )
            assert set(body) == {"message"}
    assert errors == 4


def test_the_emulators_validator_and_jsonschema_agree_on_meter_requests():
    # The emulator's own validator and jsonschema give the same verdict on each body.
    meter_request = {"$ref": "#/components/schemas/MeterRequest"}
    emulator = SchemaValidator(SUBSET)
    good = {
        "code": "ok",
        "name": "OK",
        "dataFields": [{"category": "WHO", "code": "user_1", "name": "User"}],
        "derivedFields": [],
    }
    validate(good, meter_request)
    assert emulator.errors(good, meter_request) == []
    for bad in (
        {**good, "code": " padded"},
        {**good, "dataFields": []},
        {**good, "dataFields": [{"category": "NOPE", "code": "x", "name": "X"}]},
        {**good, "dataFields": [{"category": "WHO", "code": "9x", "name": "X"}]},
    ):
        assert emulator.errors(bad, meter_request), f"the emulator accepted {bad}"
        try:
            validate(bad, meter_request)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"jsonschema accepted {bad}")


def _derive_module():
    spec = importlib.util.spec_from_file_location(
        "derive_openapi_subset", REPO / "scripts/derive_openapi_subset.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose_keys(node: Any, in_properties: bool = False) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if not in_properties and (key in PROSE or key.startswith("x-")):
                found.append(key)
            found += _prose_keys(value, key == "properties" and not in_properties)
    elif isinstance(node, list):
        for item in node:
            found += _prose_keys(item)
    return found


def test_subset_is_prose_free_and_holds_exactly_the_implemented_operations():
    derive = _derive_module()
    assert _prose_keys({key: value for key, value in SUBSET.items() if key != "info"}) == []
    operations = {(path, method) for path, ops in SUBSET["paths"].items() for method in ops}
    assert operations == set(derive.OPERATIONS)
    spec = {
        "openapi": "3.0.1",
        "info": {"version": "9", "title": "T", "description": "prose"},
        "paths": {
            "/organizations/{orgId}/meters": {
                "get": {
                    "summary": "prose",
                    "x-internal": "prose",
                    "responses": {"200": {"$ref": "#/components/responses/Ok"}},
                }
            },
            "/unused": {"get": {"responses": {"200": {"$ref": "#/components/schemas/Unused"}}}},
        },
        "components": {
            "responses": {
                "Ok": {
                    "description": "x",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}},
                }
            },
            "schemas": {
                "A": {"properties": {"description": {"$ref": "#/components/schemas/B"}}, "example": {"x": 1}},
                "B": {"type": "string", "description": "prose", "enum": ["X"]},
                "Unused": {"type": "string"},
            },
        },
    }
    derive.OPERATIONS = [("/organizations/{orgId}/meters", "get")]
    out = derive.derive(copy.deepcopy(spec))
    assert out["components"]["schemas"] == {
        "A": {"properties": {"description": {"$ref": "#/components/schemas/B"}}},
        "B": {"type": "string", "enum": ["X"]},
    }
    assert out["paths"] == {
        "/organizations/{orgId}/meters": {
            "get": {"responses": {"200": {"$ref": "#/components/responses/Ok"}}}
        }
    }
    assert _prose_keys({key: value for key, value in out.items() if key != "info"}) == []
    reference = REPO.parent / "shared" / "reference" / "m3ter-openapi.json"
    if reference.exists():  # where m3ter's spec is available, the committed subset must be up to date
        fresh = _derive_module().derive(json.loads(reference.read_text()))
        assert fresh == SUBSET
