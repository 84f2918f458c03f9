"""Trigger that watches for ``ingest.validation.failure`` events after an ingest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_provider_m3ter.client.events import check_ingest_events
from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.triggers.base import M3terPollingTrigger

__all__ = ["M3terIngestEventsTrigger"]


class M3terIngestEventsTrigger(M3terPollingTrigger):
    """Collect validation failures since ``since`` until ``settle_until`` (see ``check_ingest_events``).

    :param since: start of the window, ISO-8601 date-time.
    :param settle_until: epoch seconds after which no more failures are expected.
    :param uids: only failures of these measurement uids count (None: all in the window).
    :param on_failure: ``"fail"`` (end at the first failure) or ``"warn"`` (report at settle time).
    :param max_examples: how many failures the report keeps as examples.
    :param uid_namespaces: uid namespaces of the checked loads (proven resends are not failures).
    :param other_loads: ``"fail"`` or ``"ignore"`` (events proven to be other loads' are left out).
    :param m3ter_conn_id: the Airflow connection to m3ter.
    :param deadline: absolute end of the wait, epoch seconds.
    :param poll_interval: seconds between checks.
    """

    def __init__(
        self,
        *,
        since: str,
        settle_until: float,
        uids: Sequence[str] | None = None,
        on_failure: str = "fail",
        max_examples: int = 5,
        uid_namespaces: Sequence[str] | None = None,
        other_loads: str = "fail",
        m3ter_conn_id: str,
        deadline: float,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__(m3ter_conn_id=m3ter_conn_id, deadline=deadline, poll_interval=poll_interval)
        if on_failure not in ("fail", "warn"):
            raise ValueError(f"on_failure must be 'fail' or 'warn', got {on_failure!r}")
        self.since = since
        self.settle_until = float(settle_until)
        self.uids = list(uids) if uids is not None else None
        self.on_failure = on_failure
        self.max_examples = int(max_examples)
        self.uid_namespaces = list(uid_namespaces or ())
        if other_loads not in ("fail", "ignore"):
            raise ValueError(f"other_loads must be 'fail' or 'ignore', got {other_loads!r}")
        self.other_loads = other_loads

    def check(self, client: Any) -> CheckResult:
        """Read the events once and evaluate them against the settle time."""
        return check_ingest_events(
            client,
            since=self.since,
            settle_until=self.settle_until,
            uids=self.uids,
            on_failure="warn" if self.on_failure == "warn" else "fail",
            max_examples=self.max_examples,
            uid_namespaces=self.uid_namespaces,
            other_loads="ignore" if self.other_loads == "ignore" else "fail",
        )

    def check_kwargs(self) -> dict[str, Any]:
        """Window, settle time, uids and the failure rule."""
        return {
            "since": self.since,
            "settle_until": self.settle_until,
            "uids": list(self.uids) if self.uids is not None else None,
            "on_failure": self.on_failure,
            "max_examples": self.max_examples,
            "uid_namespaces": list(self.uid_namespaces),
            "other_loads": self.other_loads,
        }
