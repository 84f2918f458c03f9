"""Fixtures for ingest tests: a real client against the emulator, with sleeps injected away."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient


def make_client(emulator: Any, **overrides: Any) -> M3terClient:
    """A client for the emulator; no client pacing and no real sleeping unless overridden."""
    options: dict[str, Any] = {
        "org_id": emulator.org_id,
        "access_key_id": emulator.access_key_id,
        "api_secret": emulator.api_secret,
        "config_url": emulator.config_url,
        "ingest_url": emulator.ingest_url,
        "ingest_requests_per_second": None,
        "ingest_requests_per_window": None,
        "timeout": 10.0,
    }
    sleep = overrides.pop("sleep", lambda _seconds: None)
    options.update(overrides)
    return M3terClient(ClientSettings(**options), sleep=sleep)


@pytest.fixture
def client_factory(m3ter_emulator: Any) -> Iterator[Callable[..., M3terClient]]:
    """``factory(**settings)`` builds clients for the (freshly reset) emulator; closed after the test."""
    made: list[M3terClient] = []

    def factory(**overrides: Any) -> M3terClient:
        made.append(make_client(m3ter_emulator, **overrides))
        return made[-1]

    yield factory
    for client in made:
        client.close()


def usage(count: int, *, start: int = 0, accounts: int = 7, day: str = "2024-05-01") -> list[dict[str, Any]]:
    """Deterministic measurements without uids (``count`` of them, numbered from ``start``)."""
    return [
        {
            "meter": "api_calls",
            "account": f"acct-{i % accounts}",
            "ts": f"{day}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
            "measure": {"requests": i, "gb": i / 4},
            "who": {"user": f"user-{i % 31}"},
        }
        for i in range(start, start + count)
    ]
