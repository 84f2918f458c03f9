"""Things to wait for in m3ter, and the checks that decide when the wait is over.

Plain Python (no Airflow import). Each ``check_*`` function makes the calls one poll needs through
an :class:`~airflow_provider_m3ter.client.core.M3terClient` (so the client's retry rules apply) and
returns a :class:`CheckResult`: still pending, succeeded, or failed, with JSON-friendly details.
Sensors call them directly and triggers call them through ``asyncio.to_thread``, so both paths reach
the same outcome from the same answer.

- Jobs: file-upload jobs, bill jobs, data-export jobs (:data:`JOB_KINDS`, :func:`check_job`).
- Entities: a meter, account, product, aggregation, plan ... with a given code, optionally meeting
  JSON-friendly conditions (:data:`ENTITY_KINDS`, :func:`check_entity`).
- Ingest events: ``ingest.validation.failure`` events since a time (:func:`check_ingest_events`).
- File upload: measurements read twice (validate and measure, then stream) as a JSON-array body
  of known length (:class:`MeasurementUpload`), the upload URL and the PUT
  (:func:`request_upload_url`, :func:`put_upload`).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from airflow_provider_m3ter.client.errors import M3terFinalError, M3terTransientError, error_for_status
from airflow_provider_m3ter.client.measurements import (
    FieldProblem,
    RowError,
    UidDeriver,
    encode,
    validate_measurement,
)

__all__ = [
    "BILL_JOB",
    "DATA_EXPORT_JOB",
    "ENTITY_KINDS",
    "FILE_UPLOAD_JOB",
    "FILE_UPLOAD_MAX_BYTES",
    "INGEST_VALIDATION_FAILURE",
    "JOB_KINDS",
    "UPLOAD_URL_LIFETIME",
    "CheckResult",
    "EntityKind",
    "FileScan",
    "JobKind",
    "JsonArrayBody",
    "MeasurementFileError",
    "MeasurementUpload",
    "UploadTicket",
    "check_entity",
    "check_ingest_events",
    "check_job",
    "entity_problems",
    "evaluate_ingest_events",
    "evaluate_job",
    "get_entity_kind",
    "get_job_kind",
    "parse_time",
    "put_upload",
    "request_upload_url",
    "summarize_validation_failure",
]

CheckState = Literal["pending", "succeeded", "failed"]
_STATES = ("pending", "succeeded", "failed")
# ids and codes go into URL paths and query strings: refuse anything that could change the path
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}$")


@dataclass(frozen=True)
class CheckResult:
    """The answer of one check.

    :param state: ``"pending"`` (look again later), ``"succeeded"`` or ``"failed"``.
    :param message: one human-readable line saying why.
    :param detail: JSON-friendly facts (the job's id, status and row counts; an entity's id and
        version; failure counts and examples), returned as the task's XCom value on success.
    """

    state: CheckState
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in _STATES:
            raise ValueError(f"CheckResult.state must be one of {_STATES}, got {self.state!r}")

    @property
    def done(self) -> bool:
        """True when waiting is over (succeeded or failed)."""
        return self.state != "pending"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict, as carried in a trigger event."""
        return {"state": self.state, "message": self.message, "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Rebuild a result from :meth:`to_dict` output.

        :param data: a dict with ``state``, ``message`` and ``detail``.
        """
        return cls(
            state=data["state"], message=str(data.get("message", "")), detail=dict(data.get("detail") or {})
        )


def _require_id(value: Any, what: str) -> str:
    """Return ``value`` as a string if it is a plausible m3ter id or code, else raise ValueError."""
    text = str(value).strip() if value is not None else ""
    if not _SAFE_ID.match(text):
        raise ValueError(
            f"{what} must be a non-empty m3ter id or code "
            f"(letters, digits, '_', '-', '.', ':'), got {value!r}"
        )
    return text


# ---------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class JobKind:
    """One kind of m3ter job: where to read it and which statuses end the wait.

    :param name: short name (``"fileupload"``, ``"billjob"``, ``"dataexport"``), also the Console kind.
    :param label: how messages name it.
    :param path: read path relative to the organization, with ``{id}``.
    :param succeeded: statuses that mean done and good.
    :param failed: statuses that mean done and bad.
    :param running: statuses that mean not done yet (anything unknown is treated as running too).
    :param detail_keys: fields of the job copied into :attr:`CheckResult.detail`.
    """

    name: str
    label: str
    path: str
    succeeded: frozenset[str]
    failed: frozenset[str]
    running: frozenset[str]
    detail_keys: tuple[str, ...] = ()

    def url_path(self, job_id: str) -> str:
        """The job's read path for ``job_id`` (validated)."""
        return self.path.format(id=_require_id(job_id, f"{self.label} id"))


FILE_UPLOAD_JOB = JobKind(
    name="fileupload",
    label="file upload job",
    path="fileuploads/measurements/jobs/{id}",
    succeeded=frozenset({"succeeded"}),
    failed=frozenset({"failed"}),
    running=frozenset({"notUploaded", "running"}),
    detail_keys=("fileName", "contentLength", "uploadDate", "totalRows", "processedRows", "failedRows"),
)
BILL_JOB = JobKind(
    name="billjob",
    label="bill job",
    path="billjobs/{id}",
    succeeded=frozenset({"COMPLETE"}),
    failed=frozenset({"CANCELLED"}),
    running=frozenset({"PENDING", "INITIALIZING", "RUNNING"}),
    detail_keys=("type", "billDate", "total", "pending", "billIds"),
)
DATA_EXPORT_JOB = JobKind(
    name="dataexport",
    label="data export job",
    path="dataexports/jobs/{id}",
    succeeded=frozenset({"SUCCEEDED"}),
    failed=frozenset({"FAILED"}),
    running=frozenset({"PENDING", "RUNNING"}),
    detail_keys=("sourceType", "scheduleId", "dateCreated", "startedAt"),
)
JOB_KINDS: dict[str, JobKind] = {kind.name: kind for kind in (FILE_UPLOAD_JOB, BILL_JOB, DATA_EXPORT_JOB)}


def get_job_kind(kind: str | JobKind) -> JobKind:
    """Look a job kind up by name.

    :param kind: a :class:`JobKind` or one of ``"fileupload"``, ``"billjob"``, ``"dataexport"``.
    """
    if isinstance(kind, JobKind):
        return kind
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown m3ter job kind {kind!r}; expected one of {sorted(JOB_KINDS)}") from None


def evaluate_job(
    kind: str | JobKind, job: Mapping[str, Any], *, fail_on_failed_rows: bool = False
) -> CheckResult:
    """Decide what a job document means: still running, succeeded, or failed.

    :param kind: the job's kind.
    :param job: the job as m3ter returns it (``id``, ``status`` and kind-specific fields).
    :param fail_on_failed_rows: file-upload jobs only: a ``succeeded`` job with ``failedRows > 0``
        counts as failed (m3ter marks a job succeeded even when some rows were rejected).
    """
    kind = get_job_kind(kind)
    status = str(job.get("status") or "")
    detail: dict[str, Any] = {"kind": kind.name, "id": job.get("id"), "status": status or None}
    detail.update({key: job[key] for key in kind.detail_keys if key in job})
    name = f"m3ter {kind.label} {job.get('id')}"
    if status in kind.succeeded:
        failed_rows = _as_int(job.get("failedRows"))
        if kind is FILE_UPLOAD_JOB and failed_rows:
            counts = f"{failed_rows} of {_as_int(job.get('totalRows'))} rows failed"
            if fail_on_failed_rows:
                return CheckResult("failed", f"{name} finished with status {status} but {counts}", detail)
            return CheckResult("succeeded", f"{name} finished with status {status}; {counts}", detail)
        return CheckResult("succeeded", f"{name} finished with status {status}", detail)
    if status in kind.failed:
        return CheckResult("failed", f"{name} ended with status {status}", detail)
    if status and status not in kind.running:
        # a status m3ter added later: keep waiting rather than guess an outcome
        return CheckResult("pending", f"{name} has unrecognized status {status!r}; waiting", detail)
    return CheckResult("pending", f"{name} is {status or 'in an unknown state'}", detail)


def check_job(
    client: Any, kind: str | JobKind, job_id: str, *, fail_on_failed_rows: bool = False
) -> CheckResult:
    """Read one job and evaluate it (one GET; the client retries transient errors).

    :param client: an ``M3terClient``.
    :param kind: ``"fileupload"``, ``"billjob"``, ``"dataexport"`` or a :class:`JobKind`.
    :param job_id: the job's id.
    :param fail_on_failed_rows: see :func:`evaluate_job`.
    """
    kind = get_job_kind(kind)
    job = client.request("GET", kind.url_path(job_id))
    return evaluate_job(kind, job or {}, fail_on_failed_rows=fail_on_failed_rows)


def _as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------
# Entities


@dataclass(frozen=True)
class EntityKind:
    """One kind of m3ter configuration entity that has a ``code``.

    :param name: short name (``"meter"``, ``"account"`` ...), also the Console kind.
    :param label: how messages name it.
    :param path: list path relative to the organization.
    :param codes_filter: whether the list endpoint takes a ``codes`` filter (else pages are scanned).
    :param page_size: the largest page the list endpoint allows.
    """

    name: str
    label: str
    path: str
    codes_filter: bool = True
    page_size: int = 100


ENTITY_KINDS: dict[str, EntityKind] = {
    kind.name: kind
    for kind in (
        EntityKind("meter", "meter", "meters"),
        EntityKind("account", "account", "accounts"),
        EntityKind("aggregation", "aggregation", "aggregations"),
        EntityKind("compound_aggregation", "compound aggregation", "compoundaggregations"),
        EntityKind("counter", "counter", "counters"),
        # m3ter's product and plan lists have no codes filter: scan and match the code here
        EntityKind("product", "product", "products", codes_filter=False, page_size=200),
        EntityKind("plan", "plan", "plans", codes_filter=False),
    )
}
_METER_FIELD_LISTS = ("dataFields", "derivedFields")


def get_entity_kind(kind: str | EntityKind) -> EntityKind:
    """Look an entity kind up by name.

    :param kind: an :class:`EntityKind` or a name from :data:`ENTITY_KINDS`.
    """
    if isinstance(kind, EntityKind):
        return kind
    try:
        return ENTITY_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown m3ter entity kind {kind!r}; expected one of {sorted(ENTITY_KINDS)}"
        ) from None


def _lookup(entity: Any, dotted: str) -> tuple[bool, Any]:
    """Follow ``a.b.c`` through nested dicts; return (found, value)."""
    current = entity
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _meter_has_field(meter: Mapping[str, Any], spec: str) -> bool:
    """``"requests"`` or ``"measure.requests"``: a data or derived field with that code (and category)."""
    category, _, code = spec.rpartition(".")
    for list_name in _METER_FIELD_LISTS:
        for data_field in meter.get(list_name) or ():
            if not isinstance(data_field, Mapping) or data_field.get("code") != code:
                continue
            if not category or str(data_field.get("category", "")).upper() == category.upper():
                return True
    return False


def entity_problems(
    kind: str | EntityKind,
    entity: Mapping[str, Any],
    *,
    required_fields: Sequence[str] = (),
    min_version: int | None = None,
    where: Mapping[str, Any] | None = None,
) -> list[str]:
    """List what keeps an entity from meeting the conditions (empty when it meets them all).

    :param kind: the entity's kind; for meters ``required_fields`` name data or derived fields.
    :param entity: the entity as m3ter returns it.
    :param required_fields: meters: ``"<code>"`` or ``"<category>.<code>"`` of a data or derived
        field (``"measure.requests"``); other kinds: dotted paths that must be present and not null
        (``"customFields.region"``).
    :param min_version: the entity's ``version`` must be at least this.
    :param where: dotted path -> value; each must be present and equal (JSON equality).
    """
    kind = get_entity_kind(kind)
    problems: list[str] = []
    for spec in required_fields:
        if kind.name == "meter":
            if not _meter_has_field(entity, spec):
                problems.append(f"no data or derived field {spec!r}")
        else:
            found, value = _lookup(entity, spec)
            if not found or value is None:
                problems.append(f"field {spec!r} is missing")
    if min_version is not None:
        version = entity.get("version")
        if not isinstance(version, int) or version < min_version:
            problems.append(f"version is {version}, waiting for at least {min_version}")
    for path, expected in (where or {}).items():
        found, value = _lookup(entity, path)
        if not found:
            problems.append(f"field {path!r} is missing (want {expected!r})")
        elif value != expected:
            problems.append(f"field {path!r} is {value!r}, want {expected!r}")
    return problems


def check_entity(
    client: Any,
    kind: str | EntityKind,
    code: str,
    *,
    required_fields: Sequence[str] = (),
    min_version: int | None = None,
    where: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Look an entity up by code and check it meets the conditions.

    Never ``"failed"``: an entity that is absent or does not meet the conditions yet is
    ``"pending"`` (the wait ends in a timeout if it never does). Arguments as in
    :func:`entity_problems`.

    :param client: an ``M3terClient``.
    :param kind: the entity kind.
    :param code: the entity's code.
    """
    kind = get_entity_kind(kind)
    code = _require_id(code, f"{kind.label} code")
    params = {"codes": code} if kind.codes_filter else None
    entity = None
    for item in client.paginate(kind.path, params=params, page_size=kind.page_size):
        # match the code here too: the filter narrows the list, the equality decides
        if isinstance(item, Mapping) and item.get("code") == code:
            entity = item
            break
    if entity is None:
        return CheckResult(
            "pending", f"no m3ter {kind.label} with code {code!r} yet", {"kind": kind.name, "code": code}
        )
    detail = {"kind": kind.name, "code": code, "id": entity.get("id"), "version": entity.get("version")}
    problems = entity_problems(
        kind, entity, required_fields=required_fields, min_version=min_version, where=where
    )
    if problems:
        return CheckResult(
            "pending", f"m3ter {kind.label} {code!r} exists but " + "; ".join(problems), detail
        )
    return CheckResult("succeeded", f"m3ter {kind.label} {code!r} exists and meets the conditions", detail)


# ---------------------------------------------------------------------------------------------
# Ingest events

INGEST_VALIDATION_FAILURE = "ingest.validation.failure"
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
        "uid": _find_first(measurement or details, _UID_KEYS),
        "meter": _find_first(measurement or details, ("meter", "meterCode")),
        "account": _find_first(measurement or details, ("account", "accountCode")),
        "message": _find_first(details, _MESSAGE_KEYS),
    }


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
    """
    since_ts = parse_time(since)
    wanted = {str(uid) for uid in uids} if uids else None
    params: dict[str, Any] = {"eventName": INGEST_VALIDATION_FAILURE}
    if include_actioned:
        params["includeActioned"] = "true"
    failures: list[dict[str, Any]] = []
    scanned = older_in_a_row = 0
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
    )


# ---------------------------------------------------------------------------------------------
# File upload: a measurements file streamed as one JSON array

FILE_UPLOAD_MAX_BYTES = 1 << 30  # m3ter accepts 1 byte to 1 GiB per file
UPLOAD_URL_LIFETIME = 60.0  # seconds an upload URL stays valid
_BODY_CHUNK = 1 << 16


class MeasurementFileError(ValueError):
    """A measurements file cannot be uploaded: unreadable JSON, invalid rows, or wrong size.

    :param message: what is wrong, naming the file and the row, line or element.
    :param rejected: the rows that failed validation (possibly only the first ones).
    """

    def __init__(self, message: str, rejected: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.rejected = list(rejected)


@dataclass(frozen=True)
class FileScan:
    """What the first pass over a measurements file found.

    :param measurements: valid measurements that will be uploaded.
    :param content_length: exact byte length of the JSON array body.
    :param rejected: how many rows were invalid (skipped with ``on_invalid="skip"``).
    :param examples: the first rejected rows, as ``RowError.as_dict()`` values.
    """

    measurements: int
    content_length: int
    rejected: int = 0
    examples: tuple[dict[str, Any], ...] = ()


class MeasurementUpload:
    """Measurements prepared for one file upload: validated, given uids, streamed as a JSON array.

    The rows are read twice: :meth:`scan` validates every row and computes the exact body length,
    then :meth:`body` streams the same records, so memory stays flat for files up to m3ter's 1 GiB.

    :param rows: returns a fresh iterator of ``(row, line, measurement or RowError)`` on each call,
        e.g. ``FileSource(path).rows`` from ``airflow_provider_m3ter.operators.sources``.
    :param source: names the source (a file path) in errors.
    :param uid_namespace: measurements without a ``uid`` get a deterministic one derived in this
        namespace (so a re-upload is de-duplicated by m3ter); None leaves them without.
    :param validate: check each measurement against m3ter's ingest rules first.
    :param on_invalid: ``"fail"`` (raise, listing the first problems) or ``"skip"`` (leave the row out).
    :param max_examples: how many rejected rows to keep for messages and the summary.
    """

    def __init__(
        self,
        rows: Callable[[], Iterable[tuple[int, int | None, Any]]],
        *,
        source: str = "measurements",
        uid_namespace: str | None = None,
        validate: bool = True,
        on_invalid: Literal["fail", "skip"] = "fail",
        max_examples: int = 10,
    ) -> None:
        if on_invalid not in ("fail", "skip"):
            raise ValueError(f"on_invalid must be 'fail' or 'skip', got {on_invalid!r}")
        self.rows = rows
        self.source = source
        self.uid_namespace = uid_namespace
        self.validate = validate
        self.on_invalid = on_invalid
        self.max_examples = max_examples

    def _records(self, rejected: list[RowError] | None = None) -> Iterator[bytes]:
        """Encoded valid records; the problems of invalid rows go to ``rejected``."""
        deriver = UidDeriver(self.uid_namespace) if self.uid_namespace else None
        for row, line, item in self.rows():
            if isinstance(item, RowError):
                problems = [FieldProblem(item.field, item.reason)]
            elif self.validate or not isinstance(item, dict):
                problems = validate_measurement(item)
            else:
                problems = []
            if problems:
                if rejected is not None:
                    rejected.extend(RowError(row, p.field, p.reason, self.source, line) for p in problems[:3])
                continue
            try:
                yield deriver.encode(item) if deriver is not None else encode(item)
            except ValueError as exc:  # NaN/Infinity cannot be sent as JSON
                raise MeasurementFileError(f"{self.source}: row {row}: cannot encode ({exc})") from None

    def scan(self) -> FileScan:
        """First pass: validate, count, and compute the exact JSON-array length.

        :raises MeasurementFileError: invalid rows with ``on_invalid="fail"``, no valid rows, or a
            body over m3ter's 1 GiB limit.
        """
        rejected: list[RowError] = []
        count = length = 0
        for record in self._records(rejected):
            count += 1
            length += len(record)
        rejected_rows = len({error.row for error in rejected})
        examples = tuple(error.as_dict() for error in rejected[: self.max_examples])
        if rejected and self.on_invalid == "fail":
            shown = "; ".join(str(error) for error in rejected[: self.max_examples])
            raise MeasurementFileError(
                f"{self.source}: {rejected_rows} invalid row(s), nothing uploaded: {shown}",
                rejected[: self.max_examples],
            )
        if count == 0:
            raise MeasurementFileError(f"{self.source}: no valid measurements to upload")
        content_length = 2 + length + (count - 1)  # brackets and one comma between records
        if content_length > FILE_UPLOAD_MAX_BYTES:
            raise MeasurementFileError(
                f"{self.source}: the upload body would be {content_length} bytes; m3ter accepts at most "
                f"{FILE_UPLOAD_MAX_BYTES} bytes per file: split the file"
            )
        return FileScan(count, content_length, rejected_rows, examples)

    def body(self, content_length: int) -> JsonArrayBody:
        """Second pass: the records as a streamed JSON array of the length :meth:`scan` computed.

        :param content_length: ``FileScan.content_length`` from the first pass.
        """
        return JsonArrayBody(self._records(), content_length, self.source)


class JsonArrayBody:
    """A request body that streams encoded records as ``[r1,r2,...]`` with a known length.

    ``requests`` sends it with ``Content-Length: len(body)`` (not chunked). If the records add up
    to a different length (the file changed between the passes) iteration raises.

    :param records: encoded measurements.
    :param content_length: the exact length the records will add up to.
    :param source: names the file in errors.
    """

    def __init__(self, records: Iterable[bytes], content_length: int, source: str = "body") -> None:
        self._records = records
        self.content_length = content_length
        self.source = source
        self.sent = 0

    def __len__(self) -> int:
        return self.content_length

    def __iter__(self) -> Iterator[bytes]:
        pending = bytearray(b"[")
        first = True
        for record in self._records:
            if not first:
                pending += b","
            first = False
            pending += record
            if len(pending) >= _BODY_CHUNK:
                yield from self._emit(pending)
                pending = bytearray()
        pending += b"]"
        yield from self._emit(pending)
        if self.sent != self.content_length:
            raise MeasurementFileError(
                f"{self.source}: changed while uploading ({self.sent} bytes instead of {self.content_length})"
            )

    def _emit(self, chunk: bytearray) -> Iterator[bytes]:
        self.sent += len(chunk)
        if self.sent > self.content_length:
            raise MeasurementFileError(
                f"{self.source}: changed while uploading (longer than {self.content_length} bytes)"
            )
        yield bytes(chunk)


@dataclass(frozen=True)
class UploadTicket:
    """m3ter's answer to ``generateUploadUrl``: the job and where to PUT the file.

    :param job_id: the file-upload job created for this upload.
    :param url: the signed upload URL (a secret: never log it).
    :param headers: headers the PUT must carry (instead of the bearer token).
    :param issued_at: ``time.monotonic()`` when the URL was issued (it expires a minute later).
    """

    job_id: str
    url: str = field(repr=False)
    headers: dict[str, str] = field(repr=False, default_factory=dict)
    issued_at: float = 0.0


def request_upload_url(
    client: Any, *, file_name: str, content_length: int, content_type: str = "application/json"
) -> UploadTicket:
    """Ask m3ter for an upload URL (creates a file-upload job). Call it right before the PUT.

    :param client: an ``M3terClient``.
    :param file_name: the name m3ter shows for the job (1-100 characters).
    :param content_length: exact body length in bytes (1 byte to 1 GiB).
    :param content_type: ``application/json`` (or ``text/json``).
    """
    if not 0 < len(file_name) <= 100:
        raise ValueError(f"file_name must be 1-100 characters, got {len(file_name)}: {file_name[:120]!r}")
    if not 0 < content_length <= FILE_UPLOAD_MAX_BYTES:
        raise ValueError(f"content_length must be 1 to {FILE_UPLOAD_MAX_BYTES} bytes, got {content_length}")
    answer = client.request(
        "POST",
        "fileuploads/measurements/generateUploadUrl",
        json={"fileName": file_name, "contentType": content_type, "contentLength": content_length},
    )
    if not isinstance(answer, Mapping) or not answer.get("jobId") or not answer.get("url"):
        raise M3terFinalError(
            200, "POST", "fileuploads/measurements/generateUploadUrl", "answer has no jobId or url"
        )
    headers = {str(key): str(value) for key, value in (answer.get("headers") or {}).items()}
    return UploadTicket(str(answer["jobId"]), str(answer["url"]), headers, time.monotonic())


def put_upload(
    ticket: UploadTicket, body: JsonArrayBody | bytes, *, session: Any = None, timeout: float = 600.0
) -> None:
    """PUT the file to the signed URL with m3ter's headers (never the bearer token).

    One attempt: a failure raises ``M3terTransientError`` (5XX, 429, network) or
    ``M3terFinalError`` (4XX, e.g. an expired URL); the caller decides whether to start over with a
    new URL. Errors name the job, never the URL.

    :param ticket: from :func:`request_upload_url`.
    :param body: the JSON array (:meth:`MeasurementUpload.body`) or bytes.
    :param session: a ``requests.Session`` without m3ter credentials; a fresh one by default.
    :param timeout: seconds for connect and each read.
    """
    import requests

    where = f"<upload URL of job {ticket.job_id}>"
    headers = dict(ticket.headers)
    if not any(key.lower() == "content-type" for key in headers):
        headers["Content-Type"] = "application/json"
    own_session = session is None
    http = requests.Session() if own_session else session
    try:
        response = http.put(ticket.url, data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        # the exception text can contain the signed URL: keep only its class
        raise M3terTransientError(None, "PUT", where, f"upload failed ({type(exc).__name__})") from None
    finally:
        if own_session:
            http.close()
    if response.status_code >= 400:
        text = (response.text or "").strip().replace(ticket.url, where)[:300]
        raise error_for_status(
            response.status_code, "PUT", where, text or response.reason or "upload refused"
        )
