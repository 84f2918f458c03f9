"""Fixtures for pre-flight and reconciliation tests: a real client and meters in the emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client import M3terClient
from tests.emulator.api import Api
from tests.ingest.conftest import make_client

#: A meter with dimensions, two measures, a cost and two derived fields (one needs a dimension).
METER = {
    "code": "api_calls",
    "name": "API calls",
    "dataFields": [
        {"category": "WHO", "code": "user", "name": "User"},
        {"category": "WHERE", "code": "region", "name": "Region"},
        {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "{request}"},
        {"category": "MEASURE", "code": "errors", "name": "Errors", "unit": "{request}"},
    ],
    "derivedFields": [
        {
            "category": "MEASURE",
            "code": "billable",
            "name": "Billable",
            "unit": "{request}",
            "calculation": "requests - errors",
        },
        {
            "category": "MEASURE",
            "code": "eu_requests",
            "name": "EU",
            "unit": "{request}",
            "calculation": 'region == "eu" ? requests : 0',
        },
    ],
}


@pytest.fixture
def api(m3ter_emulator: Any) -> Api:
    return Api(m3ter_emulator)


@pytest.fixture
def client_factory(m3ter_emulator: Any) -> Iterator[Callable[..., M3terClient]]:
    made: list[M3terClient] = []

    def factory(**overrides: Any) -> M3terClient:
        made.append(make_client(m3ter_emulator, **overrides))
        return made[-1]

    yield factory
    for client in made:
        client.close()


def good(i: int, account: str = "acme", **extra: Any) -> dict[str, Any]:
    """A measurement valid for :data:`METER`."""
    m: dict[str, Any] = {
        "meter": "api_calls",
        "account": account,
        "ts": f"2024-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "who": {"user": f"u{i % 3}"},
        "where": {"region": "eu"},
        "measure": {"requests": i, "errors": i % 2},
    }
    m.update(extra)
    return m


def setup_config(api: Api, accounts: tuple[str, ...] = ("acme", "beta")) -> dict[str, Any]:
    """Create :data:`METER` and the accounts; returns the meter."""
    meter = api.ok(api.post("meters", json=METER))
    for code in accounts:
        api.ok(api.post("accounts", json={"code": code, "name": code, "emailAddress": "billing@example.com"}))
    return meter


def create_example_meters(emulator: Any) -> None:
    """Create the meters of ``example_dags/meters/*.yaml`` (as global meters) in the emulator, so a
    DAG that ingests for them passes pre-flight without running the meter sync first."""
    from airflow_provider_m3ter.client.meter_definitions import load_meter_definitions
    from airflow_provider_m3ter.client.meter_diff import request_body
    from tests.dagrun import EXAMPLE_DAGS

    api = Api(emulator)
    for definition in load_meter_definitions("meters/*.yaml", base_dir=EXAMPLE_DAGS):
        api.ok(api.post("meters", json=request_body(definition, None)))
