"""Every numeric and boolean connection setting is strict: a bad value fails naming connection and field.

Only documented values are accepted (``0`` switches a pacing limit off; nothing else below 1 does).
"""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection

from airflow_provider_m3ter.client import M3terConfigurationError
from airflow_provider_m3ter.connection_form import CONN_FIELDS
from airflow_provider_m3ter.hooks.m3ter import M3terHook
from airflow_provider_m3ter.hooks.settings import _ADVANCED_EXTRAS, schema_kind

ORG = "11111111-2222-4333-8444-555555555555"
SECRET = "Strict-Settings-Secret-77"
KINDS = {name: schema_kind(spec) for name, spec in CONN_FIELDS.items()} | _ADVANCED_EXTRAS
NUMBERS = sorted(name for name, kind in KINDS.items() if kind == "number")
INTEGERS = sorted(name for name, kind in KINDS.items() if kind == "integer")
BOOLEANS = sorted(name for name, kind in KINDS.items() if kind == "boolean")
RATES = ["ingest_requests_per_second", "ingest_requests_per_window", "config_requests_per_second",
         "config_requests_per_window"]  # fmt: skip


def _settings(extra: dict | str, **fields):
    base = {"conn_id": "m3ter_strict", "conn_type": "m3ter", "login": "key", "password": SECRET}
    text = extra if isinstance(extra, str) else json.dumps({"org_id": ORG, **extra})
    return M3terHook.settings_from_connection(Connection(**{**base, **fields}, extra=text))


def _refused(extra: dict | str, field: str, **fields) -> str:
    with pytest.raises(M3terConfigurationError) as info:
        _settings(extra, **fields)
    message = str(info.value)
    assert "m3ter connection 'm3ter_strict'" in message, message
    assert field in message, message
    assert info.value.field == field
    assert SECRET not in message
    assert len(message) < 1000
    return message


def test_the_kinds_cover_every_setting() -> None:
    assert len(NUMBERS) >= 7
    assert len(INTEGERS) >= 3
    assert BOOLEANS == ["allow_insecure_http", "verify_tls"]


def test_minus_fifty_requests_per_second_is_an_error_not_pacing_off() -> None:
    message = _refused({"ingest_requests_per_second": "-50"}, "ingest_requests_per_second")
    assert "'-50'" in message or "-50" in message


@pytest.mark.parametrize("name", RATES)
@pytest.mark.parametrize("value", ["-50", -1, "-0.5", -0.001])
def test_negative_rates_are_refused(name, value) -> None:
    _refused({name: value}, name)


@pytest.mark.parametrize("name", RATES)
@pytest.mark.parametrize("value", [0, "0", 0.0])
def test_zero_and_only_zero_switches_a_limit_off(name, value) -> None:
    assert getattr(_settings({name: value}), name) is None


BAD_NUMBERS = ["soon", "5_000", "inf", "-inf", "nan", "NaN", "1e400", "\u0665", "0x10", "5 5", "\uff11",
               True, [], {}, "5s", "--5"]  # fmt: skip


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("value", BAD_NUMBERS, ids=range(len(BAD_NUMBERS)))
def test_every_number_setting_refuses_non_numbers(name, value) -> None:
    _refused({name: value}, name)


@pytest.mark.parametrize("name", [n for n in NUMBERS if n not in RATES])
@pytest.mark.parametrize("value", [-1, "-1", "-0.0001"])
def test_number_settings_refuse_negative_values(name, value) -> None:
    _refused({name: value}, name)


@pytest.mark.parametrize("name", ["timeout", "deadline", "window_seconds"])
def test_durations_that_must_be_positive_refuse_zero(name) -> None:
    _refused({name: "0"}, name)


BAD_INTEGERS = ["2.5", 2.5, "1e3", "\u0665", "5_0", True, " ", "1" * 40, "two", "-1", 0, "0"]


@pytest.mark.parametrize("name", [n for n in INTEGERS if n not in RATES])
@pytest.mark.parametrize("value", BAD_INTEGERS, ids=range(len(BAD_INTEGERS)))
def test_every_integer_setting_refuses_non_integers_and_values_below_one(name, value) -> None:
    _refused({name: value}, name)


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize("value", ["maybe", "tru", 2, 0.5, "2", [], "yes please"])
def test_every_boolean_setting_refuses_non_booleans(name, value) -> None:
    _refused({name: value}, name)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("FALSE", False), (True, True), ("off", False), ("1", True), ("0", False)],
)
def test_boolean_words_are_read(value, expected) -> None:
    assert _settings({"allow_insecure_http": value}).allow_insecure_http is expected


def test_verify_tls_takes_only_an_existing_ca_bundle_path(tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert _settings({"verify_tls": str(bundle)}).verify_tls == str(bundle)
    _refused({"verify_tls": str(tmp_path / "missing.pem")}, "verify_tls")


def test_a_misspelt_extra_is_refused_with_a_suggestion() -> None:
    message = _refused({"ingest_request_per_second": "-50"}, "ingest_request_per_second")
    assert "did you mean 'ingest_requests_per_second'" in message


def test_a_key_given_twice_in_the_extra_json_is_refused() -> None:
    text = f'{{"org_id": "{ORG}", "timeout": 5, "timeout": 500}}'
    _refused(text, "timeout")


@pytest.mark.parametrize("port", [-1, 65536, 10**9, "80x", True])
def test_a_port_outside_1_to_65535_is_refused(port) -> None:
    _refused({}, "port", port=port)


def test_port_0_is_no_port_as_the_ui_posts_it() -> None:
    # Airflow's connection form posts port 0 for an empty field (apache/airflow#73298)
    assert _settings({}, port=0).config_url == _settings({}).config_url


def test_integer_and_number_text_forms_that_are_fine() -> None:
    settings = _settings(
        {"timeout": " 7.5 ", "max_attempts": "3", "pool_size": 4.0, "deadline": "1e2", "max_wait": "+2"}
    )
    assert (settings.timeout, settings.max_attempts, settings.pool_size) == (7.5, 3, 4)
    assert (settings.deadline, settings.max_wait) == (100.0, 2.0)


def test_a_port_that_contradicts_the_port_in_host_is_refused() -> None:
    # it used to be dropped silently in favour of the URL's port
    _refused({"ingest_url": "http://127.0.0.1:1"}, "port", host="http://localhost:9000", port=1234)
    same = _settings({"ingest_url": "http://127.0.0.1:1"}, host="http://localhost:9000", port=9000)
    assert same.config_url == "http://localhost:9000"
