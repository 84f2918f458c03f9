"""File upload: a measurements file streamed to m3ter as one JSON array.

Measurements are read twice (validate and measure, then stream) so the body has a known length
without being held in memory (:class:`MeasurementUpload`, :class:`JsonArrayBody`); then m3ter is
asked for an upload URL (:func:`request_upload_url`) and the body is PUT to it (:func:`put_upload`).
The file-upload job this creates is waited for with
:data:`~airflow_provider_m3ter.client.jobs.FILE_UPLOAD_JOB`. Plain Python (no Airflow import).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_m3ter.client.encoding import UidDeriver, encode, occurrence_uid
from airflow_provider_m3ter.client.errors import M3terFinalError, M3terTransientError, error_for_status
from airflow_provider_m3ter.client.identical import UID_AT
from airflow_provider_m3ter.client.measurements import FieldProblem, RowError, validate_measurement
from airflow_provider_m3ter.client.redaction import redact, signed_url_pieces
from airflow_provider_m3ter.client.redaction import register as register_secret

__all__ = [
    "FILE_UPLOAD_MAX_BYTES",
    "UPLOAD_URL_LIFETIME",
    "FileScan",
    "JsonArrayBody",
    "MeasurementFileError",
    "MeasurementUpload",
    "UploadTicket",
    "put_upload",
    "request_upload_url",
]

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
        # Identical rows are distinct measurements (as in ingest): the k-th repeat of a content
        # gets its occurrence uid. Keyed by the uid digest's first 8 bytes (a false match only
        # gives a row another uid of its own, never drops it); about 100 bytes per distinct row.
        seen: collections.Counter[int] = collections.Counter()
        for row, line, item in self.rows():
            if isinstance(item, RowError):
                problems = [FieldProblem(item.field, item.reason)]
            elif self.validate or not isinstance(item, dict):
                # file uploads keep the best-effort look-alike checks for non-ASCII codes
                problems = validate_measurement(item, unicode_codes=True)
            else:
                problems = []
            if problems:
                if rejected is not None:
                    rejected.extend(RowError(row, p.field, p.reason, self.source, line) for p in problems[:3])
                continue
            try:
                if deriver is None or "uid" in item:
                    yield encode(item) if deriver is None else deriver.encode(item)
                    continue
                record, digest = deriver.encode_derived(item)
                head = int.from_bytes(digest[:8], "big")
                repeat = seen[head]
                seen[head] = repeat + 1
                if repeat:
                    uid = occurrence_uid(digest[:16], repeat).encode("ascii")
                    record = record[:UID_AT] + uid + record[UID_AT + 40 :]
                yield record
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

    def secret_pieces(self) -> list[str]:
        """Every part of the URL and headers that grants access (register each with a log masker)."""
        return signed_url_pieces(self.url, self.headers)


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
    ticket = UploadTicket(str(answer["jobId"]), str(answer["url"]), headers, time.monotonic())
    # before the URL can reach urllib3's request line or an error message
    register_secret(*ticket.secret_pieces())
    return ticket


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
    :param timeout: seconds for connect and each read. Inside a
        :func:`~airflow_provider_m3ter.client.deadline.time_limit` block the whole PUT (a reply
        trickled byte by byte included) also ends when that limit does, as a transient error.
    """
    import requests

    from airflow_provider_m3ter.client.deadline import WATCHDOG, WatchedAdapter, time_left

    where = f"<upload URL of job {ticket.job_id}>"
    headers = dict(ticket.headers)
    if not any(key.lower() == "content-type" for key in headers):
        headers["Content-Type"] = "application/json"
    own_session = session is None
    http = requests.Session() if own_session else session
    if own_session:
        watched = WatchedAdapter(max_retries=0)
        http.mount("https://", watched)
        http.mount("http://", watched)
    enclosing = time_left()
    left = enclosing[0] if enclosing is not None else None
    failure: str | None = None
    try:
        if left is not None and left <= 0:
            raise requests.exceptions.Timeout("no time left")
        limit = float("inf") if left is None else left
        with WATCHDOG.watch(limit) as attempt:
            try:
                response = http.put(ticket.url, data=body, headers=headers, timeout=min(timeout, limit))
            except requests.RequestException:
                if attempt.fired:
                    raise requests.exceptions.Timeout(
                        f"{enclosing[1] if enclosing else 'the limit'} passed"
                    ) from None
                raise
            if attempt.fired:
                # cut off mid-answer, what arrived may parse as a whole reply: never a success
                raise requests.exceptions.Timeout(f"{enclosing[1] if enclosing else 'the limit'} passed")
    except requests.RequestException as exc:
        # its text holds the signed URL: keep only the class, and raise outside this block so the
        # new error does not carry it along as __context__ either
        failure = type(exc).__name__
    finally:
        if own_session:
            http.close()
    if failure is not None:
        raise M3terTransientError(None, "PUT", where, f"upload failed ({failure})")
    if response.status_code >= 400:
        # storage services echo signature parts in their error bodies (S3's SignatureProvided ...)
        text = redact((response.text or "").strip().replace(ticket.url, where))[:300]
        raise error_for_status(
            response.status_code, "PUT", where, text or response.reason or "upload refused"
        )
