"""Sensors that wait for an m3ter job: file upload, bill job, data export."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_m3ter.client.jobs import CheckResult, check_job, get_job_kind
from airflow_provider_m3ter.sensors.base import M3terBaseSensor
from airflow_provider_m3ter.triggers.jobs import M3terJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["M3terBillJobSensor", "M3terDataExportJobSensor", "M3terFileUploadJobSensor", "M3terJobSensor"]


class M3terJobSensor(M3terBaseSensor):
    """Wait until an m3ter job reaches a final status; a failed or cancelled job fails the task.

    Returns (XCom) the job's id, status and kind-specific fields such as row counts.

    :param job_id: the job's id (templated), e.g. ``"{{ ti.xcom_pull('upload')['job_id'] }}"``.
    :param job_kind: ``"fileupload"``, ``"billjob"`` or ``"dataexport"``.
    :param fail_on_failed_rows: file-upload jobs: fail when a succeeded job reports ``failedRows > 0``.
    :param poke_interval: seconds between checks (default 30: well within m3ter's rate limits).
    :param kwargs: :class:`~airflow_provider_m3ter.sensors.base.M3terBaseSensor` arguments
        (``m3ter_conn_id``, ``deferrable``, ``timeout``, ``mode`` ...).
    """

    template_fields: Sequence[str] = ("m3ter_conn_id", "job_id")
    job_kind_default: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        job_id: str,
        job_kind: str | None = None,
        fail_on_failed_rows: bool = False,
        poke_interval: timedelta | float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        kind = job_kind or self.job_kind_default
        if kind is None:
            raise ValueError(
                f"{type(self).__name__}: job_kind is required (fileupload, billjob or dataexport)"
            )
        self.job_kind = get_job_kind(kind).name
        self.job_id = job_id
        self.fail_on_failed_rows = fail_on_failed_rows

    def prepare(self, context: Context) -> None:
        """Check the rendered job id is usable before any call."""
        # the job kind validates the id the same way for poke and trigger
        get_job_kind(self.job_kind).url_path(str(self.job_id or "").strip())
        self.job_id = str(self.job_id).strip()

    def link_target(self) -> tuple[str | None, str | None]:
        """The job itself."""
        return self.job_kind, self.job_id

    def check(self, client: Any, context: Context) -> CheckResult:
        """Read the job once and evaluate its status."""
        return check_job(client, self.job_kind, self.job_id, fail_on_failed_rows=self.fail_on_failed_rows)

    def build_trigger(self, context: Context, deadline: float) -> M3terJobTrigger:
        """The job trigger with this sensor's arguments."""
        return M3terJobTrigger(
            job_kind=self.job_kind,
            job_id=self.job_id,
            fail_on_failed_rows=self.fail_on_failed_rows,
            m3ter_conn_id=self.m3ter_conn_id,
            deadline=deadline,
            poll_interval=self.poke_interval,
        )


class M3terFileUploadJobSensor(M3terJobSensor):
    """Wait for a measurements file-upload job: ``succeeded`` passes, ``failed`` fails.

    m3ter marks a job ``succeeded`` even when some rows were rejected: set
    ``fail_on_failed_rows=True`` to fail then too. Arguments as :class:`M3terJobSensor` (without
    ``job_kind``).
    """

    job_kind_default = "fileupload"


class M3terBillJobSensor(M3terJobSensor):
    """Wait for a bill job: ``COMPLETE`` passes, ``CANCELLED`` fails.

    Arguments as :class:`M3terJobSensor` (without ``job_kind``).
    """

    job_kind_default = "billjob"


class M3terDataExportJobSensor(M3terJobSensor):
    """Wait for a data export job: ``SUCCEEDED`` passes, ``FAILED`` fails.

    Arguments as :class:`M3terJobSensor` (without ``job_kind``).
    """

    job_kind_default = "dataexport"
