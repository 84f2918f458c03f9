"""M3terRetryPolicy: which m3ter errors fail at once, which retry and after how long."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk import DAG
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_m3ter.client.errors import (
    M3terBreaksConfigurationError,
    M3terConfigurationError,
    M3terError,
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
    error_for_status,
)
from airflow_provider_m3ter.compat import RetryPolicy
from airflow_provider_m3ter.exceptions import M3terFinalFailure, M3terTransientFailure
from airflow_provider_m3ter.retry_policy import RETRY_POLICY_SUPPORTED, M3terRetryPolicy, find_m3ter_error

# version gate: Airflow has retry policies from 3.3 only (test_retry_policy_inert.py covers older lines)
pytestmark = pytest.mark.skipif(
    not RETRY_POLICY_SUPPORTED, reason="version-gated: Airflow's RetryPolicy exists from Airflow 3.3"
)
if RETRY_POLICY_SUPPORTED:
    from airflow.sdk.definitions.retry_policy import RetryAction

PATH = "/organizations/org-1/meters"


def _transient(status: int = 503, retry_after: float | None = None) -> M3terTransientError:
    return M3terTransientError(
        status, "GET", PATH, "Service Unavailable", attempts=6, retry_after=retry_after
    )


def test_is_an_airflow_retry_policy() -> None:
    assert RETRY_POLICY_SUPPORTED
    assert isinstance(M3terRetryPolicy(), RetryPolicy)


@pytest.mark.parametrize(
    "error",
    [
        error_for_status(400, "PUT", PATH, "Invalid field 'name'"),
        error_for_status(400, "PUT", PATH, "Request breaks configuration"),
        error_for_status(403, "GET", PATH, "Forbidden"),
        error_for_status(404, "GET", PATH, "Not found"),
        M3terPayloadTooLargeError(413, "POST", PATH, "Response too large"),
        M3terConfigurationError("ClientSettings.org_id is required", field="org_id"),
        M3terError(418, "GET", PATH, "an error class with no retry rule"),
    ],
    ids=["400", "breaks-configuration", "403", "404", "413", "configuration", "unknown-subclass"],
)
def test_final_client_errors_fail_at_once(error: M3terError) -> None:
    decision = M3terRetryPolicy().evaluate(error, try_number=1, max_tries=5)
    assert decision.action is RetryAction.FAIL
    assert decision.retry_delay is None
    assert "final" in decision.reason
    if error.status is not None:
        assert str(error.status) in decision.reason
        assert PATH in decision.reason


def test_breaks_configuration_is_classified_by_the_client() -> None:
    # guards the parametrized case above: it really is the subclass
    assert isinstance(
        error_for_status(400, "PUT", PATH, "request breaks configuration"), M3terBreaksConfigurationError
    )


def test_hook_failures_are_classified_like_their_client_errors() -> None:
    policy = M3terRetryPolicy(first_delay=timedelta(seconds=5))
    final = M3terFinalFailure(M3terFinalError(404, "GET", PATH, "Not found"))
    transient = M3terTransientFailure(_transient(502))
    assert policy.evaluate(final, 1, 3).action is RetryAction.FAIL
    decision = policy.evaluate(transient, 1, 3)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=5)
    assert "502" in decision.reason
    assert "back-off" in decision.reason


def test_transient_errors_back_off_exponentially_up_to_the_cap() -> None:
    policy = M3terRetryPolicy(first_delay=timedelta(seconds=30), multiplier=2, max_delay=timedelta(minutes=3))
    delays = [policy.evaluate(_transient(), try_number=n, max_tries=9).retry_delay for n in range(1, 7)]
    assert delays == [timedelta(seconds=s) for s in (30, 60, 120, 180, 180, 180)]


def test_retry_after_wins_over_the_schedule_but_not_over_the_cap() -> None:
    policy = M3terRetryPolicy(first_delay=timedelta(seconds=30), max_delay=timedelta(seconds=90))
    decision = policy.evaluate(_transient(429, retry_after=7), try_number=3, max_tries=5)
    assert decision.action is RetryAction.RETRY
    assert decision.retry_delay == timedelta(seconds=7)
    assert "Retry-After" in decision.reason
    assert "429" in decision.reason
    assert policy.evaluate(_transient(429, retry_after=600), 1, 5).retry_delay == timedelta(seconds=90)
    # far beyond what a timedelta can hold: still just the cap
    assert policy.evaluate(_transient(429, retry_after=1e20), 1, 5).retry_delay == timedelta(seconds=90)
    ignoring = M3terRetryPolicy(first_delay=timedelta(seconds=30), honour_retry_after=False)
    assert ignoring.evaluate(_transient(429, retry_after=7), 1, 5).retry_delay == timedelta(seconds=30)


def _raised(make: Callable[[], None]) -> BaseException:
    """Run ``make`` and return what it raised (so chains are built by real ``raise`` statements)."""
    with pytest.raises(BaseException) as info:
        make()
    return info.value


def _wrapped_explicitly() -> None:
    try:
        raise _transient()
    except M3terTransientError as err:
        raise RuntimeError("ingest step failed") from err


def _wrapped_implicitly() -> None:
    try:
        raise M3terFinalError(400, "POST", PATH, "bad")
    except M3terFinalError:
        raise KeyError("implicit context")  # noqa: B904 - the implicit chain is the point


def _context_suppressed() -> None:
    try:
        raise M3terFinalError(400, "POST", PATH, "bad")
    except M3terFinalError:
        raise KeyError("context suppressed") from None


def test_errors_are_found_on_the_cause_and_context_chain() -> None:
    policy = M3terRetryPolicy()
    assert policy.evaluate(_raised(_wrapped_explicitly), 1, 3).action is RetryAction.RETRY
    implicit = _raised(_wrapped_implicitly)
    assert implicit.__cause__ is None
    assert isinstance(implicit.__context__, M3terFinalError)
    assert policy.evaluate(implicit, 1, 3).action is RetryAction.FAIL
    assert policy.evaluate(_raised(_context_suppressed), 1, 3).action is RetryAction.DEFAULT


def test_the_nearest_m3ter_error_decides() -> None:
    outer = M3terFinalFailure(M3terFinalError(404, "GET", PATH, "Not found"))
    outer.__context__ = _transient()
    assert find_m3ter_error(outer) == ("final", outer)


def test_cyclic_chains_terminate() -> None:
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert find_m3ter_error(first) is None


@pytest.mark.parametrize("exception", [ValueError("bad row"), TimeoutError(), KeyboardInterrupt()])
def test_anything_else_falls_back_to_the_task_settings(exception: BaseException) -> None:
    decision = M3terRetryPolicy().evaluate(exception, 1, 3)
    assert decision.action is RetryAction.DEFAULT
    assert decision.retry_delay is None


def test_reason_fits_airflow_and_masks_secrets() -> None:
    from airflow_provider_m3ter.compat import mask_secret

    mask_secret("policy-test-secret-value")
    error = M3terFinalError(400, "POST", PATH, "echo policy-test-secret-value " + "x" * 900)
    reason = M3terRetryPolicy().evaluate(error, 1, 3).reason
    assert len(reason) <= 500
    assert "policy-test-secret-value" not in reason
    assert "***" in reason


def test_serialize_round_trip() -> None:
    policy = M3terRetryPolicy(
        first_delay=timedelta(seconds=12),
        multiplier=3,
        max_delay=timedelta(minutes=20),
        honour_retry_after=False,
    )
    data = json.loads(json.dumps(policy.serialize()))
    assert data["__type"] == "airflow_provider_m3ter.retry_policy.M3terRetryPolicy"
    again = M3terRetryPolicy.deserialize(data)
    assert again == policy
    assert again is not policy
    assert again.delay_for(2) == timedelta(seconds=36)
    with pytest.raises(ValueError, match="unexpected __type"):
        M3terRetryPolicy.deserialize({**data, "__type": "ExceptionRetryPolicy"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first_delay": timedelta(seconds=-1)}, "first_delay must not be negative"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"first_delay": timedelta(minutes=5), "max_delay": timedelta(minutes=1)}, "max_delay"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        M3terRetryPolicy(**kwargs)


@given(
    first=st.integers(min_value=0, max_value=600),
    multiplier=st.floats(min_value=1, max_value=10),
    cap=st.integers(min_value=600, max_value=7200),
    tries=st.lists(st.integers(min_value=1, max_value=200), min_size=2, max_size=10),
)
def test_schedule_is_monotonic_and_capped(first: int, multiplier: float, cap: int, tries: list[int]) -> None:
    policy = M3terRetryPolicy(
        first_delay=timedelta(seconds=first), multiplier=multiplier, max_delay=timedelta(seconds=cap)
    )
    ordered = sorted(tries)
    delays = [policy.delay_for(n) for n in ordered]
    assert all(timedelta(0) <= d <= timedelta(seconds=cap) for d in delays)
    assert delays == sorted(delays)


def _serialized_dag_with_policy() -> dict:
    from airflow.providers.standard.operators.empty import EmptyOperator

    from tests.airflow_lines import dag_serialization

    DagSerialization = dag_serialization()

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with DAG("m3ter_policy_serialization", schedule=None, start_date=start) as dag:
        EmptyOperator(task_id="t", retries=2, retry_policy=M3terRetryPolicy())
    return DagSerialization.serialize_dag(dag)


def test_a_dag_with_the_policy_serializes_deterministically() -> None:
    first, second = _serialized_dag_with_policy(), _serialized_dag_with_policy()
    task = first["tasks"][0]["__var"]
    assert task.get("has_retry_policy") is True
    assert "retry_policy" not in task
    # two parses with two policy objects give identical JSON: no object address leaks in
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
