"""Credentials and ids that are legal but unusual, or hostile: UTF-8 secrets end to end, ids in
URL paths validated before any request, and no secret in any error (message, args, cause, context)."""

from __future__ import annotations

import base64
import traceback
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client import ClientSettings, M3terClient, M3terConfigurationError
from airflow_provider_m3ter.client.jobs import BILL_JOB, DATA_EXPORT_JOB, FILE_UPLOAD_JOB, check_job
from airflow_provider_m3ter.client.paths import check_relative_path, uuid_segment
from tests.client.conftest import NO_PACING

ORG = "00000000-0000-4000-8000-000000000001"
UTF8_SECRET = "pässwörd-€-секрет-🔑"
UTF8_KEY = "ключ-é"


def _error_texts(error: BaseException) -> str:
    """Everything an error can show: str, repr, args, and the same for its whole cause/context chain."""
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current), repr(current.args)]
        seen.append("".join(traceback.format_exception(type(current), current, current.__traceback__)))
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


class NoRequests(requests.Session):
    """A session that fails the test on any request: the error must come first."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a request was sent: {args[:2]}")


# -- UTF-8 credentials (RFC 7617) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret"),
    [("key-1", "secret-é"), ("key-1", "secret-€"), (UTF8_KEY, UTF8_SECRET)],
    ids=["latin1-range", "beyond-latin1", "both-non-ascii"],
)
def test_non_ascii_credentials_get_a_token_and_make_calls(m3ter_emulator_factory, key, secret) -> None:
    emu = m3ter_emulator_factory(access_key_id=key, api_secret=secret)
    settings = ClientSettings(
        org_id=emu.org_id,
        access_key_id=key,
        api_secret=secret,
        config_url=emu.config_url,
        ingest_url=emu.ingest_url,
        **NO_PACING,
    )
    with M3terClient(settings) as client:
        assert client.request("GET", "meters", params={"pageSize": 1}) == {"data": []}
    assert emu.stats()["tokens_issued"] == 1


def test_the_emulator_reads_basic_credentials_as_utf8_only(m3ter_emulator_factory) -> None:
    emu = m3ter_emulator_factory(access_key_id="key-1", api_secret="secret-é")
    url = emu.config_url + "/oauth/token"

    def token_status(raw: bytes) -> int:
        header = "Basic " + base64.b64encode(raw).decode()
        return requests.post(
            url, headers={"Authorization": header}, data={"grant_type": "client_credentials"}, timeout=10
        ).status_code

    assert token_status("key-1:secret-é".encode()) == 200
    assert token_status("key-1:secret-é".encode("latin-1")) == 401  # what requests' HTTPBasicAuth sends


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"api_secret": "Known-Secret-\udcff-x"}, "api_secret"),  # a lone surrogate (bad decoding)
        ({"api_secret": "Known-Secret-\x00-x"}, "api_secret"),
        ({"api_secret": "Known-Secret-\r\nX-Injected: 1"}, "api_secret"),
        ({"api_secret": "Known-Secret-\x7f-x"}, "api_secret"),
        ({"access_key_id": "Known-Secret-key:with-colon"}, "access_key_id"),
        ({"access_key_id": "Known-Secret-\udcffkey"}, "access_key_id"),
    ],
)
def test_unusable_credentials_are_configuration_errors_without_the_value(changes, field) -> None:
    base = {"org_id": ORG, "access_key_id": "key-1", "api_secret": "Known-Secret-ok"}
    with pytest.raises(M3terConfigurationError) as info:
        ClientSettings(**{**base, **changes})
    assert info.value.field == field
    texts = _error_texts(info.value)
    assert "Known-Secret" not in texts
    assert field in str(info.value)


def test_a_bearer_token_that_cannot_travel_in_a_header_is_refused_without_it(m3ter_emulator) -> None:
    from airflow_provider_m3ter.client.auth import read_token_response
    from airflow_provider_m3ter.client.errors import M3terError

    for token in ("tok€n-Known-Secret", "tok\r\nen-Known-Secret", "Known-Secret " * 3):
        with pytest.raises(M3terError) as info:
            read_token_response({"access_token": token, "expires_in": 100})
        assert "Known-Secret" not in _error_texts(info.value)


# -- ids in URL paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "org_id",
    [
        "..",
        ".",
        "%2e%2e",
        "a/b",
        "a?b=1",
        "a#b",
        "",
        " ",
        "org-1",
        "00000000-0000-4000-8000-00000000000/",
        "00000000-0000-4000-8000-0000000000011",
        "00000000-0000-4000-8000-00000000001\n",
        "00000000_0000_4000_8000_000000000001",
        "\uff100000000-0000-4000-8000-000000000001",  # a fullwidth digit
    ],
)
def test_a_bad_org_id_is_a_configuration_error_naming_the_field(org_id) -> None:
    with pytest.raises(M3terConfigurationError) as info:
        ClientSettings(org_id=org_id, access_key_id="k", api_secret="s")
    assert info.value.field == "org_id"
    assert "org_id" in str(info.value)


HOSTILE_IDS = ["..", ".", "../meters", "a/b", "%2e%2e", "x?y", "x#y", "", "b1", "ab\ncd", "A" * 10_000, None,
               42]  # fmt: skip


@pytest.mark.parametrize("job_kind", [FILE_UPLOAD_JOB, BILL_JOB, DATA_EXPORT_JOB], ids=lambda k: k.name)
@pytest.mark.parametrize("job_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_a_bad_job_id_is_a_configuration_error_before_any_request(job_kind, job_id) -> None:
    settings = ClientSettings(org_id=ORG, access_key_id="k", api_secret="s", **NO_PACING)
    client = M3terClient(settings, session=NoRequests())
    with client, pytest.raises(M3terConfigurationError) as info:
        check_job(client, job_kind, job_id)
    assert info.value.field == "job_id"
    assert len(str(info.value)) < 300  # a huge id is not echoed in full


def test_a_uuid_job_id_is_used_as_is(m3ter_emulator, make_client) -> None:
    client = make_client()
    job_id = "00000000-0000-4000-8000-0000000000ab"
    assert BILL_JOB.url_path(job_id) == f"billjobs/{job_id}"
    with pytest.raises(Exception, match="404"):
        check_job(client, BILL_JOB, job_id)


@pytest.mark.parametrize(
    "path",
    ["..", "meters/..", "meters/../accounts", "./meters", "meters/%2E%2E", "meters//x", "meters/", "a b",
     "meters?x=1", "meters#x", "meters\\..", "/../oauth/token", "meters/\u00e9",
     # dot segments a decoding server would see: behind encoded slashes, a matrix parameter, escapes
     "meters/a%2f..%2f..%2foauth", "meters/%2e%2e%2f", "meters/..;", "meters/..;x=1", "meters/%2E.",
     "meters/a%5C..%5Cb", "meters/a%00", "meters/%0a"],
)  # fmt: skip
def test_request_refuses_a_path_with_unsafe_segments_before_sending(path) -> None:
    settings = ClientSettings(org_id=ORG, access_key_id="k", api_secret="s", **NO_PACING)
    with M3terClient(settings, session=NoRequests()) as client, pytest.raises(M3terConfigurationError):
        client.request("GET", path)


def test_safe_paths_and_ids_pass() -> None:
    for path in ("meters", "/oauth/token", "fileuploads/measurements/jobs/abc-1", "a%2Fb", "meters/x.y"):
        assert check_relative_path(path) == path
    upper = "ABCDEF00-0000-4000-8000-000000000001"
    assert uuid_segment(upper, "id") == upper


def test_a_meter_id_from_the_server_is_checked_before_it_reaches_a_path() -> None:
    from airflow_provider_m3ter.client.meter_apply import _meter_id

    assert _meter_id({"id": ORG, "code": "m"}) == ORG
    for bad in ("../accounts/x", "..", "", None):
        with pytest.raises(M3terConfigurationError, match="meter 'm'"):
            _meter_id({"id": bad, "code": "m"})


@hypothesis_settings(max_examples=2000, deadline=None)
@given(path=st.text(alphabet="./%2eE;\\\nab-_~", max_size=12))
def test_the_fast_path_check_agrees_with_the_full_check(path: str) -> None:
    # check_relative_path decides plain paths with one pattern; it must never accept what the
    # segment-by-segment check refuses (nor refuse what it accepts)
    from airflow_provider_m3ter.client.paths import _check_segments

    try:
        _check_segments(path)
        full_ok = True
    except M3terConfigurationError:
        full_ok = False
    try:
        check_relative_path(path)
        fast_ok = True
    except M3terConfigurationError:
        fast_ok = False
    assert fast_ok == full_ok, path
