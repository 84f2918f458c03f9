"""Fault injection: statuses, Retry-After, drops, drop-after, 413, latency, targeting, seeding."""

from __future__ import annotations

import time

import pytest
import requests

from tests.emulator.api import Api, measurement


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def test_sequence_of_error_statuses_has_no_side_effects(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_faults(sequence=["500", "502", "504", "429", "ok"], retry_after="2", target="ingest")
    statuses = []
    for i in range(6):
        response = api.ingest([measurement(f"u-{i}")])
        statuses.append(response.status_code)
        if response.status_code >= 500 or response.status_code == 429:
            assert set(response.json()) == {"message"}
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "2"
        else:
            assert "Retry-After" not in response.headers
    assert statuses == [500, 502, 504, 429, 200, 200]
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["u-4", "u-5"]
    stats = m3ter_emulator.stats()
    assert stats["faults_injected"] == {"500": 1, "502": 1, "504": 1, "429": 1}
    assert stats["measurements_received"] == 2
    assert stats["requests"]["POST /organizations/{orgId}/measurements"] == {
        "500": 1, "502": 1, "504": 1, "429": 1, "200": 2,
    }  # fmt: skip


def test_drop_closes_the_connection_without_storing(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_faults(sequence=["drop"], target="ingest")
    with pytest.raises(requests.ConnectionError):
        api.ingest([measurement("dropped")])
    assert m3ter_emulator.measurements() == []
    assert api.ingest([measurement("dropped")]).status_code == 200
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["dropped"]
    assert m3ter_emulator.stats()["faults_injected"] == {"drop": 1}


def test_drop_after_stores_then_drops_and_a_resend_is_deduplicated(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_faults(sequence=["drop_after"], target="ingest")
    batch = [measurement("once-1"), measurement("once-2")]
    with pytest.raises(requests.ConnectionError):
        api.ingest(batch)
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["once-1", "once-2"]
    assert api.ingest(batch).status_code == 200  # the documented recovery: resend with the same uids
    stats = m3ter_emulator.stats()
    assert stats["measurements_stored"] == 2
    assert stats["duplicates_received"] == 2
    assert stats["faults_injected"] == {"drop_after": 1}


def test_rate_is_seeded_and_reproducible(api, m3ter_emulator):
    api.token()

    def run() -> list[int]:
        m3ter_emulator.set_faults(seed=7, rate=0.5, kinds=["500", "502"], target="config")
        return [api.get("meters").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 500, 502}
    m3ter_emulator.set_faults(seed=8, rate=0.5, kinds=["500", "502"], target="config")
    assert [api.get("meters").status_code for _ in range(30)] != first


def test_target_and_path_regex_select_requests(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_faults(rate=1.0, kinds=["500"], target="token")
    assert api.get("meters").status_code == 200
    assert api.ingest([measurement()]).status_code == 200
    token = requests.post(
        m3ter_emulator.config_url + "/oauth/token",
        auth=(m3ter_emulator.access_key_id, m3ter_emulator.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert token.status_code == 500
    m3ter_emulator.set_faults(rate=1.0, kinds=["502"], target="config", path_regex="/accounts")
    assert api.get("meters").status_code == 200
    assert api.get("accounts").status_code == 502
    m3ter_emulator.clear_faults()
    assert api.get("accounts").status_code == 200


def test_413_above_page_size(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_faults(list_413_above_page_size=20)
    too_big = api.get("meters", params={"pageSize": 50})
    assert too_big.status_code == 413
    assert "message" in too_big.json()
    assert api.get("meters", params={"pageSize": 20}).status_code == 200
    assert api.get("meters").status_code == 200
    assert m3ter_emulator.stats()["faults_injected"] == {"413": 1}


def test_latency_is_added(api, m3ter_emulator):
    api.token()
    m3ter_emulator.set_faults(latency_ms=300, target="config")
    started = time.monotonic()
    assert api.get("meters").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert api.ingest([measurement()]).status_code == 200
    assert time.monotonic() - started < 0.3


def test_admin_and_unknown_fault_settings(api, m3ter_emulator):
    m3ter_emulator.set_faults(rate=1.0, kinds=["500"])
    assert m3ter_emulator.stats()["faults_injected"] == {}  # the admin API is never faulted
    for body in ({"kinds": ["418"]}, {"sequence": ["boom"]}, {"rate": 2}, {"target": "x"}, {"nonsense": 1}):
        response = requests.post(m3ter_emulator.config_url + "/_emulator/faults", json=body, timeout=10)
        assert response.status_code == 400, body
        assert "message" in response.json()


def test_start_up_faults_come_back_after_reset(m3ter_emulator_factory):
    emu = m3ter_emulator_factory(fault_rate=1.0, fault_kinds=["502"], fault_target="config", fault_seed=3)
    api = Api(emu)
    api.token()
    assert api.get("meters").status_code == 502
    emu.clear_faults()
    assert api.get("meters").status_code == 200
    emu.reset(keep_tokens=True)
    assert api.get("meters").status_code == 502
    emu.clear_faults()
    m = measurement("x")
    assert api.ingest([m]).status_code == 200
    emu.set_faults(sequence=["drop"], target="all")
    with pytest.raises(requests.ConnectionError):  # faults apply before authentication
        requests.get(emu.config_url + f"/organizations/{emu.org_id}/accounts", timeout=5)
