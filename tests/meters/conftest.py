"""Fixtures for meter-sync tests: a real client against the emulator, and request counting."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient

WRITE_METHODS = ("POST", "PUT", "DELETE")


@pytest.fixture
def client(m3ter_emulator: Any) -> Iterator[M3terClient]:
    """An unpaced client for the (freshly reset) emulator; limits are off there."""
    settings = ClientSettings(
        org_id=m3ter_emulator.org_id,
        access_key_id=m3ter_emulator.access_key_id,
        api_secret=m3ter_emulator.api_secret,
        config_url=m3ter_emulator.config_url,
        ingest_url=m3ter_emulator.ingest_url,
        config_requests_per_second=None,
        config_requests_per_window=None,
    )
    with M3terClient(settings) as c:
        yield c


def count(stats: dict[str, Any], method: str, route_suffix: str, status: str | None = None) -> int:
    """Requests the emulator answered for ``METHOD .../route_suffix`` (optionally one status only)."""
    total = 0
    for key, by_status in stats["requests"].items():
        verb, _, route = key.partition(" ")
        if verb == method and route.endswith(route_suffix):
            total += sum(n for s, n in by_status.items() if status is None or s == status)
    return total


def meter_writes(stats: dict[str, Any]) -> int:
    """Every write call on meters (create, update, delete), whatever its outcome."""
    return sum(count(stats, m, "/meters") + count(stats, m, "/meters/{id}") for m in WRITE_METHODS)
