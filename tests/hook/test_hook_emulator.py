"""M3terHook over real HTTP against the emulator: the calls, the error boundary, masking, test_connection."""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

import pytest
import requests

from airflow_provider_m3ter.client.errors import (
    M3terConfigurationError,
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
)
from airflow_provider_m3ter.compat import AirflowException, AirflowFailException
from airflow_provider_m3ter.exceptions import M3terFinalFailure, M3terTransientFailure
from airflow_provider_m3ter.hooks import m3ter as hook_module
from airflow_provider_m3ter.hooks.m3ter import M3terHook

MISSING = "00000000-0000-4000-8000-00000000dead"
NO_SLEEP = {"sleep": lambda seconds: None}


def _use(monkeypatch: pytest.MonkeyPatch, emu: Any, form: str = "json", **extra: Any) -> None:
    """Define ``m3ter_default`` for the emulator the way a deployment would: an environment variable."""
    if form == "uri":
        assert not extra
        value = emu.connection_uri()
    else:
        conn = emu.connection()
        conn["extra"].update(extra)
        value = json.dumps(conn)
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", value)


@pytest.mark.parametrize("form", ["json", "uri"])
def test_calls_work_with_a_connection_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any, form: str
) -> None:
    _use(monkeypatch, m3ter_emulator, form)
    hook = M3terHook()
    for code in ("seats", "storage", "compute"):
        hook.request("POST", "products", json={"code": code, "name": code.title()})
    assert hook.request("GET", "meters", params={"pageSize": 1}) == {"data": []}
    assert [p["code"] for p in hook.paginate("products", page_size=1)] == ["compute", "storage", "seats"]
    measurement = {"uid": "u-1", "meter": "api_calls", "account": "acme", "ts": "2024-01-01T00:00:00Z"}
    assert hook.submit_measurements([measurement]) == {"result": "accepted"}
    assert hook.get_client() is hook.get_conn()  # built once, reused
    stats = m3ter_emulator.stats()
    assert stats["tokens_issued"] == 1
    assert stats["measurements_received"] == 1
    assert stats["requests"]["GET /organizations/{orgId}/products"] == {"200": 3}  # three pages


def test_secret_and_every_token_are_registered_with_the_masker(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    from airflow_provider_m3ter.compat import redact

    _use(monkeypatch, m3ter_emulator)
    registered: list[str] = []
    real = hook_module.mask_secret
    monkeypatch.setattr(hook_module, "mask_secret", lambda value: (registered.append(value), real(value)))
    sent: list[str] = []
    session = requests.Session()
    session.hooks["response"].append(
        lambda r, *a, **k: sent.append(r.request.headers.get("Authorization", "").removeprefix("Bearer "))
    )
    hook = M3terHook(client_kwargs={"session": session})
    hook.request("GET", "meters")
    m3ter_emulator.expire_tokens()
    hook.request("GET", "meters")  # 403, new token, retried once
    tokens = {t for t in sent if t and not t.startswith("Basic")}
    assert len(tokens) == 2
    assert m3ter_emulator.stats()["tokens_issued"] == 2
    basic = base64.b64encode(f"{m3ter_emulator.access_key_id}:{m3ter_emulator.api_secret}".encode()).decode()
    assert registered[:2] == [m3ter_emulator.api_secret, basic]  # the secret, and the Basic header's form
    assert set(registered[2:]) == tokens
    for value in (m3ter_emulator.api_secret, basic, *tokens):
        assert redact(f"value={value}") == "value=***"


def test_final_errors_become_airflow_fail_exceptions(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    _use(monkeypatch, m3ter_emulator)
    hook = M3terHook()
    with pytest.raises(M3terFinalFailure) as info:
        hook.request("GET", f"meters/{MISSING}")
    failure = info.value
    assert isinstance(failure, AirflowFailException)
    assert isinstance(failure.error, M3terFinalError)
    assert failure.__cause__ is failure.error
    assert failure.status == 404
    text = str(failure)
    for part in ("404", "GET", f"/organizations/{m3ter_emulator.org_id}/meters/{MISSING}", "Meter not found"):
        assert part in text

    with pytest.raises(M3terFinalFailure, match=r"400 Bad Request for POST .*/meters.*dataFields"):
        hook.request("POST", "meters", json={"code": "broken"})


def test_over_size_ingest_is_final(monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any) -> None:
    _use(monkeypatch, m3ter_emulator)
    body = json.dumps({"measurements": [{"meter": "m", "account": "a", "ts": "2024-01-01T00:00:00Z"}]})
    body = body[:-2] + " " * 520_000 + body[-2:]
    with pytest.raises(M3terFinalFailure) as info:
        M3terHook().submit_measurements(body.encode())
    assert isinstance(info.value.error, M3terPayloadTooLargeError)
    assert m3ter_emulator.stats()["measurements_received"] == 0


def test_transient_errors_become_retryable_failures(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    _use(monkeypatch, m3ter_emulator, max_attempts=2)
    m3ter_emulator.set_faults(sequence=["500", "429"], retry_after="4", target="config")
    with pytest.raises(M3terTransientFailure) as info:
        M3terHook(client_kwargs=NO_SLEEP).request("GET", "meters")
    failure = info.value
    assert not isinstance(failure, AirflowFailException)
    assert isinstance(failure, AirflowException)
    assert isinstance(failure.error, M3terTransientError)
    assert failure.__cause__ is failure.error
    assert failure.retry_after == 4.0
    assert "429" in str(failure)
    assert "2 attempts" in str(failure)


def test_paginate_translates_errors_between_pages(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    _use(monkeypatch, m3ter_emulator, max_attempts=2)
    hook = M3terHook(client_kwargs=NO_SLEEP)
    for code in ("a1", "a2"):
        hook.request("POST", "products", json={"code": code, "name": code})
    m3ter_emulator.set_faults(sequence=["ok", "502", "502"], target="config", path_regex="/products")
    pages = hook.paginate("products", page_size=1)
    assert next(pages)["code"] == "a2"  # nothing is fetched until iteration, then page 1 arrives
    with pytest.raises(M3terTransientFailure, match="502"):
        next(pages)


def test_translate_errors_wraps_direct_client_use_and_ignores_other_errors(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    _use(monkeypatch, m3ter_emulator)
    hook = M3terHook()
    with pytest.raises(M3terFinalFailure) as info, hook.translate_errors():
        hook.get_client().request("DELETE", f"meters/{MISSING}")
    assert info.value.status == 404
    with pytest.raises(KeyError), hook.translate_errors():
        raise KeyError("not an m3ter error")


def test_test_connection_succeeds_and_fails_without_secrets(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    _use(monkeypatch, m3ter_emulator)
    ok, message = M3terHook().test_connection()
    assert ok is True
    assert m3ter_emulator.org_id in message
    assert m3ter_emulator.stats()["requests"]["GET /organizations/{orgId}/meters"] == {"200": 1}

    wrong = m3ter_emulator.connection()
    wrong["password"] = "Wrong-Secret-9d8c7b"
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_WRONG", json.dumps(wrong))
    ok, message = M3terHook("m3ter_wrong").test_connection()
    assert ok is False
    assert "/oauth/token" in message
    assert "Wrong-Secret-9d8c7b" not in message

    incomplete = m3ter_emulator.connection()
    del incomplete["extra"]["org_id"]
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_INCOMPLETE", json.dumps(incomplete))
    ok, message = M3terHook("m3ter_incomplete").test_connection()
    assert ok is False
    assert "m3ter connection 'm3ter_incomplete' is missing extra 'org_id'" in message


def test_test_connection_answers_quickly_when_m3ter_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = {
        "conn_type": "m3ter",
        "host": f"http://127.0.0.1:{port}",
        "login": "key",
        "password": "Unreachable-Secret-1234",
        "extra": {
            "org_id": "00000000-0000-4000-8000-00000000000b",
            "ingest_url": f"http://127.0.0.1:{port}",
            "max_wait": 0.05,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DOWN", json.dumps(conn))
    started = time.monotonic()
    ok, message = M3terHook("m3ter_down").test_connection()
    assert ok is False
    assert time.monotonic() - started < 10
    assert "after 2 attempts" in message
    assert "Unreachable-Secret-1234" not in message


def test_get_client_reports_invalid_settings_as_final(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    conn = m3ter_emulator.connection()
    conn["host"] = "http://m3ter.example.com"  # plain http to a remote host
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    with pytest.raises(M3terFinalFailure) as info:
        M3terHook().request("GET", "meters")
    assert isinstance(info.value.error, M3terConfigurationError)
    assert "m3ter connection 'm3ter_default', host (Config API URL)" in str(info.value)
    assert m3ter_emulator.stats()["tokens_issued"] == 0
