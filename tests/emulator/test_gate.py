"""The gate's route table: every route the listeners serve is gated, on whatever FastAPI is installed.

FastAPI 0.165 keeps included routers as lazy wrappers whose ``app.routes`` carry no paths; a table
read back from the app came out empty there and silently switched auth, faults, limits and stats off.
"""

from __future__ import annotations

import re

import pytest
import requests
from fastapi import APIRouter

from airflow_provider_m3ter.emulator.app import CONFIG_ROUTERS, INGEST_ROUTERS, create_apps
from airflow_provider_m3ter.emulator.gate import ADMIN_PREFIX, Gate
from airflow_provider_m3ter.emulator.options import EmulatorOptions
from airflow_provider_m3ter.emulator.state import EmulatorState


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-1", template)


def _served(gate: Gate) -> list[tuple[str, str]]:
    """(method, template) of every operation the wrapped app describes in its OpenAPI schema."""
    schema = gate.app.openapi()
    return [
        (method.upper(), template)
        for template, operations in schema["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "delete", "patch"}
    ]


@pytest.mark.parametrize(("which", "routers"), [(0, CONFIG_ROUTERS), (1, INGEST_ROUTERS)])
def test_every_served_route_is_in_the_gate_table(which: int, routers: tuple[APIRouter, ...]) -> None:
    gate = create_apps(EmulatorState(EmulatorOptions()))[which]
    declared = {(m, r.path) for router in routers for r in router.routes for m in getattr(r, "methods", ())}
    assert gate.routes, "empty route table: auth, faults, limits and stats would be off"
    assert {(m, t) for _, methods, t in gate.routes for m in methods} == declared
    served = _served(gate)
    assert served, "the app describes no operation"
    ungated = [
        (method, template)
        for method, template in served
        if gate.route_of(method, _concrete(template)) != template and not template.startswith(ADMIN_PREFIX)
    ]
    assert ungated == []


def test_a_router_list_without_routes_is_refused() -> None:
    state = EmulatorState(EmulatorOptions())
    app = create_apps(state)[0].app
    with pytest.raises(ValueError, match="no route to gate"):
        Gate(app, state, "config", [APIRouter()])


def test_unknown_paths_are_not_gated() -> None:
    gate = create_apps(EmulatorState(EmulatorOptions()))[0]
    assert gate.route_of("GET", "/organizations/x-1/no-such-thing") is None
    assert gate.route_of("DELETE", "/oauth/token") is None


def test_gated_routes_need_a_token_and_are_counted(m3ter_emulator) -> None:
    emu = m3ter_emulator
    config = requests.get(f"{emu.config_url}/organizations/{emu.org_id}/meters", timeout=10)
    ingest = requests.post(f"{emu.ingest_url}/organizations/{emu.org_id}/measurements", json={}, timeout=10)
    assert (config.status_code, ingest.status_code) == (403, 403)
    requests_seen = emu.stats()["requests"]
    assert requests_seen["GET /organizations/{orgId}/meters"] == {"403": 1}
    assert requests_seen["POST /organizations/{orgId}/measurements"] == {"403": 1}
