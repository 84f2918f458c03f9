"""Fixtures for the client's HTTP tests: clients wired to the emulator with a controlled clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient
from tests.client.support import FakeTime

NO_PACING = {
    "ingest_requests_per_second": None,
    "ingest_requests_per_window": None,
    "config_requests_per_second": None,
    "config_requests_per_window": None,
}


@pytest.fixture
def fake_time() -> FakeTime:
    """A clock that only moves when the client sleeps; its ``sleeps`` are the waits asserted."""
    return FakeTime()


@pytest.fixture
def secrets_seen() -> list[str]:
    """Every token the clients hand to ``on_secret``."""
    return []


@pytest.fixture
def make_client(
    m3ter_emulator: Any, fake_time: FakeTime, secrets_seen: list[str]
) -> Iterator[Callable[..., M3terClient]]:
    """Build clients against the emulator: fake clock and sleep, seeded jitter, no pacing by default."""
    clients: list[M3terClient] = []

    def factory(*, real_time: bool = False, **overrides: Any) -> M3terClient:
        options: dict[str, Any] = {
            "org_id": m3ter_emulator.org_id,
            "access_key_id": m3ter_emulator.access_key_id,
            "api_secret": m3ter_emulator.api_secret,
            "config_url": m3ter_emulator.config_url,
            "ingest_url": m3ter_emulator.ingest_url,
            **NO_PACING,
            **overrides,
        }
        timing: dict[str, Any] = {} if real_time else {"sleep": fake_time.sleep, "clock": fake_time.clock}
        client = M3terClient(
            ClientSettings(**options), on_secret=secrets_seen.append, rng=random.Random(1), **timing
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()
