"""The retry rules, as tenacity data: what is retried, how long to wait, when to stop.

| outcome | rule |
|---|---|
| 5XX, connection error, timeout | retry; wait uniform(0, min(max_wait, 0.5 * 2**n)) (full jitter) |
| TLS certificate error | never retried (a configuration problem) |
| 429 | retry; wait min(max_wait, max(3**n, Retry-After)): 1 s, 3 s, 9 s ... |
| 403 with a token from before the call | once per call: drop the token, fetch a new one, retry |
| 413 | never retried here (``M3terPayloadTooLargeError``; the caller shrinks the request) |
| other 4XX | never retried |

``n`` counts earlier outcomes of the same kind in the call. Retrying stops after ``max_attempts``
sends (the token retry is extra) or when the next wait would pass the call's deadline.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from airflow_provider_m3ter.client.errors import reason_phrase
from airflow_provider_m3ter.client.stats import ClientStats

__all__ = [
    "NETWORK_ERRORS",
    "CallState",
    "backoff_limit",
    "build_retrying",
    "network_error_retryable",
    "parse_retry_after",
    "throttle_wait",
]

log = logging.getLogger("airflow_provider_m3ter.client")

# Failures where no (complete) response arrived; all are worth another attempt.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def parse_retry_after(
    value: str | None, *, date_header: str | None = None, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header, or ``None`` if absent or unreadable.

    :param value: the header: delta-seconds (``"2"``) or an HTTP-date.
    :param date_header: the response's ``Date``; an HTTP-date is measured from it when present,
        which makes the result immune to a skewed local clock.
    :param now: wall clock (epoch seconds) used when there is no usable ``Date``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None
    when = _http_date(text)
    if when is None:
        return None
    reference = _http_date(date_header) if date_header else None
    return max(0.0, when - (reference if reference is not None else now()))


def _http_date(text: str) -> float | None:
    """Epoch seconds of an HTTP-date (GMT assumed when no zone is given), or None."""
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc).timestamp()
    return parsed.timestamp()


def throttle_wait(n: int, retry_after: float | None, max_wait: float) -> float:
    """Wait before retrying the ``n``-th 429 of a call (0-based): 1, 3, 9 ... s, at least ``Retry-After``.

    :param n: how many 429s the call saw before this one.
    :param retry_after: the server's ``Retry-After`` in seconds, if any.
    :param max_wait: upper bound of the wait.
    """
    return min(max_wait, max(3.0 ** min(n, 40), retry_after or 0.0))


def backoff_limit(n: int, max_wait: float) -> float:
    """Upper bound of the full-jitter wait after the ``n``-th (0-based) 5XX or network failure.

    :param n: how many such failures the call saw before this one.
    :param max_wait: upper bound of the wait.
    """
    return min(max_wait, 0.5 * 2.0 ** min(n, 60))


@dataclass
class CallState:
    """What one logical call has seen so far; the retry rules read and update it.

    :param method: HTTP method, for logs and errors.
    :param path: URL path, for logs and errors.
    :param deadline_at: clock time after which no further wait may end.
    :param max_attempts: sends allowed for transient failures.
    :param authenticated: the call carries a bearer token (so a 403 may mean it expired).
    :param refresh_on_403: whether a 403 may trigger the one token refresh.
    :param token_serial_at_start: the newest token's serial when the call began.
    :param limit: what ``deadline_at`` is, in words (the call's deadline or an enclosing wait's).
    """

    method: str
    path: str
    deadline_at: float
    max_attempts: int
    authenticated: bool = True
    refresh_on_403: bool = True
    attempts: int = 0
    throttled: int = 0
    failures: int = 0
    token_refreshed: bool = False
    token_serial_at_start: int = 0
    token_fresh: bool = False
    token: str | None = field(default=None, repr=False)
    stop_reason: str | None = None
    retry_after: float | None = None
    limit: str = "the deadline"

    def token_may_refresh(self) -> bool:
        """Whether a 403 now should cause the call's one token refresh and retry.

        Only a token that may have expired earns it: one fetched during this very call cannot
        have, so a 403 with it is final at once.
        """
        return (
            self.authenticated and self.refresh_on_403 and not self.token_refreshed and not self.token_fresh
        )


def network_error_retryable(exc: BaseException | None) -> bool:
    """Whether a failure without a response is worth another attempt: connection errors and timeouts
    are; a TLS certificate problem is configuration and is not. Decided here only.

    :param exc: what ``requests`` raised.
    """
    return isinstance(exc, NETWORK_ERRORS) and not isinstance(exc, requests.exceptions.SSLError)


def _kind(rs: RetryCallState, call: CallState) -> str:
    """Classify an attempt's outcome: ok, network, server, throttled, token or final."""
    outcome = rs.outcome
    assert outcome is not None
    if outcome.failed:
        return "network" if network_error_retryable(outcome.exception()) else "final"
    status = outcome.result().status_code
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server"
    if status == 403 and call.token_may_refresh():
        return "token"
    return "ok" if status < 400 else "final"


class retry_if_m3ter_transient(retry_base):  # tenacity's naming style
    """Retry 5XX, 429, network failures, and the one 403 token refresh of a call."""

    def __init__(self, call: CallState) -> None:
        self.call = call

    def __call__(self, retry_state: RetryCallState) -> bool:
        return _kind(retry_state, self.call) in ("network", "server", "throttled", "token")


class wait_m3ter(wait_base):  # tenacity's naming style
    """Wait per the table in this module's docstring (429 schedule, full-jitter back-off, 0 for a token)."""

    def __init__(self, call: CallState, max_wait: float, rng: random.Random) -> None:
        self.call = call
        self.max_wait = max_wait
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        kind = _kind(retry_state, self.call)
        if kind == "token":
            return 0.0
        if kind == "throttled":
            return throttle_wait(self.call.throttled - 1, self.call.retry_after, self.max_wait)
        return self.rng.uniform(0.0, backoff_limit(self.call.failures - 1, self.max_wait))


class stop_m3ter(stop_base):  # tenacity's naming style
    """Stop after ``max_attempts`` transient sends, or when the next wait would pass the deadline."""

    def __init__(self, call: CallState, clock: Callable[[], float]) -> None:
        self.call = call
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        if _kind(retry_state, self.call) == "token":
            return False  # the one token refresh is always allowed
        sends = self.call.attempts - (1 if self.call.token_refreshed else 0)
        if sends >= self.call.max_attempts:
            self.call.stop_reason = f"gave up after {self.call.max_attempts} attempts"
            return True
        wait = retry_state.upcoming_sleep
        if self.clock() + wait >= self.call.deadline_at:
            if self.call.stop_reason is None:
                self.call.stop_reason = f"gave up: a further {wait:.1f} s wait would pass {self.call.limit}"
            return True
        return False


def _describe(rs: RetryCallState) -> str:
    """The outcome in words for a log line: ``returned 500 Internal Server Error`` or the exception type."""
    outcome = rs.outcome
    assert outcome is not None
    if outcome.failed:
        return f"call failed with {type(outcome.exception()).__name__}"
    status = outcome.result().status_code
    return f"returned {status} {reason_phrase(status)}".strip()


def build_retrying(
    call: CallState,
    *,
    max_wait: float,
    limit: str,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    rng: random.Random,
    stats: ClientStats,
    on_token_rejected: Callable[[str], object],
) -> Retrying:
    """A tenacity ``Retrying`` for one call: the rules above, with logging and counting.

    When retrying stops, the last outcome is returned (a response) or re-raised (a network error),
    so the caller turns it into the right :class:`~airflow_provider_m3ter.client.M3terError`.

    :param call: the call's state, shared with the function being retried.
    :param max_wait: cap of one wait.
    :param limit: the call's time limit in words, for messages.
    :param sleep: how to wait.
    :param clock: monotonic clock.
    :param rng: random source for the jitter.
    :param stats: counters to update.
    :param on_token_rejected: called with the rejected token before the refresh retry.
    """

    def before_sleep(rs: RetryCallState) -> None:
        wait = rs.upcoming_sleep
        if _kind(rs, call) == "token":
            call.token_refreshed = True
            if call.token is not None:
                on_token_rejected(call.token)
            stats.add(retries=1)
            log.warning(
                "m3ter returned 403 for %s %s (attempt %d/%d); the token may have expired: "
                "fetching a new token and retrying once",
                call.method,
                call.path,
                rs.attempt_number,
                call.max_attempts,
            )
            return
        stats.add_wait(wait)
        log.warning(
            "m3ter %s for %s %s (attempt %d/%d); retrying in %.2f s",
            _describe(rs),
            call.method,
            call.path,
            call.attempts - (1 if call.token_refreshed else 0),
            call.max_attempts,
            wait,
        )

    def give_up(rs: RetryCallState) -> Any:
        log.warning(
            "m3ter %s for %s %s: %s", _describe(rs), call.method, call.path, call.stop_reason or "not retried"
        )
        assert rs.outcome is not None
        return rs.outcome.result()

    return Retrying(
        retry=retry_if_m3ter_transient(call),
        wait=wait_m3ter(call, max_wait, rng),
        stop=stop_m3ter(call, clock),
        sleep=lambda seconds: sleep(seconds) if seconds > 0 else None,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )
