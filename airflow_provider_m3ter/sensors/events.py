"""Sensor that reports m3ter's asynchronous ingest validation failures after an ingest."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_m3ter.client.events import check_ingest_events, parse_time
from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.sensors.base import M3terBaseSensor
from airflow_provider_m3ter.triggers.events import M3terIngestEventsTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["M3terIngestEventsSensor"]


class M3terIngestEventsSensor(M3terBaseSensor):
    """After an ingest, report the measurements m3ter rejected while validating them.

    m3ter accepts every well-formed ingest request (``200 accepted``) and validates the
    measurements later; rejections surface as ``ingest.validation.failure`` events (UndefinedMeter,
    MissingField, DuplicateUid, ...). This sensor reads those events from ``since`` on, for
    ``settle_seconds`` after its first check (the time m3ter is given to finish validating):

    - ``on_failure="fail"``: the first failure seen fails the task at once
      (:class:`~airflow_provider_m3ter.exceptions.M3terCheckFailure`, no retries), naming the
      counts by failure type and the first examples;
    - ``on_failure="warn"``: it waits the whole settle period, logs a warning with the counts and
      examples, and succeeds.

    With no failure it succeeds once the settle period is over. The XCom value is the report:
    ``{"failures", "by_type", "examples", "events_scanned", "since", "settled", "resends",
    "other_loads"}``.

    :param since: start of the window (templated; datetime or ISO-8601). Default: the DAG run's
        start, so the upstream ingest of this run is covered and earlier runs' failures are not.
    :param uids: only failures of these measurement uids count (templated; a list, a JSON list or
        comma-separated text, or an XComArg). Default: every failure in the window.
    :param uid_namespaces: uid namespaces of the loads this check covers (templated). A rerun's
        resends that m3ter reports as ``DuplicateUid`` are not failures when they are provably the
        content their uid was derived from in one of these namespaces. Default: the namespaces of
        the DAG's ``M3terIngestMeasurementsOperator`` and ``M3terFileUploadOperator`` tasks (their
        ``uid_namespace``, else ``<dag_id>.<task_id>``); mapped tasks and templated namespaces need
        them listed here.
    :param other_loads: ``"fail"`` (default): every failure event in the window counts, whoever
        sent the measurement (m3ter's events are the organization's). ``"ignore"``: an event whose
        measurement provably was not derived in ``uid_namespaces`` is another load's (another DAG
        or run in the same organization) and is counted as ``other_loads``, not as a failure. Use
        it only when the checked loads' rows carry no ``uid`` of their own (the provider derives
        every uid), or give ``uids``; refused when a namespace of the DAG cannot be known.
    :param settle_seconds: how long after the first check failures may still appear (default 120).
    :param on_failure: ``"fail"`` or ``"warn"``.
    :param max_examples: how many failures the report keeps as examples.
    :param poke_interval: seconds between checks (default 30).
    :param kwargs: :class:`~airflow_provider_m3ter.sensors.base.M3terBaseSensor` arguments; keep
        ``timeout`` above ``settle_seconds``.
    """

    template_fields: Sequence[str] = ("m3ter_conn_id", "since", "uids", "uid_namespaces")
    console_kind = "event"

    def __init__(
        self,
        *,
        since: datetime | str | None = None,
        uids: Sequence[str] | str | None = None,
        uid_namespaces: Sequence[str] | str | None = None,
        settle_seconds: float = 120.0,
        on_failure: str = "fail",
        max_examples: int = 5,
        poke_interval: timedelta | float = 30.0,
        other_loads: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        if on_failure not in ("fail", "warn"):
            raise ValueError(f"on_failure must be 'fail' or 'warn', got {on_failure!r}")
        if other_loads not in ("fail", "ignore"):
            raise ValueError(f"other_loads must be 'fail' or 'ignore', got {other_loads!r}")
        self.other_loads = other_loads
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must not be negative, got {settle_seconds!r}")
        self.since = since
        self.uids = uids
        self.uid_namespaces = uid_namespaces
        self.settle_seconds = float(settle_seconds)
        self.on_failure = on_failure
        self.max_examples = max_examples
        self.settle_until: float | None = None

    def prepare(self, context: Context) -> None:
        """Fix the window start, the uid filter and the settle time for this try."""
        if self.timeout <= self.settle_seconds:
            raise ValueError(
                f"{self.task_id}: timeout ({self.timeout} s) must be longer than settle_seconds "
                f"({self.settle_seconds} s), or the sensor times out before it can report"
            )
        self.since = _iso(self.since if self.since not in (None, "", "None") else _default_since(context))
        self.uids = _uid_list(self.uids, self.task_id)
        given = _uid_list(self.uid_namespaces, self.task_id)
        if given is not None:
            self.uid_namespaces = given
        else:
            self.uid_namespaces, unknown = _ingest_namespaces(context)
            if self.other_loads == "ignore" and self.uids is None and unknown:
                raise ValueError(
                    f"{self.task_id}: other_loads='ignore' needs the uid namespace of every load it "
                    f"checks, and {', '.join(unknown)} has none known before it runs (mapped, or a "
                    "templated uid_namespace): list them in uid_namespaces"
                )
        if self.other_loads == "ignore" and not self.uid_namespaces and self.uids is None:
            raise ValueError(
                f"{self.task_id}: other_loads='ignore' needs uid_namespaces or uids (the DAG has no "
                "ingest or file upload task to take them from)"
            )
        started = time.time()
        if self.reschedule and not self.deferrable:
            # reschedule mode re-runs prepare on every poke: count from the first one
            first = context["ti"].get_first_reschedule_date(context)
            started = first.timestamp() if first else started
        self.settle_until = started + self.settle_seconds

    def check(self, client: Any, context: Context) -> CheckResult:
        """Read the failure events once and evaluate them against the settle time."""
        return check_ingest_events(
            client,
            since=self.since,
            settle_until=self.settle_until if self.settle_until is not None else 0.0,
            uids=self.uids,  # type: ignore[arg-type]
            on_failure="warn" if self.on_failure == "warn" else "fail",
            max_examples=self.max_examples,
            uid_namespaces=self.uid_namespaces,  # type: ignore[arg-type]
            other_loads="ignore" if self.other_loads == "ignore" else "fail",
        )

    def build_trigger(self, context: Context, deadline: float) -> M3terIngestEventsTrigger:
        """The ingest-events trigger with this sensor's window and settle time."""
        return M3terIngestEventsTrigger(
            since=str(self.since),
            settle_until=self.settle_until or 0.0,
            uids=self.uids,  # type: ignore[arg-type]
            on_failure=self.on_failure,
            max_examples=self.max_examples,
            uid_namespaces=self.uid_namespaces,  # type: ignore[arg-type]
            other_loads=self.other_loads,
            m3ter_conn_id=self.m3ter_conn_id,
            deadline=deadline,
            poll_interval=self.poke_interval,
        )

    def report(self, result: CheckResult) -> None:
        """Log the answer; failures reported in ``warn`` mode are logged as a warning."""
        if result.done and result.detail.get("failures"):
            self.log.warning("m3ter ingest validation: %s", result.message)
        else:
            super().report(result)


def _iso(value: Any) -> str:
    """An ISO-8601 UTC string for a datetime, ISO string or epoch seconds (validated)."""
    return datetime.fromtimestamp(parse_time(value), tz=timezone.utc).isoformat()


def _default_since(context: Context) -> Any:
    """The DAG run's start; else the data interval start; else now."""
    dag_run = context.get("dag_run")
    for candidate in (getattr(dag_run, "start_date", None), context.get("data_interval_start")):
        if candidate is not None:
            return candidate
    return time.time()


def _ingest_namespaces(context: Context) -> tuple[list[str], list[str]]:
    """The uid namespaces of the DAG's ingest and file upload tasks (their own, else ``<dag_id>.<task_id>``).

    :return: ``(namespaces, task ids whose namespace is not known before they run)``: mapped tasks
        (one namespace per map index) and templated ``uid_namespace`` values.
    """
    from airflow_provider_m3ter.operators.file_upload import M3terFileUploadOperator
    from airflow_provider_m3ter.operators.ingest import M3terIngestMeasurementsOperator

    loads = (M3terIngestMeasurementsOperator, M3terFileUploadOperator)
    dag = context.get("dag")
    namespaces: list[str] = []
    unknown: list[str] = []
    for task in getattr(dag, "tasks", None) or ():
        if isinstance(task, loads):
            own = task.uid_namespace
            if own and ("{{" in str(own) or "{%" in str(own)):
                unknown.append(task.task_id)
            else:
                namespaces.append(str(own) if own else f"{task.dag_id}.{task.task_id}")
        elif _is_mapped_load(task, loads):
            unknown.append(task.task_id)
    return namespaces, unknown


def _is_mapped_load(task: Any, loads: tuple[type, ...]) -> bool:
    """Whether ``task`` is a mapped (``.partial().expand()``) ingest or file upload task."""
    operator_class = getattr(task, "operator_class", None)
    if isinstance(operator_class, type):
        return issubclass(operator_class, loads)
    if isinstance(operator_class, dict):  # a deserialized mapped operator names its class
        name = str(operator_class.get("task_type") or operator_class.get("_task_type") or "")
        return name in {load.__name__ for load in loads}
    return False


def _uid_list(value: Any, task_id: str) -> list[str] | None:
    """Normalize ``uids``: None, a list, a JSON list or comma-separated text."""
    if value is None or value == "" or value == "None":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{task_id}: uids is not a valid JSON list: {text[:80]!r}") from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, (list, tuple, set)):
        raise ValueError(f"{task_id}: uids must be a list of strings, got {type(value).__name__}")
    return [str(uid) for uid in value]
