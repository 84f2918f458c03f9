"""Trigger that reconciles an ingest run's totals with m3ter's usage query (deferrable mode)."""

from __future__ import annotations

from typing import Any

from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.client.reconcile import check_reconciliation
from airflow_provider_m3ter.triggers.base import M3terPollingTrigger

__all__ = ["M3terReconciliationTrigger"]


class M3terReconciliationTrigger(M3terPollingTrigger):
    """Compare the run's totals with m3ter's until they match or ``settle_until`` passes.

    :param summary: the ingest summary's ``totals``, ``ts_min`` and ``ts_max`` (JSON values).
    :param start: inclusive start of the period, ISO-8601.
    :param end: exclusive end of the period, ISO-8601.
    :param settle_until: epoch seconds after which a difference fails the check.
    :param allow_other_writers: m3ter may hold more than the run sent.
    :param m3ter_conn_id: the Airflow connection to m3ter.
    :param deadline: absolute end of the wait, epoch seconds.
    :param poll_interval: seconds between checks.
    """

    def __init__(
        self,
        *,
        summary: dict[str, Any],
        start: str,
        end: str,
        settle_until: float,
        allow_other_writers: bool = False,
        m3ter_conn_id: str,
        deadline: float,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__(m3ter_conn_id=m3ter_conn_id, deadline=deadline, poll_interval=poll_interval)
        self.summary = dict(summary)
        self.start = start
        self.end = end
        self.settle_until = float(settle_until)
        self.allow_other_writers = bool(allow_other_writers)

    def check(self, client: Any) -> CheckResult:
        """Query m3ter once and compare."""
        return check_reconciliation(
            client,
            self.summary,
            self.start,
            self.end,
            settle_until=self.settle_until,
            allow_other_writers=self.allow_other_writers,
        )

    def check_kwargs(self) -> dict[str, Any]:
        """Totals, period, settle time and the other-writers rule."""
        return {
            "summary": self.summary,
            "start": self.start,
            "end": self.end,
            "settle_until": self.settle_until,
            "allow_other_writers": self.allow_other_writers,
        }
