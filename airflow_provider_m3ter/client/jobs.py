"""Things to wait for in m3ter, and the checks that decide when the wait is over.

Plain Python (no Airflow import). Each ``check_*`` function makes the calls one poll needs through
an :class:`~airflow_provider_m3ter.client.core.M3terClient` (so the client's retry rules apply) and
returns a :class:`CheckResult`: still pending, succeeded, or failed, with JSON-friendly details.
Sensors call them directly and triggers call them through ``asyncio.to_thread``, so both paths reach
the same outcome from the same answer.

- Jobs: file-upload jobs, bill jobs, data-export jobs (:data:`JOB_KINDS`, :func:`check_job`).
- Entities: a meter, account, product, aggregation, plan ... with a given code, optionally meeting
  JSON-friendly conditions (:data:`ENTITY_KINDS`, :func:`check_entity`).

The ingest-events check lives in :mod:`airflow_provider_m3ter.client.events` and the file-upload
helpers in :mod:`airflow_provider_m3ter.client.file_upload`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_m3ter.client.paths import shown, uuid_segment

__all__ = [
    "BILL_JOB",
    "DATA_EXPORT_JOB",
    "ENTITY_KINDS",
    "FILE_UPLOAD_JOB",
    "JOB_KINDS",
    "CheckResult",
    "EntityKind",
    "JobKind",
    "check_entity",
    "check_job",
    "entity_problems",
    "evaluate_job",
    "get_entity_kind",
    "get_job_kind",
]

CheckState = Literal["pending", "succeeded", "failed"]
_STATES = ("pending", "succeeded", "failed")


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


def _require_code(value: Any, what: str) -> str:
    """Return ``value`` as a code (1-200 printable characters, no surrounding whitespace), else raise."""
    text = value if isinstance(value, str) else ""
    if not text or len(text) > 200 or text != text.strip() or not text.isprintable():
        raise ValueError(
            f"{what} must be 1-200 printable characters, no surrounding spaces; got {shown(value)}"
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
        """The job's read path for ``job_id`` (a UUID, percent-encoded).

        :raises M3terConfigurationError: ``job_id`` is not an m3ter id (``..``, a slash, a code ...).
        """
        return self.path.format(id=uuid_segment(job_id, f"{self.label} id", field="job_id"))


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
    code = _require_code(code, f"{kind.label} code")
    # a code with a comma (legal in m3ter) is found by scanning: a server may split filter values on commas
    params = {"codes": [code]} if kind.codes_filter and "," not in code else None
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
