"""Connection -> ClientSettings: every way a user can write an m3ter connection, and every mistake."""

from __future__ import annotations

import json

import certifi
import pytest
from airflow.sdk import Connection

from airflow_provider_m3ter.client import ClientSettings, M3terConfigurationError
from airflow_provider_m3ter.connection_form import CONN_FIELDS
from airflow_provider_m3ter.exceptions import M3terFinalFailure
from airflow_provider_m3ter.hooks.m3ter import M3terHook
from tests.airflow_lines import connection_from_json, connection_from_uri

ORG = "11111111-2222-4333-8444-555555555555"
CA_BUNDLE = certifi.where()


def _conn(**kwargs) -> Connection:
    base = {"conn_id": "m3ter_test", "conn_type": "m3ter", "login": "key-id", "password": "the-secret-value"}
    extra = kwargs.pop("extra", {"org_id": ORG})
    return Connection(**{**base, **kwargs}, extra=json.dumps(extra))


def test_defaults_are_m3ters_public_hosts_with_tls_verification() -> None:
    settings = M3terHook.settings_from_connection(_conn())
    assert settings.config_url == "https://api.m3ter.com"
    assert settings.ingest_url == "https://ingest.m3ter.com"
    assert settings.org_id == ORG
    assert settings.access_key_id == "key-id"
    assert settings.api_secret == "the-secret-value"
    assert settings.verify_tls is True
    assert settings.allow_insecure_http is False
    assert "the-secret-value" not in repr(settings)


@pytest.mark.parametrize(
    ("host", "port", "schema", "config_url", "ingest_url"),
    [
        ("https://api.m3ter.com/", None, None, "https://api.m3ter.com", "https://ingest.m3ter.com"),
        ("api.m3ter.com", None, None, "https://api.m3ter.com", "https://ingest.m3ter.com"),
        (
            "api.eu.example.com",
            8443,
            None,
            "https://api.eu.example.com:8443",
            "https://ingest.eu.example.com:8443",
        ),
        ("127.0.0.1", 8080, "http", "http://127.0.0.1:8080", None),
    ],
)
def test_host_may_be_a_url_or_a_bare_host(
    host: str, port: int | None, schema: str | None, config_url: str, ingest_url: str | None
) -> None:
    extra = {"org_id": ORG} if ingest_url else {"org_id": ORG, "ingest_url": "http://127.0.0.1:8081"}
    settings = M3terHook.settings_from_connection(_conn(host=host, port=port, schema=schema, extra=extra))
    assert settings.config_url == config_url
    assert settings.ingest_url == (ingest_url or "http://127.0.0.1:8081")


@pytest.mark.parametrize("host", ["http://127.0.0.1:8080", "https://m3ter-proxy.internal"])
def test_an_ingest_url_that_cannot_be_derived_must_be_given(host: str) -> None:
    # guessing m3ter's public Ingest host would send an emulator's or a proxy's token there
    with pytest.raises(M3terConfigurationError) as info:
        M3terHook.settings_from_connection(_conn(host=host))
    assert info.value.field == "ingest_url"
    assert "'m3ter_test'" in str(info.value)
    assert "ingest_url" in str(info.value)


def test_every_form_field_reaches_the_settings_with_its_type() -> None:
    extra = {
        "org_id": ORG,
        "ingest_url": "https://ingest.example.com/",
        "timeout": "12.5",
        "max_attempts": "3",
        "deadline": 90,
        "ingest_requests_per_second": "10",
        "ingest_requests_per_window": 1000,
        "config_requests_per_second": 0,  # 0 = no client-side pacing
        "config_requests_per_window": "0",
        "allow_insecure_http": "true",
        "verify_tls": "false",
    }
    assert set(extra) == set(CONN_FIELDS)  # the test covers the whole form
    # a Config host of the same (non-m3ter) domain: a mixed m3ter/other pair is refused
    settings = M3terHook.settings_from_connection(_conn(host="https://api.example.com", extra=extra))
    assert settings.ingest_url == "https://ingest.example.com"
    assert settings.timeout == 12.5
    assert settings.max_attempts == 3
    assert settings.deadline == 90.0
    assert settings.ingest_requests_per_second == 10.0
    assert settings.ingest_requests_per_window == 1000
    assert settings.config_requests_per_second is None
    assert settings.config_requests_per_window is None
    assert settings.allow_insecure_http is True
    assert settings.verify_tls is False


def test_prefixed_extras_work_and_short_names_win() -> None:
    extra = {
        "extra__m3ter__org_id": ORG,
        "extra__m3ter__timeout": "5",
        "timeout": "7",
        "extra__m3ter__verify_tls": CA_BUNDLE,
        "max_wait": "2",
    }
    settings = M3terHook.settings_from_connection(_conn(extra=extra))
    assert settings.org_id == ORG
    assert settings.timeout == 7.0
    assert settings.verify_tls == CA_BUNDLE
    assert settings.max_wait == 2.0


def test_uri_form_round_trips() -> None:
    conn = connection_from_uri(
        "m3ter_uri",
        f"m3ter://key-id:s%2Fecret%40x@api.m3ter.com/?org_id={ORG}&max_attempts=2&verify_tls=true",
    )
    settings = M3terHook.settings_from_connection(conn)
    assert settings.api_secret == "s/ecret@x"
    assert settings.max_attempts == 2
    assert settings.config_url == "https://api.m3ter.com"


def test_json_form_round_trips() -> None:
    conn = connection_from_json(
        json.dumps(
            {
                "conn_type": "m3ter",
                "host": "http://127.0.0.1:8080",
                "login": "key-id",
                "password": "the-secret-value",
                "extra": {"org_id": ORG, "ingest_url": "http://127.0.0.1:8081"},
            }
        ),
        conn_id="m3ter_json",
    )
    settings = M3terHook.settings_from_connection(conn)
    assert (settings.config_url, settings.ingest_url) == ("http://127.0.0.1:8080", "http://127.0.0.1:8081")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"extra": {}}, "org_id", ["extra 'org_id' (Organization ID)"]),
        ({"login": ""}, "login", ["login (Access Key ID)"]),
        ({"password": None}, "password", ["password (API Secret)"]),
        (
            {"login": None, "password": "", "extra": {"timeout": 3}},
            "org_id",
            ["extra 'org_id'", "login (Access Key ID)", "password (API Secret)"],
        ),
    ],
)
def test_missing_fields_are_named_with_the_connection_id(change: dict, field: str, words: list[str]) -> None:
    with pytest.raises(M3terConfigurationError) as info:
        M3terHook.settings_from_connection(_conn(**change))
    assert "m3ter connection 'm3ter_test' is missing" in str(info.value)
    for word in words:
        assert word in str(info.value)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"org_id": ORG, "timeout": "soon"}, ["extra 'timeout'", "must be a number", "'soon'"]),
        ({"org_id": ORG, "max_attempts": 2.5}, ["extra 'max_attempts'", "must be an integer"]),
        ({"org_id": ORG, "allow_insecure_http": "maybe"}, ["extra 'allow_insecure_http'", "boolean"]),
        ({"org_id": ORG, "timeout": -1}, ["extra 'timeout'", "finite number greater than 0"]),
        ({"org_id": ORG, "ingest_url": "ftp://x"}, ["extra 'ingest_url'", "http(s) URL"]),
        # huge values would otherwise fail only at call time, deep in the HTTP stack
        ({"org_id": ORG, "deadline": 1e12}, ["extra 'deadline'", "at most 86400"]),
        ({"org_id": ORG, "timeout": "1e12"}, ["extra 'timeout'", "at most 86400"]),
        ({"org_id": ORG, "window_seconds": 1e15}, ["extra 'window_seconds'", "at most 86400"]),
        ({"org_id": ORG, "pool_size": 20000000}, ["extra 'pool_size'", "from 1 to 256"]),
        ({"org_id": ORG, "max_attempts": 10**30}, ["extra 'max_attempts'", "from 1 to 100"]),
    ],
)
def test_bad_values_name_the_connection_and_the_extra(extra: dict, words: list[str]) -> None:
    with pytest.raises(M3terConfigurationError) as info:
        M3terHook.settings_from_connection(_conn(extra=extra))
    assert "m3ter connection 'm3ter_test'" in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_plain_http_is_refused_unless_loopback_or_explicitly_allowed() -> None:
    with pytest.raises(M3terConfigurationError) as info:
        M3terHook.settings_from_connection(
            _conn(
                host="http://m3ter-proxy.internal", extra={"org_id": ORG, "ingest_url": "https://i.internal"}
            )
        )
    assert "host (Config API URL)" in str(info.value)
    assert "unencrypted" in str(info.value)
    with pytest.raises(M3terConfigurationError, match="extra 'ingest_url'"):
        M3terHook.settings_from_connection(
            _conn(extra={"org_id": ORG, "ingest_url": "http://ingest.internal"})
        )
    allowed = M3terHook.settings_from_connection(
        _conn(
            host="http://m3ter-proxy.internal",
            extra={"org_id": ORG, "ingest_url": "http://ingest.internal", "allow_insecure_http": True},
        )
    )
    assert allowed.config_url == "http://m3ter-proxy.internal"
    assert isinstance(allowed, ClientSettings)


def test_invalid_extra_json_is_named() -> None:
    conn = Connection(conn_id="m3ter_test", conn_type="m3ter", login="k", password="p", extra="{not json")
    with pytest.raises(
        M3terConfigurationError, match="m3ter connection 'm3ter_test': extra is not valid JSON"
    ):
        M3terHook.settings_from_connection(conn)


def test_constructor_does_no_lookup_and_get_client_fails_final_on_bad_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook = M3terHook("m3ter_not_defined_anywhere")  # no connection exists: building must still work
    assert hook.m3ter_conn_id == "m3ter_not_defined_anywhere"
    assert hook._client is None
    monkeypatch.setenv(
        "AIRFLOW_CONN_M3TER_BROKEN",
        json.dumps({"conn_type": "m3ter", "login": "key-id", "password": "the-secret-value"}),
    )
    with pytest.raises(M3terFinalFailure) as info:
        M3terHook("m3ter_broken").get_client()
    assert "m3ter connection 'm3ter_broken' is missing extra 'org_id'" in str(info.value)
    assert isinstance(info.value.error, M3terConfigurationError)
