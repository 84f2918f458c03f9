"""``M3terFileUploadOperator``: backfills too large for the Ingest API, through m3ter's file upload.

The operator reads a measurements file (JSON Lines, a JSON array or CSV, optionally gzipped; the
same sources and column mapping as the ingest operator), validates every row and gives rows
without a ``uid`` a deterministic one, computes the exact size of the JSON array it will send, then
asks m3ter for an upload URL (valid one minute, so only now), streams the array to it with m3ter's
headers (never the bearer token), and waits for the file-upload job (optionally deferred).

Crash safety (Airflow 3.3+): the job id is kept in ``context["task_state_store"]`` as soon as the
upload URL is issued and again once the PUT succeeded. A retry after a worker crash finds it and
waits on that job instead of uploading again; only a job whose file never arrived (``notUploaded``
after an interrupted PUT) or that ended badly is replaced by a fresh upload.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from airflow_provider_m3ter.client.deadline import time_limit
from airflow_provider_m3ter.client.errors import M3terError
from airflow_provider_m3ter.client.file_upload import (
    FileScan,
    MeasurementFileError,
    MeasurementUpload,
    put_upload,
    request_upload_url,
)
from airflow_provider_m3ter.client.jobs import FILE_UPLOAD_JOB, CheckResult, check_job, evaluate_job
from airflow_provider_m3ter.compat import AirflowException, AirflowFailException
from airflow_provider_m3ter.exceptions import M3terCheckFailure, to_airflow_failure
from airflow_provider_m3ter.links import M3terConsoleLink, link_task_to_console
from airflow_provider_m3ter.manual_runs import IntervalTemplatesGuard
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError
from airflow_provider_m3ter.operators.sources import FileSource
from airflow_provider_m3ter.sensors.base import WaitLimit, check_then_defer, default_deferrable
from airflow_provider_m3ter.triggers.base import error_from_dict
from airflow_provider_m3ter.triggers.jobs import M3terFileUploadJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_m3ter.hooks.m3ter import M3terHook

__all__ = ["UPLOAD_STATE_KEY", "M3terFileUploadOperator"]

#: The ``task_state_store`` key holding the upload's job id and phase.
UPLOAD_STATE_KEY = "m3ter_file_upload"


class M3terFileUploadOperator(IntervalTemplatesGuard, BaseOperator):
    """Upload a measurements file to m3ter's file-upload ingest and wait for the job.

    Returns (XCom) ``{"job_id", "status", "file_name", "measurements", "rejected", "content_length",
    "totalRows", "processedRows", "failedRows", "resumed"}`` (``resumed``: this try reconnected to a
    previous try's job); the same keys in every mode and under every runner (a deferral's trigger
    event carries the upload's summary back).

    :param source_path: the file: a local path, a ``file://``/object-storage URL (templated).
    :param source_format: ``jsonl``, ``json`` (array) or ``csv``; ``None`` detects it.
    :param mapping: column -> target for flat rows (CSV), as in the ingest operator.
    :param meter: Meter code for rows without one (templated).
    :param account: Account code for rows without one (templated).
    :param file_name: the name m3ter shows for the job (templated); default: the source's file name.
    :param uid_namespace: scopes derived uids (templated); default ``<dag_id>.<task_id>``. Keep it
        stable so a re-upload is de-duplicated by m3ter.
    :param on_invalid: ``"fail"`` (nothing is uploaded if a row is invalid) or ``"skip"``.
    :param wait_for_completion: wait for the job to finish (else return once the file is uploaded;
        use ``M3terFileUploadJobSensor`` later).
    :param fail_on_failed_rows: fail when the finished job reports ``failedRows > 0``.
    :param poll_interval: seconds between job checks.
    :param wait_timeout: seconds to wait for the job before the task fails (a retry waits on the
        same job again).
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    :param upload_attempts: attempts for URL + PUT when the PUT fails transiently (each attempt
        uses a fresh URL).
    :param put_timeout: seconds for connect and each read of the PUT.
    :param m3ter_conn_id: the Airflow connection to m3ter (templated).
    :param kwargs: ``BaseOperator`` arguments (``retries``, ``retry_delay`` ...).
    """

    template_fields: Sequence[str] = (
        "source_path",
        "meter",
        "account",
        "file_name",
        "uid_namespace",
        "m3ter_conn_id",
    )
    operator_extra_links = (M3terConsoleLink(),)
    ui_color = "#d8ecf3"
    #: how the operator waits between job checks when not deferred (a test may replace it)
    sleep = staticmethod(time.sleep)

    def __init__(
        self,
        *,
        source_path: str,
        source_format: str | None = None,
        mapping: Mapping[str, str] | None = None,
        meter: str | None = None,
        account: str | None = None,
        file_name: str | None = None,
        uid_namespace: str | None = None,
        on_invalid: str = "fail",
        wait_for_completion: bool = True,
        fail_on_failed_rows: bool = True,
        poll_interval: float = 30.0,
        wait_timeout: float = 6 * 3600.0,
        deferrable: bool | None = None,
        upload_attempts: int = 3,
        put_timeout: float = 600.0,
        m3ter_conn_id: str = "m3ter_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_invalid not in ("fail", "skip"):
            raise ValueError(f"{self.task_id}: on_invalid must be 'fail' or 'skip', got {on_invalid!r}")
        if poll_interval <= 0 or wait_timeout <= 0 or upload_attempts < 1:
            raise ValueError(
                f"{self.task_id}: poll_interval, wait_timeout and upload_attempts must be positive"
            )
        self.source_path = source_path
        self.source_format = source_format
        self.mapping = dict(mapping) if mapping is not None else None
        self.meter = meter
        self.account = account
        self.file_name = file_name
        self.uid_namespace = uid_namespace
        self.on_invalid = on_invalid
        self.wait_for_completion = wait_for_completion
        self.fail_on_failed_rows = fail_on_failed_rows
        self.poll_interval = float(poll_interval)
        self.wait_timeout = float(wait_timeout)
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.upload_attempts = upload_attempts
        self.put_timeout = float(put_timeout)
        self.m3ter_conn_id = m3ter_conn_id

    # -- preparing -----------------------------------------------------------------------------

    def _hook(self) -> M3terHook:
        from airflow_provider_m3ter.hooks.m3ter import M3terHook

        return M3terHook(m3ter_conn_id=self.m3ter_conn_id)

    def _upload_source(self, context: Context) -> MeasurementUpload:
        namespace = self.uid_namespace or f"{self.dag_id}.{self.task_id}"
        map_index = getattr(context.get("ti"), "map_index", -1)
        if not self.uid_namespace and isinstance(map_index, int) and map_index >= 0:
            namespace += f".{map_index}"
        try:
            source = FileSource(
                self.source_path,
                self.source_format,
                RowMapping(self.mapping, meter=self.meter, account=self.account),
            )
        except SourceError as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from None
        return MeasurementUpload(
            source.rows,
            source=str(self.source_path),
            uid_namespace=namespace,
            on_invalid="skip" if self.on_invalid == "skip" else "fail",
        )

    def _job_file_name(self) -> str:
        name = self.file_name or str(self.source_path).replace("\\", "/").rsplit("/", 1)[-1]
        return (name or "measurements.json")[:100]

    # -- execute -------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        """Upload (or find the upload a previous try made), then wait for the job.

        One client serves the whole try and is closed when it ends.
        """
        hook = self._hook()
        try:
            if self.execution_timeout is None:
                return self._execute(hook, context)
            seconds = self.execution_timeout.total_seconds()
            # every call of the try (URL, PUT, job checks) ends by the task's own limit
            with time_limit(seconds, f"the task's {seconds:g} s execution_timeout"):
                return self._execute(hook, context)
        finally:
            hook.close()

    def _execute(self, hook: M3terHook, context: Context) -> Any:
        client = hook.get_client()
        store = context.get("task_state_store")  # type: ignore[misc]
        if store is None:
            self.log.info("No task_state_store here (Airflow < 3.3): a retry after a crash uploads again")
        with hook.translate_errors():
            summary = self._resume(client, store)
            if summary is None:
                summary = self._upload(client, store, context)
            self._link(client, summary["job_id"], context)
            if summary.get("done"):
                return self._finish(CheckResult.from_dict(summary.pop("done")), summary)
            if not self.wait_for_completion:
                return summary
            # the wait's limit is fixed before its first check, and bounds every check's retries
            limit = WaitLimit.start(
                self.wait_timeout,
                f"the {self.wait_timeout:g} s wait_timeout",
                execution_timeout=self.execution_timeout,
            )
            if self.deferrable:
                job_id = summary["job_id"]
                first = check_then_defer(
                    self,
                    limit,
                    lambda: check_job(client, FILE_UPLOAD_JOB, job_id),
                    lambda result: result.done,
                    lambda deadline: M3terFileUploadJobTrigger(
                        job_id=job_id,
                        m3ter_conn_id=self.m3ter_conn_id,
                        deadline=deadline,
                        poll_interval=self.poll_interval,
                        # the event brings the summary back: every runner resumes with the same XCom
                        carry={"summary": summary},
                    ),
                    lambda: self._timed_out(job_id, limit.what),
                    kwargs={"summary": summary},
                )
                return self._finish(first, summary)
            return self._finish(self._wait(client, summary["job_id"], limit), summary)

    def _timed_out(self, job_id: Any, what: str, detail: str = "") -> AirflowException:
        """The wait's own timeout failure (a retry waits on the same job)."""
        extra = f" ({detail})" if detail else ""
        return AirflowException(
            f"file-upload job {job_id} did not finish within {what}{extra}; a retry waits on the same job"
        )

    def _resume(self, client: Any, store: Any) -> dict[str, Any] | None:
        """The summary of a previous try's upload to wait on, or None to upload afresh."""
        record = store.get(UPLOAD_STATE_KEY) if store is not None else None
        if not isinstance(record, dict) or not record.get("job_id"):
            return None
        job_id = str(record["job_id"])
        if record.get("source") != str(self.source_path):
            self.log.info(
                "A previous try uploaded %s, not %s: uploading afresh", record.get("source"), self.source_path
            )
            return None
        try:
            result = check_job(client, FILE_UPLOAD_JOB, job_id)
        except M3terError as error:
            if error.retryable:
                raise
            self.log.warning(
                "The job of a previous try (%s) cannot be read (%s): uploading afresh", job_id, error
            )
            return None
        status = result.detail.get("status")
        summary = {**record.get("summary", {}), "job_id": job_id, "resumed": True}
        if record.get("phase") != "uploaded" and status == "notUploaded":
            self.log.info(
                "File-upload job %s never received its file (the PUT was interrupted): uploading afresh",
                job_id,
            )
            return None
        verdict = evaluate_job(FILE_UPLOAD_JOB, result.detail, fail_on_failed_rows=self.fail_on_failed_rows)
        if verdict.state == "failed":
            self.log.warning(
                "File-upload job %s of a previous try ended badly (%s): uploading afresh",
                job_id,
                verdict.message,
            )
            return None
        self.log.info(
            "Reconnecting to file-upload job %s from a previous try (status %s); not uploading again",
            job_id,
            status,
        )
        if verdict.done:
            summary["done"] = verdict.to_dict()
        return summary

    def _upload(self, client: Any, store: Any, context: Context) -> dict[str, Any]:
        """Validate and measure the file, then URL + PUT (retried with a fresh URL on transient errors)."""
        upload = self._upload_source(context)
        try:
            scan = upload.scan()
        except (MeasurementFileError, SourceError) as exc:
            raise AirflowFailException(f"{self.task_id}: {exc}") from None
        if scan.rejected:
            self.log.warning("%d invalid row(s) left out; first: %s", scan.rejected, list(scan.examples[:3]))
        file_name = self._job_file_name()
        summary = _summary(file_name, scan)
        self.log.info(
            "Uploading %d measurements (%d bytes) from %s",
            scan.measurements,
            scan.content_length,
            self.source_path,
        )

        def attempt() -> str:
            # the URL expires a minute after it is issued: ask for it only now
            ticket = request_upload_url(client, file_name=file_name, content_length=scan.content_length)
            from airflow_provider_m3ter.hooks.m3ter import register_secret

            # every part that grants access, not only the whole URL (urllib3 logs the path alone)
            for piece in ticket.secret_pieces():
                register_secret(piece)
            record = {
                "job_id": ticket.job_id,
                "phase": "url_issued",
                "source": str(self.source_path),
                "summary": summary,
            }
            if store is not None:
                store.set(UPLOAD_STATE_KEY, record)
            try:
                put_upload(ticket, upload.body(scan.content_length), timeout=self.put_timeout)
            except (MeasurementFileError, SourceError) as exc:  # the file changed or vanished meanwhile
                raise AirflowFailException(f"{self.task_id}: {exc}") from None
            if store is not None:
                store.set(UPLOAD_STATE_KEY, {**record, "phase": "uploaded"})
            self.log.info("Uploaded %s as file-upload job %s", file_name, ticket.job_id)
            self.after_upload(ticket.job_id, context)
            return ticket.job_id

        retrying = Retrying(
            retry=retry_if_exception(lambda error: getattr(error, "retryable", False)),
            stop=stop_after_attempt(self.upload_attempts),
            wait=wait_exponential(multiplier=1, max=30),
            sleep=self.sleep,
            reraise=True,
        )
        job_id = retrying(attempt)
        return {**summary, "job_id": job_id, "resumed": False}

    def after_upload(self, job_id: str, context: Context) -> None:
        """Called once the file is uploaded and the job id recorded; a no-op extension point.

        :param job_id: the file-upload job.
        :param context: the task context.
        """

    def _wait(self, client: Any, job_id: str, limit: WaitLimit) -> CheckResult:
        """Poll the job in this worker until it finishes or the limit passes (each check within it)."""
        while True:
            try:
                with limit.bounding():
                    result = check_job(client, FILE_UPLOAD_JOB, job_id)
            except M3terError as error:
                if not error.retryable:
                    raise
                self.log.warning("m3ter stayed unavailable for this check (%s); checking again", error)
            else:
                if result.done:
                    return result
                self.log.info("%s", result.message)
            remaining = limit.left()
            if remaining <= 0:
                raise self._timed_out(job_id, limit.what)
            self.sleep(min(self.poll_interval, remaining))

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, summary: dict[str, Any] | None = None
    ) -> Any:
        """Resume after the trigger fired: the same outcome as waiting in the worker.

        :param context: the task context.
        :param event: the trigger's event payload.
        :param summary: the upload summary passed through the deferral (a real triggerer passes the
            deferral's kwargs back; ``airflow dags test`` does not).
        """
        # the event carries the summary for every runner; the kwargs and the store's record are for
        # a trigger serialized before events carried it
        carried = (event or {}).get("carry") or {}
        summary = dict(carried.get("summary") or summary or self._recorded_summary(context))
        if event is None:
            # resumed without the trigger's answer (the deferral was interrupted): look again
            self.log.warning(
                "Resumed without a trigger event; checking file-upload job %s again", summary.get("job_id")
            )
            return self.execute(context)
        status = event.get("status")
        if status == "done":
            return self._finish(CheckResult.from_dict(event["result"]), summary)
        if status == "timeout":
            raise self._timed_out(
                summary.get("job_id"), f"the {self.wait_timeout:g} s wait_timeout", str(event.get("message"))
            )
        if status == "error":
            error: M3terError = error_from_dict(event["error"])
            raise to_airflow_failure(error) from error
        raise AirflowException(f"unexpected trigger event: {event!r}")

    def _recorded_summary(self, context: Context) -> dict[str, Any]:
        """The upload summary kept in the task state store, or an empty dict."""
        store = context.get("task_state_store")  # type: ignore[misc]
        record: Any = store.get(UPLOAD_STATE_KEY) if store is not None else None
        if not isinstance(record, dict) or not record.get("job_id"):
            return {}
        return {**(record.get("summary") or {}), "job_id": record["job_id"]}

    def _finish(self, result: CheckResult, summary: dict[str, Any]) -> dict[str, Any]:
        """Apply the failed-rows rule to the finished job and return the summary."""
        verdict = evaluate_job(FILE_UPLOAD_JOB, result.detail, fail_on_failed_rows=self.fail_on_failed_rows)
        out = {**summary, **{k: v for k, v in verdict.detail.items() if k not in ("kind", "id")}}
        if verdict.state == "failed":
            raise M3terCheckFailure(verdict)
        self.log.info("%s", verdict.message)
        return out

    def _link(self, client: Any, job_id: str, context: Context) -> None:
        link_task_to_console(context, client.settings, FILE_UPLOAD_JOB.name, job_id, log=self.log)


def _summary(file_name: str, scan: FileScan) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "measurements": scan.measurements,
        "rejected": scan.rejected,
        "content_length": scan.content_length,
    }
