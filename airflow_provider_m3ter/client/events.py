"""The ingest-events check: ``ingest.validation.failure`` events since a time.

m3ter validates measurements asynchronously after accepting them, and reports each rejected one as
an ``ingest.validation.failure`` event. :func:`check_ingest_events` reads those events for a time
window and :func:`evaluate_ingest_events` turns them into a
:class:`~airflow_provider_m3ter.client.jobs.CheckResult`, like the other checks. Plain Python (no
Airflow import).

A rerun resends measurements m3ter already holds, under the same uids; m3ter ingests each uid once
and reports every resend as a ``DuplicateUid`` failure. Such a resend is not a failure when its
content is provably the content its uid stands for: the provider derives a uid from the
measurement's content (:func:`~airflow_provider_m3ter.client.encoding.derive_uid`), so when the
event carries the measurement and hashing it in one of the load's uid namespaces gives the event's
uid, the stored measurement (which has that uid) has the same content. Such resends are counted
apart (``resends``). A ``DuplicateUid`` that cannot be proven a resend (a uid of your own, a uid
derived from other content, an event without the measurement) stays a failure.

The events are the organization's, not the run's: another load running at the same time (another
DAG, a rerun of another day) adds its own failures and resends to the window. With
``other_loads="ignore"`` an event whose measurement is provably not one of the checked loads' (it
carries the measurement, and hashing it in none of the uid namespaces gives its uid) is counted
apart (``other_loads``) instead of as a failure. That proof holds only for loads whose uids are all
derived (rows without a ``uid`` of their own): a load that sends its own uids must list them in
``uids`` (only those then count) or keep the default ``other_loads="fail"``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from airflow_provider_m3ter.client.encoding import UidDeriver
from airflow_provider_m3ter.client.jobs import CheckResult

__all__ = [
    "DUPLICATE_UID",
    "INGEST_VALIDATION_FAILURE",
    "check_ingest_events",
    "evaluate_ingest_events",
    "is_other_load",
    "is_proven_resend",
    "parse_time",
    "summarize_validation_failure",
]

INGEST_VALIDATION_FAILURE = "ingest.validation.failure"
DUPLICATE_UID = "DuplicateUid"
_TYPE_KEYS = ("failureType", "errorType", "validationType", "failureReason", "reason", "type", "errorCode")
_UID_KEYS = ("uid",)
_OLDER_EVENTS_TO_STOP = 100
_MESSAGE_KEYS = ("message", "errorMessage", "failureMessage", "description", "detail")


def parse_time(value: Any) -> float:
    """Epoch seconds from a datetime, an ISO-8601 string (``Z`` allowed) or a number.

    :param value: the time; naive datetimes and strings are taken as UTC.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(f"not an ISO-8601 date-time: {text!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    raise ValueError(f"expected a datetime, an ISO-8601 string or epoch seconds, got {value!r}")


def _find_first(data: Any, keys: Iterable[str], depth: int = 0) -> Any:
    """The first value under any of ``keys`` in nested dicts/lists (breadth first, bounded depth)."""
    if depth > 4:
        return None
    if isinstance(data, Mapping):
        for key in keys:
            if key in data and isinstance(data[key], (str, int)) and not isinstance(data[key], bool):
                return data[key]
        children: Iterable[Any] = data.values()
    elif isinstance(data, list):
        children = data
    else:
        return None
    for child in children:
        if isinstance(child, (Mapping, list)):
            found = _find_first(child, keys, depth + 1)
            if found is not None:
                return found
    return None


def summarize_validation_failure(event: Mapping[str, Any]) -> dict[str, Any]:
    """The facts a report needs from one ``ingest.validation.failure`` event.

    m3ter does not publish the shape of ``m3terEvent`` for this event, so the failure type, the
    measurement's uid and a message are looked up by their usual key names wherever they sit.

    :param event: one event from ``GET /events``.
    :return: ``{"id", "eventTime", "failureType", "uid", "meter", "account", "message"}``.
    """
    details = event.get("m3terEvent") or {}
    measurement = _find_first_mapping(details, "measurement")
    return {
        "id": event.get("id"),
        "eventTime": event.get("eventTime"),
        "failureType": str(_find_first(details, _TYPE_KEYS) or "Unknown"),
        "uid": _first_of(measurement, details, _UID_KEYS),
        "meter": _first_of(measurement, details, ("meter", "meterCode")),
        "account": _first_of(measurement, details, ("account", "accountCode")),
        "message": _find_first(details, _MESSAGE_KEYS),
    }


def _first_of(measurement: Mapping[str, Any] | None, details: Any, keys: Iterable[str]) -> Any:
    """A key's value from the event's measurement, else from the rest of its details."""
    found = _find_first(measurement, keys) if measurement else None
    return found if found is not None else _find_first(details, keys)


def _find_first_mapping(data: Any, key: str, depth: int = 0) -> Mapping[str, Any] | None:
    if depth > 4 or not isinstance(data, Mapping):
        return None
    if isinstance(data.get(key), Mapping):
        return data[key]
    for child in data.values():
        found = _find_first_mapping(child, key, depth + 1)
        if found is not None:
            return found
    return None


def _event_measurement(
    event: Mapping[str, Any], summary: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """``(uid, measurement)`` when the event carries a measurement consistent with its uid."""
    uid = summary.get("uid")
    details = event.get("m3terEvent") or {}
    measurement = _find_first_mapping(details, "measurement")
    if not isinstance(uid, str) or measurement is None or measurement.get("uid") not in (None, uid):
        return None
    if isinstance(details, Mapping) and details.get("uid") not in (None, uid):
        return None  # the event names another uid than its measurement: nothing is proven
    return uid, dict(measurement)


def _derived_in(uid: str, measurement: dict[str, Any], namespaces: Sequence[str]) -> bool:
    return any(UidDeriver(namespace).uid(measurement) == uid for namespace in namespaces)


def is_proven_resend(event: Mapping[str, Any], summary: Mapping[str, Any], namespaces: Sequence[str]) -> bool:
    """Whether a ``DuplicateUid`` failure is a resend of the very content its uid was derived from.

    :param event: the ``ingest.validation.failure`` event.
    :param summary: its :func:`summarize_validation_failure`.
    :param namespaces: the uid namespaces of the loads that may have sent it.
    :return: True only for a DuplicateUid whose event carries the measurement and whose uid equals
        that measurement's derived uid in one of ``namespaces``.
    """
    if summary.get("failureType") != DUPLICATE_UID or not namespaces:
        return False
    found = _event_measurement(event, summary)
    return found is not None and _derived_in(*found, namespaces)


def is_other_load(event: Mapping[str, Any], summary: Mapping[str, Any], namespaces: Sequence[str]) -> bool:
    """Whether a failure event is provably about a measurement the loads of ``namespaces`` did not derive.

    True when the event carries the measurement (with no other uid than the event's) and hashing it
    in none of ``namespaces`` gives the event's uid. For loads whose uids are all derived (no row
    with its own ``uid``) that proves another load sent it; for a load with its own uids it proves
    nothing (see the module docstring).

    :param event: the ``ingest.validation.failure`` event.
    :param summary: its :func:`summarize_validation_failure`.
    :param namespaces: the uid namespaces of the checked loads; empty: False (nothing is provable).
    """
    if not namespaces:
        return False
    found = _event_measurement(event, summary)
    return found is not None and not _derived_in(*found, namespaces)


def _describe_failure(failure: Mapping[str, Any]) -> str:
    """``MissingField (uid u1, meter m, account a): message`` for one failure summary."""
    where = ", ".join(f"{key} {failure[key]}" for key in ("uid", "meter", "account") if failure.get(key))
    text = str(failure.get("failureType"))
    if where:
        text += f" ({where})"
    return f"{text}: {failure['message']}" if failure.get("message") else text


def evaluate_ingest_events(
    failures: Sequence[Mapping[str, Any]],
    *,
    now: float,
    settle_until: float,
    on_failure: Literal["fail", "warn"] = "fail",
    max_examples: int = 5,
    scanned: int = 0,
    since: float | None = None,
    resends: int = 0,
    other_loads: int = 0,
) -> CheckResult:
    """Turn the failures seen so far into a result.

    - any failure and ``on_failure="fail"``: ``failed`` at once (more waiting cannot undo it);
    - before ``settle_until``: ``pending`` (m3ter validates asynchronously, failures may still come);
    - after it: ``succeeded``; with ``on_failure="warn"`` the detail carries the failures.

    :param failures: summaries from :func:`summarize_validation_failure`, already filtered.
    :param now: current time, epoch seconds.
    :param settle_until: epoch seconds after which no more failures are expected.
    :param on_failure: ``"fail"`` or ``"warn"``.
    :param max_examples: how many failures to keep as examples.
    :param scanned: how many events were read (for the report).
    :param since: start of the window, epoch seconds (for the report).
    :param resends: proven resends of already ingested measurements seen (reported, never failures).
    :param other_loads: events of other loads' measurements left out (``other_loads="ignore"``).
    """
    if on_failure not in ("fail", "warn"):
        raise ValueError(f"on_failure must be 'fail' or 'warn', got {on_failure!r}")
    by_type = Counter(str(failure.get("failureType")) for failure in failures)
    detail: dict[str, Any] = {
        "failures": len(failures),
        "by_type": dict(sorted(by_type.items())),
        "examples": [dict(failure) for failure in failures[: max(0, max_examples)]],
        "events_scanned": scanned,
        "since": datetime.fromtimestamp(since, tz=timezone.utc).isoformat() if since is not None else None,
        "settled": now >= settle_until,
        "resends": resends,
        "other_loads": other_loads,
    }
    counts = ", ".join(f"{name}: {count}" for name, count in detail["by_type"].items())
    if detail["examples"]:
        counts += "; first: " + "; ".join(_describe_failure(example) for example in detail["examples"][:3])
    if failures and on_failure == "fail":
        return CheckResult(
            "failed", f"{len(failures)} measurement(s) failed m3ter validation ({counts})", detail
        )
    if now < settle_until:
        return CheckResult("pending", f"{len(failures)} validation failure(s) so far; settling", detail)
    if failures:
        return CheckResult(
            "succeeded", f"{len(failures)} measurement(s) failed m3ter validation ({counts})", detail
        )
    notes = []
    if resends:
        notes.append(f"{resends} resent measurement(s) m3ter already had, de-duplicated by uid")
    if other_loads:
        notes.append(f"{other_loads} event(s) of other loads' measurements left out")
    if notes:
        return CheckResult("succeeded", f"no ingest validation failures ({'; '.join(notes)})", detail)
    return CheckResult("succeeded", "no ingest validation failures", detail)


def check_ingest_events(
    client: Any,
    *,
    since: Any,
    settle_until: float,
    uids: Sequence[str] | None = None,
    on_failure: Literal["fail", "warn"] = "fail",
    max_examples: int = 5,
    include_actioned: bool = True,
    max_events: int = 10_000,
    now: float | None = None,
    uid_namespaces: Sequence[str] | None = None,
    other_loads: Literal["fail", "ignore"] = "fail",
) -> CheckResult:
    """Read ``ingest.validation.failure`` events since a time and evaluate them.

    m3ter lists events newest first, so reading stops after a page's worth of events in a row older
    than ``since`` (or after ``max_events`` events).

    :param client: an ``M3terClient``.
    :param since: start of the window (datetime, ISO-8601 string or epoch seconds).
    :param settle_until: epoch seconds after which the window counts as settled.
    :param uids: when given, only failures of measurements with these uids count.
    :param on_failure: ``"fail"`` or ``"warn"``, see :func:`evaluate_ingest_events`.
    :param max_examples: how many failures the report keeps as examples.
    :param include_actioned: also count events someone already marked as actioned.
    :param max_events: upper bound on events read per check.
    :param now: current time (epoch seconds); defaults to the wall clock after reading.
    :param uid_namespaces: uid namespaces of the loads checked; a ``DuplicateUid`` proven to be a
        resend in one of them (see :func:`is_proven_resend`) is counted as a resend, not a failure.
    :param other_loads: ``"fail"``: every failure in the window counts (unless a proven resend);
        ``"ignore"``: when ``uids`` is not given, an event proven to be about another load's
        measurement (:func:`is_other_load`) is counted apart, not as a failure. Only for loads
        whose uids are all derived; needs ``uid_namespaces``.
    :raises ValueError: ``other_loads`` is neither, or is ``"ignore"`` without ``uid_namespaces``
        and without ``uids`` (nothing could be told apart).
    """
    if other_loads not in ("fail", "ignore"):
        raise ValueError(f"other_loads must be 'fail' or 'ignore', got {other_loads!r}")
    if other_loads == "ignore" and not uid_namespaces and not uids:
        raise ValueError(
            "other_loads='ignore' needs uid_namespaces (the checked loads' uid namespaces) or uids: "
            "without them no event can be told apart from another load's"
        )
    since_ts = parse_time(since)
    wanted = {str(uid) for uid in uids} if uids else None
    params: dict[str, Any] = {"eventName": INGEST_VALIDATION_FAILURE}
    if include_actioned:
        params["includeActioned"] = "true"
    failures: list[dict[str, Any]] = []
    namespaces = list(uid_namespaces or ())
    scanned = older_in_a_row = resends = others = 0
    ignore_others = other_loads == "ignore" and wanted is None
    for event in client.paginate("events", params=params, page_size=100):
        scanned += 1
        try:
            recent = parse_time(event.get("eventTime")) >= since_ts
        except ValueError:
            recent = True  # an unreadable time is not a reason to drop a failure
        older_in_a_row = 0 if recent else older_in_a_row + 1
        if recent and event.get("eventName", INGEST_VALIDATION_FAILURE) == INGEST_VALIDATION_FAILURE:
            summary = summarize_validation_failure(event)
            if wanted is None or summary.get("uid") in wanted:
                if is_proven_resend(event, summary, namespaces):
                    resends += 1
                elif ignore_others and is_other_load(event, summary, namespaces):
                    others += 1
                else:
                    failures.append(summary)
        # newest first: a full page of older events means the window is behind us
        if older_in_a_row >= _OLDER_EVENTS_TO_STOP or scanned >= max_events:
            break
    current = time.time() if now is None else now
    return evaluate_ingest_events(
        failures,
        now=current,
        settle_until=settle_until,
        on_failure=on_failure,
        max_examples=max_examples,
        scanned=scanned,
        since=since_ts,
        resends=resends,
        other_loads=others,
    )
