"""Issue 11, item 4: the hook refuses a Config/Ingest host pair it cannot trust."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_provider_m3ter.client import M3terConfigurationError
from airflow_provider_m3ter.hooks.m3ter import M3terHook

ORG = "11111111-2222-4333-8444-555555555555"


def _conn(host: str, ingest_url: str | None) -> Connection:
    extra = {"org_id": ORG} | ({"ingest_url": ingest_url} if ingest_url else {})
    return Connection(
        conn_id="m3ter_mixed",
        conn_type="m3ter",
        host=host,
        login="key-id",
        password="the-secret-value",
        extra=json.dumps(extra),
    )


@pytest.mark.parametrize(
    ("host", "ingest_url"),
    [
        # what the old form stored for an emulator: its default Ingest URL beside a loopback Config host
        ("http://127.0.0.1:8080", "https://ingest.m3ter.com"),
        ("https://m3ter-proxy.example.com", "https://ingest.m3ter.com"),
        ("https://m3ter-proxy.example.com", "https://INGEST.m3ter.com./"),
        ("https://api.m3ter.com", "http://127.0.0.1:8081"),
        ("https://api.m3ter.com", "https://ingest.m3ter.com.evil.example"),
    ],
)
def test_a_mixed_pair_is_refused_naming_the_field(host: str, ingest_url: str) -> None:
    with pytest.raises(M3terConfigurationError) as info:
        M3terHook.settings_from_connection(_conn(host, ingest_url))
    assert info.value.field == "ingest_url"
    assert "m3ter_mixed" in str(info.value)
    assert "do not belong together" in str(info.value)
    assert "the-secret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("host", "ingest_url", "expected"),
    [
        ("https://api.m3ter.com", None, "https://ingest.m3ter.com"),
        ("https://api.m3ter.com", "https://ingest.m3ter.com", "https://ingest.m3ter.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("https://m3ter-proxy.example.com", "https://ingest-proxy.example.com", None),
    ],
)
def test_a_consistent_pair_is_accepted(host: str, ingest_url: str | None, expected: str | None) -> None:
    settings = M3terHook.settings_from_connection(_conn(host, ingest_url))
    assert settings.ingest_url == (expected or ingest_url)
