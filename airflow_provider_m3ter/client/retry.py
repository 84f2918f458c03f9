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
sends (the token retry is extra) or when the next wait would pass the call's time limit (its
``deadline``, or less when an enclosing wait has less time left).

Whether an outcome is retryable is decided here once (:func:`network_error_retryable` and
:func:`outcome_kind`); the error raised afterwards carries the verdict as ``retryable``. The
``Retrying`` is plain functions handed to tenacity (no subclasses): a predicate, a wait that
honours ``Retry-After`` and the 1 s / 3 s / 9 s rule, and a stop that is an attempt count or a
deadline-aware check. What a call has seen is counted inside :func:`build_retrying`, for that call
only, and nothing else changes it. :func:`call_with_rules` runs a call's first attempt without
building the ``Retrying`` (most calls need no second one) and hands a retryable outcome to it.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from tenacity import RetryCallState, Retrying

from airflow_provider_m3ter.client.errors import reason_phrase
from airflow_provider_m3ter.client.stats import ClientStats

__all__: list[str] = []  # internal: the client applies these rules; nothing here is for users

log = logging.getLogger("airflow_provider_m3ter.client")

# Failures where no (complete) response arrived; all are worth another attempt.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


_DELTA_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


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
    # delta-seconds is ASCII digits (RFC 9110); float() also takes "1_000", "nan", "1e9", other digits
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
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
    """One logical call: where it goes, its limits, and what the transport knows about its sends.

    The transport writes ``attempts``, ``token``, ``token_fresh`` and ``retry_after`` (facts about
    the sends); the retry rules keep their own counts and only write ``stop_reason``.

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
    token_serial_at_start: int = 0
    token_fresh: bool = False
    token: str | None = field(default=None, repr=False)
    stop_reason: str | None = None
    retry_after: float | None = None
    limit: str = "the deadline"

    def token_may_refresh(self) -> bool:
        """Whether a 403 with the token just used may mean it expired (so one refresh is worth it).

        A token fetched during this very call cannot have expired, so a 403 with it is final.
        """
        return self.authenticated and self.refresh_on_403 and not self.token_fresh


def network_error_retryable(exc: BaseException | None) -> bool:
    """Whether a failure without a response is worth another attempt: connection errors and timeouts
    are; a TLS certificate problem and a proxy's 407 (Proxy Authentication Required) are
    configuration and are not. Decided here only.

    :param exc: what ``requests`` raised.
    """
    if isinstance(exc, requests.exceptions.ProxyError) and " 407 " in str(exc):
        return False  # the proxy wants credentials: configuration, as a certificate problem is
    return isinstance(exc, NETWORK_ERRORS) and not isinstance(exc, requests.exceptions.SSLError)


def outcome_kind(rs: RetryCallState, *, token_retry_left: bool) -> str:
    """An attempt's outcome as one word: ``ok``, ``network``, ``server``, ``throttled``, ``token``
    (a 403 worth the one token refresh) or ``final``.

    :param rs: tenacity's state after the attempt.
    :param token_retry_left: a 403 may still earn the call's one token refresh.
    """
    outcome = rs.outcome
    assert outcome is not None
    if outcome.failed:
        return "network" if network_error_retryable(outcome.exception()) else "final"
    return status_kind(outcome.result().status_code, token_retry_left=token_retry_left)


def status_kind(status: int, *, token_retry_left: bool) -> str:
    """A response's outcome as one word (see :func:`outcome_kind`), from its HTTP status.

    :param status: the HTTP status code.
    :param token_retry_left: a 403 may still earn the call's one token refresh.
    """
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server"
    if status == 403 and token_retry_left:
        return "token"
    return "ok" if status < 400 else "final"


def _retry_after_of(rs: RetryCallState) -> float | None:
    """The ``Retry-After`` of the attempt's response, in seconds, if it sent one."""
    outcome = rs.outcome
    if outcome is None or outcome.failed:
        return None
    headers = getattr(outcome.result(), "headers", None) or {}
    return parse_retry_after(headers.get("Retry-After"), date_header=headers.get("Date"))


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
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    rng: random.Random,
    stats: ClientStats,
    on_token_rejected: Callable[[str], object],
) -> Retrying:
    """A tenacity ``Retrying`` for one call: the rules above, with logging and counting.

    When retrying stops, the last outcome is returned (a response) or re-raised (a network error),
    so the caller turns it into the right :class:`~airflow_provider_m3ter.client.M3terError`.

    :param call: the call (its limit, and the token the last send used).
    :param max_wait: cap of one wait.
    :param sleep: how to wait.
    :param clock: monotonic clock.
    :param rng: random source for the jitter.
    :param stats: counters to update.
    :param on_token_rejected: called with the rejected token before the refresh retry.
    """
    # what this call has seen, by kind; each attempt is classified once (tenacity asks several times)
    seen = {"throttled": 0, "server": 0, "network": 0, "token": 0}
    kinds: dict[int, str] = {}

    def kind(rs: RetryCallState) -> str:
        found = kinds.get(rs.attempt_number)
        if found is None:
            found = outcome_kind(rs, token_retry_left=call.token_may_refresh() and not seen["token"])
            kinds[rs.attempt_number] = found
            if found in seen:
                seen[found] += 1
        return found

    def is_transient(rs: RetryCallState) -> bool:
        return kind(rs) in seen

    def wait(rs: RetryCallState) -> float:
        """0 for the token refresh; 1, 3, 9 ... s (at least ``Retry-After``) for 429; full jitter else."""
        found = kind(rs)
        if found == "token":
            return 0.0
        if found == "throttled":
            return throttle_wait(seen["throttled"] - 1, _retry_after_of(rs), max_wait)
        return rng.uniform(0.0, backoff_limit(seen["server"] + seen["network"] - 1, max_wait))

    def sends(rs: RetryCallState) -> int:
        return rs.attempt_number - seen["token"]

    def out_of_attempts(rs: RetryCallState) -> bool:
        if kind(rs) == "token":
            return False  # the one token refresh is always allowed
        if sends(rs) >= call.max_attempts:
            call.stop_reason = f"gave up after {call.max_attempts} attempts"
            return True
        return False

    def wait_would_pass_the_limit(rs: RetryCallState) -> bool:
        if kind(rs) == "token":
            return False
        upcoming = rs.upcoming_sleep
        if clock() + upcoming >= call.deadline_at:
            if call.stop_reason is None:
                call.stop_reason = f"gave up: a further {upcoming:.1f} s wait would pass {call.limit}"
            return True
        return False

    def before_sleep(rs: RetryCallState) -> None:
        if kind(rs) == "token":
            if call.token is not None:
                on_token_rejected(call.token)
            stats.add(retries=1)
            log.warning(
                "m3ter returned 403 for %s %s (attempt %d/%d); the token may have expired: "
                "fetching a new token and retrying once",
                call.method,
                call.path,
                sends(rs),
                call.max_attempts,
            )
            return
        stats.add_wait(rs.upcoming_sleep)
        log.warning(
            "m3ter %s for %s %s (attempt %d/%d); retrying in %.2f s",
            _describe(rs),
            call.method,
            call.path,
            sends(rs),
            call.max_attempts,
            rs.upcoming_sleep,
        )

    def give_up(rs: RetryCallState) -> Any:
        log.warning(
            "m3ter %s for %s %s: %s", _describe(rs), call.method, call.path, call.stop_reason or "not retried"
        )
        assert rs.outcome is not None
        return rs.outcome.result()

    return Retrying(
        retry=is_transient,
        wait=wait,
        stop=lambda rs: out_of_attempts(rs) or wait_would_pass_the_limit(rs),
        sleep=lambda seconds: sleep(seconds) if seconds > 0 else None,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )


def call_with_rules(
    call: CallState,
    attempt: Callable[[], requests.Response],
    *,
    max_wait: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    rng: random.Random,
    stats: ClientStats,
    on_token_rejected: Callable[[str], object],
) -> requests.Response:
    """Run ``attempt`` under the rules above, as ``build_retrying(call, ...)(attempt)`` would.

    Most calls end with their first attempt, so that attempt runs directly and its outcome is
    classified by the same :func:`status_kind` / :func:`network_error_retryable`: a success or a
    final answer is returned (a final network error raised) as the ``Retrying`` would, without
    building it. Only a retryable outcome builds the ``Retrying``, which then sees that outcome as
    its first attempt (replayed, not sent again) and goes on from there.

    :param call: the call (its limit, and the token the last send used).
    :param attempt: one send; returns the response or raises one of :data:`NETWORK_ERRORS`.
    :param max_wait: cap of one wait.
    :param sleep: how to wait.
    :param clock: monotonic clock.
    :param rng: random source for the jitter.
    :param stats: counters to update.
    :param on_token_rejected: called with the rejected token before the refresh retry.
    :return: the last response (a success, a final answer, or the one retrying stopped on).
    :raises requests.RequestException: the network error of the last attempt when it was final
        (a certificate problem) or retrying stopped on it; anything else ``attempt`` raises, at once.
    """
    first: requests.Response | BaseException
    try:
        first = attempt()
    except NETWORK_ERRORS as exc:
        if not network_error_retryable(exc):
            raise
        first = exc
    else:
        if status_kind(first.status_code, token_retry_left=call.token_may_refresh()) in ("ok", "final"):
            return first
    pending: list[requests.Response | BaseException] = [first]

    def again() -> requests.Response:
        if pending:
            outcome = pending.pop()
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return attempt()

    retrying = build_retrying(
        call,
        max_wait=max_wait,
        sleep=sleep,
        clock=clock,
        rng=rng,
        stats=stats,
        on_token_rejected=on_token_rejected,
    )
    result: requests.Response = retrying(again)
    return result
