"""Retryability is decided once, by the error: the hook, the retry policy and the client agree."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_m3ter.client.errors import (
    M3terBreaksConfigurationError,
    M3terConfigurationError,
    M3terError,
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
)
from airflow_provider_m3ter.client.retry import network_error_retryable
from airflow_provider_m3ter.exceptions import M3terFinalFailure, M3terTransientFailure, to_airflow_failure
from airflow_provider_m3ter.retry_policy import find_m3ter_error

ERRORS = [
    (M3terTransientError(503, "GET", "/x", "down"), True),
    (M3terTransientError(None, "GET", "/x", "ReadTimeout"), True),
    (M3terFinalError(404, "GET", "/x", "Not found"), False),
    (M3terBreaksConfigurationError(400, "PUT", "/x", "breaks configuration"), False),
    (M3terPayloadTooLargeError(413, "POST", "/x", "too large"), False),
    (M3terConfigurationError("ClientSettings.org_id: missing"), False),
    (M3terError(200, "POST", "/oauth/token", "no access_token"), False),
]


@pytest.mark.parametrize(("error", "retryable"), ERRORS)
def test_every_reader_follows_the_errors_own_verdict(error: M3terError, retryable: bool) -> None:
    assert error.retryable is retryable
    failure = to_airflow_failure(error)
    assert isinstance(failure, M3terTransientFailure if retryable else M3terFinalFailure)
    assert failure.retryable is retryable
    for raised in (error, failure):
        found = find_m3ter_error(raised)
        assert found is not None
        assert found[0] == ("transient" if retryable else "final")


def test_network_failures_are_retried_but_certificate_problems_are_not() -> None:
    assert network_error_retryable(requests.ConnectionError("refused"))
    assert network_error_retryable(requests.exceptions.ReadTimeout("slow"))
    assert network_error_retryable(requests.exceptions.ChunkedEncodingError("cut"))
    assert not network_error_retryable(requests.exceptions.SSLError("certificate verify failed"))
    assert not network_error_retryable(ValueError("not a network error"))
