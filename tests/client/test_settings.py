"""ClientSettings validation: URL safety, named errors, no secret in repr."""

from __future__ import annotations

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terConfigurationError

ORG = "00000000-0000-4000-8000-000000000011"
BASE = {"org_id": ORG, "access_key_id": "key-1", "api_secret": "s3cr3t-value"}


def test_defaults_and_repr_hides_the_secret() -> None:
    settings = ClientSettings(**BASE)
    assert settings.config_url == "https://api.m3ter.com"
    assert settings.ingest_url == "https://ingest.m3ter.com"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings)
    assert "00000000-0000-4000-8000-000000000011" in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.10.0.2",
        "http://localhost:9000/",
        "http://[::1]:8080",
        "https://x.example",
    ],
)
def test_loopback_http_and_any_https_are_accepted(url: str) -> None:
    settings = ClientSettings(**BASE, config_url=url, ingest_url=url)
    assert settings.config_url == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://api.m3ter.com", "http://10.0.0.5:8080", "http://localhost.evil.com"])
def test_plain_http_elsewhere_is_refused_unless_allowed(url: str) -> None:
    with pytest.raises(M3terConfigurationError, match=r"ClientSettings\.ingest_url: plain http://") as info:
        ClientSettings(**BASE, ingest_url=url)
    assert info.value.field == "ingest_url"
    assert ClientSettings(**BASE, ingest_url=url, allow_insecure_http=True).ingest_url == url


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"org_id": ""}, "org_id"),
        ({"org_id": "   "}, "org_id"),
        ({"access_key_id": ""}, "access_key_id"),
        ({"api_secret": ""}, "api_secret"),
        ({"config_url": "ftp://api.m3ter.com"}, "config_url"),
        ({"config_url": "https://"}, "config_url"),
        ({"config_url": "https://user:pw@api.m3ter.com"}, "config_url"),
        ({"config_url": "https://api.m3ter.com?x=1"}, "config_url"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"deadline": -1}, "deadline"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": 101}, "max_attempts"),
        ({"deadline": 86_400.5}, "deadline"),
        ({"timeout": 1e12}, "timeout"),
        ({"max_wait": 1e300}, "max_wait"),
        ({"token_refresh_margin": 1e10}, "token_refresh_margin"),
        ({"window_seconds": 1e15}, "window_seconds"),
        ({"pool_size": 20_000_000}, "pool_size"),
        ({"ingest_requests_per_second": 1e9}, "ingest_requests_per_second"),
        ({"config_requests_per_window": 10**12}, "config_requests_per_window"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_wait": -0.1}, "max_wait"),
        ({"pool_size": 0}, "pool_size"),
        ({"ingest_requests_per_second": 0}, "ingest_requests_per_second"),
        ({"config_requests_per_window": -5}, "config_requests_per_window"),
        ({"window_seconds": 0}, "window_seconds"),
        ({"verify_tls": ""}, "verify_tls"),
    ],
)
def test_bad_values_name_the_setting(changes: dict, field: str) -> None:
    with pytest.raises(M3terConfigurationError, match=rf"ClientSettings\.{field}") as info:
        ClientSettings(**{**BASE, **changes})
    assert info.value.field == field
    assert "s3cr3t-value" not in str(info.value)


def test_credentials_are_stripped_and_pacing_may_be_disabled() -> None:
    settings = ClientSettings(
        org_id=" 00000000-0000-4000-8000-000000000011 ",
        access_key_id="key\n",
        api_secret=" s ",
        ingest_requests_per_second=None,
        ingest_requests_per_window=None,
        verify_tls="/etc/ssl/certs/ca.pem",
    )
    assert (settings.org_id, settings.access_key_id, settings.api_secret) == (ORG, "key", "s")
    assert settings.verify_tls == "/etc/ssl/certs/ca.pem"


def test_a_refused_url_is_shown_without_its_credentials() -> None:
    with pytest.raises(M3terConfigurationError) as info:
        ClientSettings(**BASE, config_url="ftp://someone:pa55w0rd@api.m3ter.com/x")
    assert "pa55w0rd" not in str(info.value)
    assert "ftp://api.m3ter.com/x" in str(info.value)
