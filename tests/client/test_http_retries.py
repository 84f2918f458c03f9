"""Every row of the retry table, each proven with real HTTP exchanges against the emulator.

The client's clock and sleep are fake (``fake_time``), so the waits are asserted exactly and the
tests take milliseconds; the HTTP traffic is real.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import pytest

from airflow_provider_m3ter.client import (
    M3terBreaksConfigurationError,
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
)
from airflow_provider_m3ter.client.retry import backoff_limit
from tests.client.support import FakeTime, meter_body, route_counts

# A broken retry rule could loop forever; fail fast instead.
pytestmark = pytest.mark.timeout(60)

LIST_METERS = "GET /organizations/{orgId}/meters"


def _warm(client: Any) -> None:
    """Fetch the token first so injected faults only meet the call under test."""
    client.request("GET", "meters", params={"pageSize": 1})


@pytest.mark.parametrize("status", ["500", "502", "504"])
def test_server_errors_are_retried_with_jittered_backoff(
    status: str, m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client()
    _warm(client)
    m3ter_emulator.set_faults(sequence=[status, status, "ok"], target="config")
    before = client.stats.snapshot()

    assert client.request("GET", "meters") == {"data": []}

    after = client.stats.snapshot()
    assert after["attempts"] - before["attempts"] == 3
    waits = after["waits"][len(before["waits"]) :]
    assert len(waits) == 2
    assert fake_time.sleeps == waits
    assert all(0 <= wait <= backoff_limit(n, 60) for n, wait in enumerate(waits))
    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {status: 2, "200": 2}


def test_server_errors_exhaust_max_attempts(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(max_attempts=4)
    _warm(client)
    m3ter_emulator.set_faults(sequence=["502"] * 10, target="config")

    with pytest.raises(M3terTransientError) as info:
        client.request("GET", "meters")

    error = info.value
    assert (error.status, error.attempts, error.method) == (502, 4, "GET")
    assert error.path == f"/organizations/{m3ter_emulator.org_id}/meters"
    assert str(error).startswith(f"m3ter returned 502 Bad Gateway for GET {error.path} after 4 attempts: ")
    assert "gave up after 4 attempts" in str(error)
    assert len(fake_time.sleeps) == 3
    assert route_counts(m3ter_emulator.stats(), LIST_METERS)["502"] == 4


def test_429_waits_1_then_3_then_9_seconds(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client()
    _warm(client)
    m3ter_emulator.set_faults(sequence=["429", "429", "429", "ok"], target="config")

    client.request("GET", "meters")

    assert fake_time.sleeps == [1.0, 3.0, 9.0]
    assert client.stats.throttled == 3
    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {"429": 3, "200": 2}


def test_429_honours_retry_after_seconds(m3ter_emulator: Any, make_client: Any, fake_time: FakeTime) -> None:
    client = make_client()
    _warm(client)
    m3ter_emulator.set_faults(sequence=["429", "429", "ok"], target="config", retry_after="2")

    client.request("GET", "meters")

    # max(Retry-After, schedule): max(2, 1) then max(2, 3).
    assert fake_time.sleeps == [2.0, 3.0]


def test_429_honours_retry_after_http_date(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client()
    _warm(client)
    m3ter_emulator.set_faults(
        sequence=["429", "ok"], target="config", retry_after=formatdate(time.time() + 30)
    )

    client.request("GET", "meters")

    # Measured from the response's Date header (1 s resolution on both sides).
    assert len(fake_time.sleeps) == 1
    assert 27.0 <= fake_time.sleeps[0] <= 31.0


def test_retry_after_is_capped_by_max_wait_and_reported(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(max_wait=5.0, max_attempts=3)
    _warm(client)
    m3ter_emulator.set_faults(sequence=["429"] * 5, target="config", retry_after="120")

    with pytest.raises(M3terTransientError) as info:
        client.request("GET", "meters")

    assert fake_time.sleeps == [5.0, 5.0]
    assert info.value.status == 429
    assert info.value.retry_after == 120.0
    assert info.value.attempts == 3


def test_deadline_stops_before_a_wait_that_would_pass_it(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(deadline=10.0, max_attempts=20)
    _warm(client)
    m3ter_emulator.set_faults(sequence=["429"] * 20, target="config")

    with pytest.raises(M3terTransientError) as info:
        client.request("GET", "meters")

    # 1 + 3 s fit into 10 s; the next wait (9 s) would end at 13 s.
    assert fake_time.sleeps == [1.0, 3.0]
    assert info.value.attempts == 3
    assert "10 s deadline" in str(info.value)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_class"),
    [
        ("GET", "meters/00000000-0000-4000-8000-00000000dead", None, 404, M3terFinalError),
        ("POST", "meters", {"code": "no-fields"}, 400, M3terFinalError),
    ],
)
def test_final_statuses_are_not_retried(
    method: str,
    path: str,
    body: Any,
    status: int,
    error_class: type,
    m3ter_emulator: Any,
    make_client: Any,
    fake_time: FakeTime,
) -> None:
    client = make_client()
    _warm(client)
    attempts_before = client.stats.attempts

    with pytest.raises(error_class) as info:
        client.request(method, path, json=body)

    assert info.value.status == status
    assert info.value.attempts == 1
    assert info.value.message  # m3ter's own words are kept
    assert client.stats.attempts - attempts_before == 1
    assert fake_time.sleeps == []


def test_breaks_configuration_is_its_own_final_error(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    meter = client.request("POST", "meters", json=meter_body("storage", "gb", "requests"))
    client.request(
        "POST",
        "aggregations",
        json={
            "name": "GB",
            "meterId": meter["id"],
            "targetField": "gb",
            "aggregation": "SUM",
            "unit": "GB",
            "rounding": "NONE",
            "quantityPerUnit": 1,
        },
    )
    update = {**meter_body("storage", "requests"), "version": meter["version"]}

    with pytest.raises(M3terBreaksConfigurationError) as info:
        client.request("PUT", f"meters/{meter['id']}", json=update)

    assert info.value.status == 400
    assert info.value.attempts == 1
    assert "breaks configuration" in str(info.value)


def test_403_with_a_token_fetched_for_this_call_is_final_at_once(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(org_id="00000000-0000-4000-8000-0000000000ff")
    tokens_before = m3ter_emulator.stats()["tokens_issued"]

    with pytest.raises(M3terFinalError) as info:
        client.request("GET", "meters")

    # The token was minted for this call, so it cannot have expired: no refresh, no retry.
    assert (info.value.status, info.value.attempts) == (403, 1)
    assert client.stats.token_fetches == 1
    assert m3ter_emulator.stats()["tokens_issued"] - tokens_before == 1
    assert fake_time.sleeps == []


def test_403_with_an_older_token_refreshes_once_then_fails(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(org_id="00000000-0000-4000-8000-0000000000ff")
    with pytest.raises(M3terFinalError):
        client.request("GET", "meters")  # fetches the token this call then uses
    tokens_before = m3ter_emulator.stats()["tokens_issued"]

    with pytest.raises(M3terFinalError) as info:
        client.request("GET", "meters")

    assert info.value.status == 403
    assert info.value.attempts == 2  # a token that may have expired buys one refresh and one retry
    assert client.stats.token_fetches == 2
    assert m3ter_emulator.stats()["tokens_issued"] - tokens_before == 1
    assert fake_time.sleeps == []


def test_413_raises_payload_too_large_without_retry(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client()
    _warm(client)
    m3ter_emulator.set_faults(list_413_above_page_size=10, target="config")

    with pytest.raises(M3terPayloadTooLargeError) as info:
        client.request("GET", "meters", params={"pageSize": 50})

    assert (info.value.status, info.value.attempts) == (413, 1)


def test_connection_drops_are_retried(m3ter_emulator: Any, make_client: Any, fake_time: FakeTime) -> None:
    client = make_client()
    _warm(client)
    m3ter_emulator.set_faults(sequence=["drop", "drop", "ok"], target="config")

    assert client.request("GET", "meters") == {"data": []}

    assert len(fake_time.sleeps) == 2
    assert route_counts(m3ter_emulator.stats(), LIST_METERS) == {"drop": 2, "200": 2}


def test_lasting_connection_drops_become_a_transient_error(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(max_attempts=3)
    _warm(client)
    m3ter_emulator.set_faults(sequence=["drop"] * 5, target="config")

    with pytest.raises(M3terTransientError) as info:
        client.request("GET", "meters")

    assert info.value.status is None
    assert info.value.attempts == 3
    assert str(info.value).startswith(f"m3ter request GET {info.value.path} failed after 3 attempts")
    assert info.value.__cause__ is not None


def test_token_fetch_follows_the_transient_rules(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client()
    m3ter_emulator.set_faults(sequence=["500", "429", "ok"], target="token")

    assert client.request("GET", "meters") == {"data": []}

    assert client.stats.token_fetches == 1
    assert len(fake_time.sleeps) == 2
    assert fake_time.sleeps[1] == 1.0  # the first 429 of the token call
    assert route_counts(m3ter_emulator.stats(), "POST /oauth/token") == {"500": 1, "429": 1, "200": 1}


def test_bad_credentials_fail_at_the_token_without_retry(m3ter_emulator: Any, make_client: Any) -> None:
    client = make_client(api_secret="wrong-secret-value")

    with pytest.raises(M3terFinalError) as info:
        client.request("GET", "meters")

    assert info.value.path == "/oauth/token"
    assert info.value.attempts == 1
    assert "wrong-secret-value" not in str(info.value)


def test_tls_failure_is_final_without_retry(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    # Speaking TLS to the emulator's plain-HTTP port fails the handshake, like a bad certificate.
    client = make_client(config_url=m3ter_emulator.config_url.replace("http://", "https://"))

    with pytest.raises(M3terFinalError) as info:
        client.request("GET", "meters")

    assert info.value.status is None
    assert info.value.attempts == 1
    assert info.value.path == "/oauth/token"
    assert "SSLError" in str(info.value)
    assert fake_time.sleeps == []


def test_read_timeouts_are_retried_then_become_a_transient_error(
    m3ter_emulator: Any, make_client: Any, fake_time: FakeTime
) -> None:
    client = make_client(timeout=0.2, max_attempts=3)
    _warm(client)
    # The emulator answers every Config call 1.5 s late: each attempt hits the client's read timeout.
    m3ter_emulator.set_faults(latency_ms=1500, target="config", path_regex="/meters$")

    with pytest.raises(M3terTransientError) as info:
        client.request("GET", "meters")

    assert info.value.status is None
    assert info.value.attempts == 3
    assert "ReadTimeout" in str(info.value)
    assert "gave up after 3 attempts" in str(info.value)
    assert len(fake_time.sleeps) == 2
    assert all(0 <= wait <= backoff_limit(n, 60) for n, wait in enumerate(fake_time.sleeps))
