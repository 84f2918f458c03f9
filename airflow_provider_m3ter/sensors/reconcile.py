"""Sensor that proves, after an ingest, that m3ter's own totals equal what the run sent."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.client.reconcile import (
    ReconciliationError,
    check_reconciliation,
    format_table,
)
from airflow_provider_m3ter.sensors.base import M3terBaseSensor
from airflow_provider_m3ter.triggers.reconcile import M3terReconciliationTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["M3terReconciliationSensor"]

_SUMMARY_KEYS = ("totals", "ts_min", "ts_max")


class M3terReconciliationSensor(M3terBaseSensor):
    """After an ingest, compare m3ter's usage totals with the run's, per meter, account and field.

    The ingest operator's summary (its XCom) carries ``totals``: per meter, account and numeric
    field, the sum and count it sent. This sensor asks m3ter's usage query (Data Explorer) for the
    same totals over the period, and:

    - succeeds when they are equal (sums within a relative 1e-9, counts exactly), returning
      ``{"start", "end", "compared", "different", "queries", "table"}`` and logging the table;
    - keeps waiting while they differ, for ``settle_seconds`` after its first check (m3ter
      processes measurements asynchronously);
    - then fails (:class:`~airflow_provider_m3ter.exceptions.M3terCheckFailure`, no retries),
      naming every meter/account/field that differs, with both sums and counts and the difference.

    What it proves depends on who else writes: by default equality is required, so it proves m3ter
    counted exactly the run's measurements only if no other writer sends usage for the same meters
    and accounts in the period (otherwise it fails). ``allow_other_writers=True`` requires only that
    m3ter holds at least the run's count (and sum, for non-negative values); a loss of the run's own
    measurements can then be hidden by another writer's.

    :param summary: the ingest task's summary: its XComArg (``ingest.output``), a dict or JSON text
        (templated).
    :param start: inclusive start of the period (templated; default ``data_interval_start``).
    :param end: exclusive end of the period (templated; default ``data_interval_end``). When the run
        has no interval (a manual run), the summary's ``ts_min`` .. ``ts_max`` is used.
    :param settle_seconds: how long after the first check a difference may still be m3ter catching up.
    :param allow_other_writers: see above.
    :param poke_interval: seconds between checks, at least 1 (default 30; each check is one usage
        query, so the sensor stays within Data Explorer's 1 request/s).
    :param kwargs: :class:`~airflow_provider_m3ter.sensors.base.M3terBaseSensor` arguments; keep
        ``timeout`` above ``settle_seconds``.
    """

    template_fields: Sequence[str] = ("m3ter_conn_id", "summary", "start", "end")
    console_kind = None

    def __init__(
        self,
        *,
        summary: Any,
        start: Any = None,
        end: Any = None,
        settle_seconds: float = 300.0,
        allow_other_writers: bool = False,
        poke_interval: timedelta | float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must not be negative, got {settle_seconds!r}")
        if self.poke_interval < 1.0:
            raise ValueError(
                "poke_interval must be at least 1 s (Data Explorer allows 1 request/s), "
                f"got {self.poke_interval!r}"
            )
        self.summary = summary
        self.start = start
        self.end = end
        self.settle_seconds = float(settle_seconds)
        self.allow_other_writers = bool(allow_other_writers)
        self.settle_until: float | None = None

    def prepare(self, context: Context) -> None:
        """Read the summary, fix the period and the settle time for this try."""
        if self.timeout <= self.settle_seconds:
            raise ValueError(
                f"{self.task_id}: timeout ({self.timeout} s) must be longer than settle_seconds "
                f"({self.settle_seconds} s), or the sensor times out before it can report"
            )
        summary = self.summary
        if isinstance(summary, str):
            try:
                summary = json.loads(summary)
            except ValueError:
                raise ValueError(f"{self.task_id}: summary is text but not JSON") from None
        if not isinstance(summary, dict):
            raise ValueError(f"{self.task_id}: summary must be the ingest task's summary (a dict)")
        self.summary = {key: summary.get(key) for key in _SUMMARY_KEYS}
        start = self.start if self.start not in (None, "", "None") else context.get("data_interval_start")
        end = self.end if self.end not in (None, "", "None") else context.get("data_interval_end")
        if start is None or end is None or str(start) == str(end):
            start, end = self.summary["ts_min"], self.summary["ts_max"]
            if start is None:
                start = end = "1970-01-01T00:00:00Z"  # the run sent nothing
            end = _just_after(str(end))
        self.start, self.end = _text(start), _text(end)
        started = time.time()
        if self.reschedule and not self.deferrable:
            first = context["ti"].get_first_reschedule_date(context)
            started = first.timestamp() if first else started
        self.settle_until = started + self.settle_seconds

    def check(self, client: Any, context: Context) -> CheckResult:
        """Query m3ter once and compare (a summary that cannot be reconciled fails the task)."""
        try:
            return check_reconciliation(
                client,
                self.summary,
                self.start,
                self.end,
                settle_until=self.settle_until or 0.0,
                allow_other_writers=self.allow_other_writers,
            )
        except ReconciliationError as exc:
            return CheckResult("failed", f"cannot reconcile: {exc}", {})

    def build_trigger(self, context: Context, deadline: float) -> M3terReconciliationTrigger:
        """The reconciliation trigger with this sensor's totals, period and settle time."""
        return M3terReconciliationTrigger(
            summary=self.summary,
            start=str(self.start),
            end=str(self.end),
            settle_until=self.settle_until or 0.0,
            allow_other_writers=self.allow_other_writers,
            m3ter_conn_id=self.m3ter_conn_id,
            deadline=deadline,
            poll_interval=self.poke_interval,
        )

    def report(self, result: CheckResult) -> None:
        """Log the answer, and the comparison table once the sums match."""
        super().report(result)
        if result.done and result.detail.get("table"):
            self.log.info("m3ter reconciliation:\n%s", format_table(result.detail["table"]))


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _just_after(ts: str) -> str:
    """The moment one microsecond after ``ts`` (an exclusive end that still includes ``ts``)."""
    from datetime import datetime, timedelta, timezone

    moment = datetime.fromisoformat(ts[:-1] + "+00:00" if ts.endswith("Z") else ts)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment + timedelta(microseconds=1)).isoformat()
