"""The Airflow-facing exceptions: which client error becomes which, and what they carry."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_m3ter.client.errors import (
    M3terConfigurationError,
    M3terError,
    M3terPayloadTooLargeError,
    M3terTransientError,
    error_for_status,
)
from airflow_provider_m3ter.compat import AirflowException, AirflowFailException
from airflow_provider_m3ter.exceptions import (
    M3terFinalFailure,
    M3terTransientFailure,
    describe_error,
    to_airflow_failure,
)

PATH = "/organizations/org-1/meters"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (error_for_status(400, "PUT", PATH, "request breaks configuration"), M3terFinalFailure),
        (error_for_status(403, "GET", PATH, "Forbidden"), M3terFinalFailure),
        (error_for_status(404, "GET", PATH, "Not found"), M3terFinalFailure),
        (M3terPayloadTooLargeError(413, "GET", PATH, "Response too large"), M3terFinalFailure),
        (M3terConfigurationError("ClientSettings.org_id is required", field="org_id"), M3terFinalFailure),
        (M3terError(418, "GET", PATH, "no retry rule"), M3terFinalFailure),
        (
            error_for_status(429, "POST", "/organizations/org-1/measurements", "slow down", 6, 3.0),
            M3terTransientFailure,
        ),
        (error_for_status(503, "GET", PATH, "Service Unavailable", 6), M3terTransientFailure),
        (M3terTransientError(None, "GET", PATH, "connection reset", 6), M3terTransientFailure),
    ],
)
def test_each_client_error_maps_to_one_failure(error: M3terError, expected: type) -> None:
    failure = to_airflow_failure(error)
    assert type(failure) is expected
    assert failure.error is error
    assert failure.__cause__ is error
    assert isinstance(failure, AirflowException)
    assert isinstance(failure, AirflowFailException) is (expected is M3terFinalFailure)
    assert failure.status == error.status
    assert failure.retry_after == error.retry_after


def test_message_names_status_method_path_and_m3ters_message() -> None:
    failure = to_airflow_failure(error_for_status(404, "DELETE", f"{PATH}/m-1", "Meter not found", 1))
    assert (
        str(failure) == f"m3ter returned 404 Not Found for DELETE {PATH}/m-1 after 1 attempt: Meter not found"
    )
    config = to_airflow_failure(M3terConfigurationError("m3ter connection 'x' is missing login"))
    assert str(config) == "M3terConfigurationError: m3ter connection 'x' is missing login"
    assert describe_error(ValueError("bad")) == "ValueError: bad"


def test_messages_are_masked() -> None:
    from airflow_provider_m3ter.compat import mask_secret

    mask_secret("exceptions-test-token-abcdef")
    failure = to_airflow_failure(error_for_status(400, "POST", PATH, "echo exceptions-test-token-abcdef"))
    assert "exceptions-test-token-abcdef" not in str(failure)
    assert str(failure).endswith("echo ***")


def test_failures_survive_pickling() -> None:
    failure = to_airflow_failure(error_for_status(502, "GET", PATH, "Bad Gateway", 6, 2.0))
    again = pickle.loads(pickle.dumps(failure))  # noqa: S301 - our own bytes
    assert type(again) is M3terTransientFailure
    assert str(again) == str(failure)
    assert again.retry_after == 2.0
    assert isinstance(again.error, M3terTransientError)
