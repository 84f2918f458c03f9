"""Rate limits: per-org requests/second and per-IP rolling windows (scaled down to seconds)."""

from __future__ import annotations

import time

import pytest
import requests

from tests.emulator.api import Api, measurement


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def test_limits_are_off_by_default(api, m3ter_emulator):
    statuses = {api.get("meters").status_code for _ in range(60)}
    assert statuses == {200}
    assert m3ter_emulator.admin("GET", "limits")["enabled"] is False


def test_org_requests_per_second(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_limits(enabled=True, org_rps=3)
    statuses = [api.get("meters").status_code for _ in range(10)]
    accepted = statuses.count(200)
    refused = statuses.count(429)
    assert accepted + refused == 10
    assert 3 <= accepted <= 6  # a burst of 10 quick calls spans at most two one-second buckets
    assert m3ter_emulator.stats()["rate_limited"]["org"] == refused
    # The other API has its own per-org budget.
    assert api.ingest([measurement("other-api")]).status_code == 200
    time.sleep(1.05)
    assert api.get("meters").status_code == 200


def test_ingest_and_config_ip_windows(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_limits(
        enabled=True, org_rps=1000, window_seconds=1.5, ingest_window_requests=5, config_window_requests=4
    )
    ingest = [api.ingest([measurement(f"w-{i}")]).status_code for i in range(8)]
    assert ingest == [200] * 5 + [429] * 3
    config = [api.get("meters").status_code for _ in range(6)]
    assert config == [200] * 4 + [429] * 2
    refused = api.ingest([measurement("refused")])
    assert set(refused.json()) == {"message"}
    token = requests.post(
        m3ter_emulator.config_url + "/oauth/token",
        auth=(m3ter_emulator.access_key_id, m3ter_emulator.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert token.status_code == 200  # the token endpoint is not limited
    stats = m3ter_emulator.stats()
    assert stats["rate_limited"] == {"org": 0, "ingest_ip": 4, "config_ip": 2}
    assert [m["uid"] for m in m3ter_emulator.measurements()] == [f"w-{i}" for i in range(5)]
    time.sleep(1.6)  # the rolling window has moved on
    assert api.ingest([measurement("after")]).status_code == 200
    assert api.get("meters").status_code == 200


def test_window_counts_scale_with_the_window(m3ter_emulator):
    scaled = m3ter_emulator.set_limits(enabled=True, window_seconds=3)
    assert scaled["ingest_window_requests"] == 50
    assert scaled["config_window_requests"] == 200
    full = m3ter_emulator.set_limits(enabled=True)
    assert (full["ingest_window_requests"], full["config_window_requests"], full["window_seconds"]) == (
        5000,
        20000,
        300.0,
    )
    m3ter_emulator.reset()
    assert m3ter_emulator.admin("GET", "limits")["enabled"] is False
