"""The retry schedule, Retry-After parsing and the error taxonomy, as pure logic."""

from __future__ import annotations

import pickle
import random
from email.utils import formatdate

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_m3ter.client import (
    M3terBreaksConfigurationError,
    M3terConfigurationError,
    M3terError,
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
)
from airflow_provider_m3ter.client.errors import error_for_status
from airflow_provider_m3ter.client.retry import (
    CallState,
    backoff_limit,
    build_retrying,
    call_with_rules,
    parse_retry_after,
    throttle_wait,
)
from airflow_provider_m3ter.client.stats import ClientStats
from tests.client.support import FakeTime

EPOCH = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("soon", None),
        # only ASCII delta-seconds: what float() would also read is no Retry-After
        ("1_000", None),
        ("\uff11\uff12", None),
        ("\u0661\u0662", None),
        ("nan", None),
        ("inf", None),
        ("1e9", None),
        ("+5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_delta_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=lambda: EPOCH) == expected


def test_retry_after_http_date_is_measured_from_the_response_date() -> None:
    sent = formatdate(EPOCH, usegmt=True)
    retry_at = formatdate(EPOCH + 42, usegmt=True)
    # The local clock is wildly off; the server's Date header is the reference.
    assert parse_retry_after(retry_at, date_header=sent, now=lambda: EPOCH - 3600) == 42.0


def test_retry_after_http_date_without_date_header_uses_the_wall_clock() -> None:
    assert parse_retry_after(formatdate(EPOCH + 5, usegmt=True), now=lambda: EPOCH) == 5.0
    assert parse_retry_after(formatdate(EPOCH - 5, usegmt=True), now=lambda: EPOCH) == 0.0
    # A Date header that cannot be read falls back to the wall clock.
    later = formatdate(EPOCH + 9, usegmt=True)
    assert parse_retry_after(later, date_header="garbage", now=lambda: EPOCH) == 9.0


def test_throttle_schedule_is_1_3_9_and_honours_retry_after_capped() -> None:
    assert [throttle_wait(n, None, 60) for n in range(5)] == [1, 3, 9, 27, 60]
    assert throttle_wait(0, 5.0, 60) == 5.0  # Retry-After longer than the schedule wins
    assert throttle_wait(2, 5.0, 60) == 9.0  # the schedule longer than Retry-After wins
    assert throttle_wait(0, 500.0, 60) == 60.0  # capped by max_wait
    assert throttle_wait(1000, None, 30) == 30.0  # no overflow for absurd counts


def test_backoff_limit_doubles_from_half_a_second_and_is_capped() -> None:
    assert [backoff_limit(n, 60) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 32, 60]
    assert backoff_limit(10_000, 5) == 5


@given(n=st.integers(0, 50), retry_after=st.one_of(st.none(), st.floats(0, 1e6)), cap=st.floats(0.1, 600))
def test_throttle_wait_bounds(n: int, retry_after: float | None, cap: float) -> None:
    wait = throttle_wait(n, retry_after, cap)
    assert wait <= cap
    assert wait >= min(cap, 1.0)
    if retry_after is not None:
        assert wait >= min(cap, retry_after)


class _Response:
    """Just enough of a ``requests.Response`` for the retry predicates."""

    def __init__(self, status: int) -> None:
        self.status_code = status


# every scripted call below runs both ways: through the Retrying alone, and through call_with_rules
# (what the transport uses: the first attempt without the Retrying, which takes over on a retry)
_VIA = ["call_with_rules"]


@pytest.fixture(autouse=True, params=["call_with_rules", "build_retrying"])
def _via(request: pytest.FixtureRequest) -> None:
    _VIA[0] = request.param


def _run(
    outcomes: list[object],
    *,
    max_attempts: int = 6,
    deadline: float = 300.0,
    max_wait: float = 60.0,
    token_fresh: bool = False,
):
    """Drive the tenacity policy over scripted outcomes; return (last outcome, call, stats, fake time)."""
    fake = FakeTime()
    call = CallState(
        "GET",
        "/organizations/o/meters",
        fake.clock() + deadline,
        max_attempts,
        limit=f"the {deadline:g} s deadline",
    )
    call.token_fresh = token_fresh
    stats = ClientStats()
    rejected: list[str] = []
    script = iter(outcomes)

    def attempt() -> object:
        call.attempts += 1
        call.token = f"token-{call.attempts}"
        item = next(script)
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, _Response)
        return item

    rules = {
        "max_wait": max_wait,
        "sleep": fake.sleep,
        "clock": fake.clock,
        "rng": random.Random(7),
        "stats": stats,
        "on_token_rejected": rejected.append,
    }
    try:
        if _VIA[0] == "call_with_rules":
            last: object = call_with_rules(call, attempt, **rules)  # type: ignore[arg-type]
        else:
            last = build_retrying(call, **rules)(attempt)  # type: ignore[arg-type]
    except Exception as exc:
        last = exc
    return last, call, stats, fake, rejected


def test_a_first_attempt_that_settles_the_call_builds_no_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_provider_m3ter.client.retry as retry

    built: list[CallState] = []
    real = retry.build_retrying

    def counting(call: CallState, **rules: object) -> object:
        built.append(call)
        return real(call, **rules)  # type: ignore[arg-type]

    monkeypatch.setattr(retry, "build_retrying", counting)
    _VIA[0] = "call_with_rules"  # (the same under both parameters)
    for status in (200, 204, 404, 413):
        last, call, stats, _, _ = _run([_Response(status)])
        assert (last.status_code, call.attempts, stats.retries) == (status, 1, 0)  # type: ignore[attr-defined]
    last, _, _, _, _ = _run([requests.exceptions.SSLError("certificate verify failed")])
    assert isinstance(last, requests.exceptions.SSLError)  # a final network error, raised at once
    assert built == []
    # the control: a retryable first outcome does build it, and is not sent again
    last, call, _, fake, _ = _run([_Response(503), _Response(200)])
    assert (last.status_code, call.attempts, len(fake.sleeps)) == (200, 2, 1)  # type: ignore[attr-defined]
    assert len(built) == 1


def test_429s_wait_1_then_3_then_9_seconds() -> None:
    last, call, stats, fake, _ = _run([_Response(429), _Response(429), _Response(429), _Response(200)])
    assert last.status_code == 200  # type: ignore[attr-defined]
    assert fake.sleeps == [1.0, 3.0, 9.0] == stats.waits
    assert call.attempts == 4


def test_server_errors_use_full_jitter_below_the_doubling_bound() -> None:
    script = [_Response(500), _Response(502), _Response(504), _Response(500), _Response(200)]
    last, _, stats, _, _ = _run(script)
    assert last.status_code == 200  # type: ignore[attr-defined]
    assert len(stats.waits) == 4
    for n, wait in enumerate(stats.waits):
        assert 0.0 <= wait <= backoff_limit(n, 60)
    # Same seed, same waits: the jitter is reproducible by injection.
    assert _run(script)[2].waits == stats.waits


def test_final_statuses_are_never_retried() -> None:
    for status in (400, 404, 409, 413, 422):
        last, call, stats, _, _ = _run([_Response(status)])
        assert last.status_code == status  # type: ignore[attr-defined]
        assert call.attempts == 1
        assert stats.retries == 0


def test_one_token_refresh_per_call_then_403_is_final() -> None:
    last, call, stats, fake, rejected = _run([_Response(403), _Response(403)])
    assert last.status_code == 403  # type: ignore[attr-defined]
    assert call.attempts == 2
    assert rejected == ["token-1"]  # only the first token was dropped
    assert fake.sleeps == []
    assert stats.retries == 1


def test_403_with_a_token_fetched_during_the_call_is_final() -> None:
    last, call, stats, _, rejected = _run([_Response(403), _Response(200)], token_fresh=True)
    assert last.status_code == 403  # type: ignore[attr-defined]
    assert (call.attempts, stats.retries, rejected) == (1, 0, [])


def test_token_refresh_is_extra_to_max_attempts() -> None:
    last, call, _, _, rejected = _run([_Response(500), _Response(403), _Response(200)], max_attempts=2)
    assert last.status_code == 200  # type: ignore[attr-defined]
    assert call.attempts == 3
    assert rejected == ["token-2"]


def test_max_attempts_stops_and_returns_the_last_response() -> None:
    last, call, stats, _, _ = _run([_Response(500)] * 10, max_attempts=3)
    assert last.status_code == 500  # type: ignore[attr-defined]
    assert call.attempts == 3
    assert len(stats.waits) == 2
    assert call.stop_reason == "gave up after 3 attempts"


def test_deadline_stops_before_a_wait_that_would_pass_it() -> None:
    # Waits 1 + 3 = 4 s fit in 10 s; the next (9 s) would end at 13 s.
    last, call, _, fake, _ = _run([_Response(429)] * 10, deadline=10.0)
    assert last.status_code == 429  # type: ignore[attr-defined]
    assert fake.sleeps == [1.0, 3.0]
    assert call.attempts == 3
    assert "10 s deadline" in (call.stop_reason or "")


def test_network_errors_are_retried_then_reraised() -> None:
    errors = [requests.ConnectionError("reset"), requests.Timeout("slow"), requests.ConnectionError("reset")]
    last, call, stats, _, _ = _run(errors, max_attempts=3)
    assert isinstance(last, requests.ConnectionError)
    assert call.attempts == 3
    assert stats.retries == 2


def test_unexpected_exceptions_propagate_without_retry() -> None:
    last, call, _, _, _ = _run([KeyError("bug")])
    assert isinstance(last, KeyError)
    assert call.attempts == 1


@pytest.mark.parametrize(
    ("status", "message", "cls"),
    [
        (400, "Invalid JSON", M3terFinalError),
        (400, "Request breaks configuration: field used by aggregation", M3terBreaksConfigurationError),
        (403, "Forbidden", M3terFinalError),
        (404, "Not found", M3terFinalError),
        (409, "Version mismatch", M3terFinalError),
        (413, "Too large", M3terPayloadTooLargeError),
        (429, "Slow down", M3terTransientError),
        (500, "Internal", M3terTransientError),
        (502, "Bad gateway", M3terTransientError),
        (504, "Gateway timeout", M3terTransientError),
    ],
)
def test_error_for_status_classifies(status: int, message: str, cls: type[M3terError]) -> None:
    error = error_for_status(status, "GET", "/organizations/o/meters/x", message, 2, 3.0)
    assert type(error) is cls
    assert (error.status, error.method, error.path, error.message, error.attempts, error.retry_after) == (
        status,
        "GET",
        "/organizations/o/meters/x",
        message,
        2,
        3.0,
    )


def test_error_strings_are_readable() -> None:
    error = error_for_status(404, "GET", "/organizations/org-1/meters/x", "Meter not found", 1)
    assert str(error) == (
        "m3ter returned 404 Not Found for GET /organizations/org-1/meters/x after 1 attempt: Meter not found"
    )
    network = M3terTransientError(None, "POST", "/o/m", "ConnectionError", 6, note="gave up")
    assert str(network) == "m3ter request POST /o/m failed after 6 attempts: ConnectionError (gave up)"
    config = M3terConfigurationError("ClientSettings.org_id is required", field="org_id")
    assert str(config) == "ClientSettings.org_id is required"


def test_errors_survive_pickling() -> None:
    error = error_for_status(429, "GET", "/p", "slow", 6, 2.0, note="gave up after 6 attempts")
    clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(clone) is M3terTransientError
    assert str(clone) == str(error)
    assert clone.retry_after == 2.0
    config = pickle.loads(pickle.dumps(M3terConfigurationError("bad url", field="config_url")))  # noqa: S301
    assert (str(config), config.field, isinstance(config, ValueError)) == ("bad url", "config_url", True)
