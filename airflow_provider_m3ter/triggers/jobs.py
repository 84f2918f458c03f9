"""Triggers that wait for an m3ter job (file upload, bill job, data export) to finish."""

from __future__ import annotations

from typing import Any

from airflow_provider_m3ter.client.jobs import CheckResult, check_job, get_job_kind
from airflow_provider_m3ter.triggers.base import M3terPollingTrigger

__all__ = ["M3terFileUploadJobTrigger", "M3terJobTrigger"]


class M3terJobTrigger(M3terPollingTrigger):
    """Wait until an m3ter job reaches a final status (see ``client.jobs.JOB_KINDS``).

    :param job_kind: ``"fileupload"``, ``"billjob"`` or ``"dataexport"``.
    :param job_id: the job's id.
    :param fail_on_failed_rows: file-upload jobs: a succeeded job with failed rows counts as failed.
    :param m3ter_conn_id: the Airflow connection to m3ter.
    :param deadline: absolute end of the wait, epoch seconds.
    :param poll_interval: seconds between checks.
    :param carry: JSON values returned in every event (see ``M3terPollingTrigger``).
    """

    def __init__(
        self,
        *,
        job_kind: str,
        job_id: str,
        fail_on_failed_rows: bool = False,
        m3ter_conn_id: str,
        deadline: float,
        poll_interval: float = 30.0,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            m3ter_conn_id=m3ter_conn_id, deadline=deadline, poll_interval=poll_interval, carry=carry
        )
        self.job_kind = get_job_kind(job_kind).name
        self.job_id = job_id
        self.fail_on_failed_rows = bool(fail_on_failed_rows)

    def check(self, client: Any) -> CheckResult:
        """Read the job once and evaluate its status."""
        return check_job(client, self.job_kind, self.job_id, fail_on_failed_rows=self.fail_on_failed_rows)

    def check_kwargs(self) -> dict[str, Any]:
        """Job kind, id and the failed-rows rule."""
        return {
            "job_kind": self.job_kind,
            "job_id": self.job_id,
            "fail_on_failed_rows": self.fail_on_failed_rows,
        }


class M3terFileUploadJobTrigger(M3terJobTrigger):
    """Wait for a measurements file-upload job (``M3terFileUploadOperator``'s deferral).

    Takes the arguments of :class:`M3terJobTrigger` except ``job_kind`` (fixed, so not serialized).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("job_kind", None)
        super().__init__(job_kind="fileupload", **kwargs)

    def check_kwargs(self) -> dict[str, Any]:
        """Job id and the failed-rows rule (the kind is the class)."""
        kwargs = super().check_kwargs()
        del kwargs["job_kind"]
        return kwargs
