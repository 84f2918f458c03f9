"""Operations over real HTTP: paging, look-ups, tokens, ingest, pacing, and no I/O before use."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from typing import Any

import pytest

from airflow_provider_m3ter import __version__
from airflow_provider_m3ter.client import (
    ClientSettings,
    M3terClient,
    M3terError,
    M3terPayloadTooLargeError,
)
from tests.client.support import FakeTime, meter_body, route_counts

# A broken retry rule could loop forever; fail fast instead.
pytestmark = pytest.mark.timeout(60)

LIST_METERS = "GET /organizations/{orgId}/meters"


def _create_meters(client: M3terClient, count: int, prefix: str = "m") -> list[str]:
    codes = [f"{prefix}{index:03d}" for index in range(count)]
    for code in codes:
        client.request("POST", "meters", json=meter_body(code))
    return codes


def test_paginate_follows_next_token_across_pages(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    codes = _create_meters(client, 25)
    before = route_counts(m3ter_emulator.stats(), LIST_METERS).get("200", 0)

    items = list(client.paginate("meters", page_size=10))

    assert [item["code"] for item in items] == list(reversed(codes))  # newest first, none twice
    assert route_counts(m3ter_emulator.stats(), LIST_METERS)["200"] - before == 3


def test_paginate_halves_the_page_size_on_413(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    codes = _create_meters(client, 30)
    m3ter_emulator.set_faults(list_413_above_page_size=10, target="config")

    items = list(client.paginate("meters", page_size=80))

    assert sorted(item["code"] for item in items) == codes
    counts = route_counts(m3ter_emulator.stats(), LIST_METERS)
    # 80 -> 40 -> 20 -> 10 (three 413s), then pages of 10 stay small: 3 pages of data.
    assert counts == {"413": 3, "200": 3}


def test_paginate_gives_up_when_one_item_is_too_large(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    _create_meters(client, 2)
    m3ter_emulator.set_faults(list_413_above_page_size=0, target="config")

    with pytest.raises(M3terPayloadTooLargeError):
        list(client.paginate("meters", page_size=4))

    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {"413": 3}  # 4, 2, 1


def test_find_meters_by_codes_uses_one_list_call_per_100_codes(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    codes = _create_meters(client, 130)
    client.request("POST", "meters", json=meter_body("has,comma"))
    before = route_counts(m3ter_emulator.stats(), LIST_METERS).get("200", 0)

    found = client.find_meters_by_codes([*codes, *codes[:5], "missing-one"])

    assert sorted(found) == codes
    assert all(found[code]["code"] == code for code in codes)
    assert route_counts(m3ter_emulator.stats(), LIST_METERS)["200"] - before == 2
    assert client.find_meter_by_code("has,comma")["code"] == "has,comma"
    assert client.find_meter_by_code("missing-one") is None
    with pytest.raises(ValueError, match="code #1"):
        client.find_meters_by_codes(["ok", ""])


def test_find_account_by_code(make_client: Any) -> None:
    client = make_client()
    client.request("POST", "accounts", json={"code": "acme", "name": "Acme", "emailAddress": "ops@acme.test"})

    assert client.find_account_by_code("acme")["name"] == "Acme"
    assert client.find_account_by_code("nobody") is None


def test_one_token_for_many_requests(m3ter_emulator: Any, make_client: Any, secrets_seen: list[str]) -> None:
    client = make_client()
    for _ in range(30):
        client.request("GET", "meters")

    assert m3ter_emulator.stats()["tokens_issued"] == 1
    assert client.stats.token_fetches == 1
    assert client.stats.requests == 30
    assert client.stats.attempts == 31  # the token request is an HTTP send too
    assert len(secrets_seen) == 1


def test_one_token_for_eight_threads(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client(real_time=True, pool_size=8)
    start = threading.Barrier(8)
    failures: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            for _ in range(10):
                client.request("GET", "meters")
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert m3ter_emulator.stats()["tokens_issued"] == 1
    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {"200": 80}


def test_expired_token_gets_exactly_one_refresh(
    m3ter_emulator: Any, make_client: Any, secrets_seen: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    client.request("GET", "meters")
    m3ter_emulator.expire_tokens()

    with caplog.at_level(logging.WARNING, logger="airflow_provider_m3ter.client"):
        assert client.request("GET", "meters") == {"data": []}
        assert client.request("GET", "meters") == {"data": []}

    assert m3ter_emulator.stats()["tokens_issued"] == 2
    assert len(set(secrets_seen)) == 2
    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {"200": 3, "403": 1}
    assert sum("fetching a new token" in record.getMessage() for record in caplog.records) == 1


def test_token_is_refreshed_early_by_the_clock(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(token_refresh_margin=300.0)
    client.request("GET", "meters")
    fake_time.advance(18_000 - 301)
    client.request("GET", "meters")
    assert m3ter_emulator.stats()["tokens_issued"] == 1
    fake_time.advance(2)
    client.request("GET", "meters")
    assert m3ter_emulator.stats()["tokens_issued"] == 2
    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {"200": 3}  # never a 403


def test_submit_measurements_goes_to_the_ingest_host(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    client.request("POST", "meters", json=meter_body("api_calls"))
    measurement = {"uid": "u-1", "meter": "api_calls", "account": "acme", "ts": "2024-05-01T00:00:00Z"}

    assert client.submit_measurements([{**measurement, "measure": {"value": 3}}]) == {"result": "accepted"}
    raw = json.dumps({"measurements": [{**measurement, "uid": "u-2", "measure": {"value": 4}}]}).encode()
    assert client.submit_measurements(raw) == {"result": "accepted"}

    stored = m3ter_emulator.measurements()
    assert [(m["uid"], m["measure"]["value"]) for m in stored] == [("u-1", 3), ("u-2", 4)]
    assert route_counts(m3ter_emulator.stats(), "POST /organizations/{orgId}/measurements") == {"200": 2}


def test_oversize_ingest_403_is_payload_too_large_without_refresh(
    m3ter_emulator: Any, make_client: Any
) -> None:
    client = make_client()
    client.request("GET", "meters")
    padded = {
        "uid": "x",
        "meter": "m",
        "account": "a",
        "ts": "2024-01-01T00:00:00Z",
        "metadata": {"p": "p" * 600_000},
    }
    big = json.dumps({"measurements": [padded]}).encode()

    with pytest.raises(M3terPayloadTooLargeError) as info:
        client.submit_measurements(big)

    assert (info.value.status, info.value.attempts) == (403, 1)
    assert m3ter_emulator.stats()["tokens_issued"] == 1


def test_pacing_keeps_a_burst_under_the_emulators_limits(m3ter_emulator: Any, make_client: Any) -> None:
    m3ter_emulator.set_limits(enabled=True, org_rps=20, config_window_requests=40, window_seconds=3)
    # 20/s per second and 40 per 3 s: the window is the tighter pace (one per 75 ms).
    client = make_client(
        real_time=True, config_requests_per_second=20, config_requests_per_window=40, window_seconds=3
    )

    for _ in range(45):
        client.request("GET", "meters")

    stats = m3ter_emulator.stats()
    assert stats["rate_limited"] == {"org": 0, "ingest_ip": 0, "config_ip": 0}
    assert client.stats.throttled == 0
    assert client.stats.paced > 2.0  # 45 sends spread over more than 3 s


def test_without_pacing_the_same_burst_is_throttled(m3ter_emulator: Any, make_client: Any) -> None:
    m3ter_emulator.set_limits(enabled=True, org_rps=20, config_window_requests=40, window_seconds=3)
    client = make_client(max_attempts=1)

    def burst() -> None:
        for _ in range(45):
            client.request("GET", "meters")

    with pytest.raises(M3terError):
        burst()

    assert client.stats.throttled == 1  # the control: the limits above really bite


def test_user_agent_names_the_provider(make_client: Any) -> None:
    client = make_client()
    seen: list[str] = []
    client.session.hooks["response"].append(
        lambda response, **_: seen.append(response.request.headers["User-Agent"])
    )

    client.request("GET", "meters")

    assert seen == [f"airflow-provider-m3ter/{__version__}"] * 2  # the token request and the call


def test_construction_does_no_io(m3ter_emulator: Any) -> None:
    settings = ClientSettings(
        org_id=m3ter_emulator.org_id,
        access_key_id=m3ter_emulator.access_key_id,
        api_secret=m3ter_emulator.api_secret,
        config_url=m3ter_emulator.config_url,
        ingest_url=m3ter_emulator.ingest_url,
    )
    with M3terClient(settings) as client:
        assert m3ter_emulator.stats()["requests"] == {}
        assert client.stats.attempts == 0
        client.request("GET", "meters")  # the control: the first use does reach the emulator
        assert m3ter_emulator.stats()["tokens_issued"] == 1


def test_import_and_construction_open_no_socket() -> None:
    script = """
import socket
def refuse(*args, **kwargs):
    raise AssertionError("network used")
socket.socket.connect = refuse
socket.create_connection = refuse
from airflow_provider_m3ter.client import ClientSettings, M3terClient
client = M3terClient(ClientSettings(org_id="00000000-0000-4000-8000-00000000000a",
    access_key_id="k", api_secret="s",
                                    config_url="https://10.255.255.1", ingest_url="https://10.255.255.2"))
print("constructed", client.stats.attempts)
try:
    client.request("GET", "meters")
except Exception as exc:
    print("first use", type(exc).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "constructed 0" in result.stdout
    # The control: the first real call is where the network is touched (and refused here).
    assert "first use AssertionError" in result.stdout


def test_client_never_imports_airflow() -> None:
    # Every module of the client package, not only the re-exported ones.
    script = (
        "import importlib, pkgutil, sys, airflow_provider_m3ter.client as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module(f'{c.__name__}.{m.name}')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'airflow')\n"
        "print(len(list(pkgutil.iter_modules(c.__path__))), loaded)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    count, airflow_modules = result.stdout.strip().split(" ", 1)
    assert int(count) >= 7
    assert airflow_modules == "[]"


def test_secret_and_tokens_never_reach_logs_or_errors(
    m3ter_emulator: Any, make_client: Any, secrets_seen: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(max_attempts=2)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        client.request("GET", "meters")
        m3ter_emulator.expire_tokens()
        client.request("GET", "meters")  # 403, refresh, retry
        m3ter_emulator.set_faults(sequence=["500", "429", "drop", "drop"], target="config", retry_after="1")
        for _ in range(2):
            try:
                client.request("GET", "meters")
            except M3terError as exc:
                texts += [str(exc), repr(exc), str(exc.__cause__)]
        bad = make_client(api_secret="not-the-secret-xyz")
        with pytest.raises(M3terError) as info:
            bad.request("GET", "meters")
        texts += [str(info.value), repr(info.value), repr(bad), repr(bad.settings)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(client), repr(client.settings), repr(client.stats)]

    assert len(secrets_seen) == 2
    assert len(caplog.records) > 10  # the check below looked at real log traffic
    for text in texts:
        for secret in [m3ter_emulator.api_secret, "not-the-secret-xyz", *secrets_seen]:
            assert secret not in text


def test_requests_to_the_wrong_listener_show_the_path(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    with pytest.raises(M3terError) as info:
        client.request("GET", "meters", api="ingest")  # the Ingest host serves only measurements
    assert info.value.status == 404
    assert info.value.path == f"/organizations/{m3ter_emulator.org_id}/meters"
