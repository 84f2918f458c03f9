"""Jobs with a status to wait for (file upload, bill job, data export) and how they progress."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_m3ter.emulator.errors import bad_request

# Each kind: the states a job passes through, and its two possible final states.
FLOWS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "fileupload": (("notUploaded", "running"), "succeeded", "failed"),
    "billjob": (("PENDING", "RUNNING"), "COMPLETE", "CANCELLED"),
    "dataexport": (("PENDING", "RUNNING"), "SUCCEEDED", "FAILED"),
}
OUTCOME_WORDS = {
    "succeeded": "succeeded", "success": "succeeded", "complete": "succeeded", "ok": "succeeded",
    "failed": "failed", "failure": "failed", "fail": "failed", "cancelled": "failed",
}  # fmt: skip


def parse_outcome(kind: str, value: str) -> str:
    """Normalise an outcome (``succeeded``/``failed`` or a kind's final status) to succeeded|failed.

    :param kind: the job kind.
    :param value: what the caller wrote, case-insensitive.
    """
    _, good, bad = FLOWS[kind]
    lowered = str(value).lower()
    if lowered == good.lower():
        return "succeeded"
    if lowered == bad.lower():
        return "failed"
    if lowered in OUTCOME_WORDS:
        return OUTCOME_WORDS[lowered]
    raise bad_request(f"outcome: {value!r} is not one of succeeded, failed, {good}, {bad}")


@dataclass
class Job:
    """One job of any kind.

    :param kind: ``fileupload``, ``billjob`` or ``dataexport``.
    :param id: the job id.
    :param record: the fields returned by the API besides ``status`` (kept up to date).
    :param outcome: ``succeeded`` or ``failed``: how the job ends.
    :param since: epoch seconds when the current state was entered.
    :param status: the current state.
    :param payload: the uploaded file (file uploads only).
    :param errors: row problems found while processing an uploaded file.
    """

    kind: str
    id: str
    record: dict[str, Any]
    outcome: str
    since: float
    status: str = ""
    payload: bytes | None = None
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.status:
            self.status = FLOWS[self.kind][0][0]

    @property
    def terminal(self) -> bool:
        """Whether the job has reached a final state."""
        _, good, bad = FLOWS[self.kind]
        return self.status in (good, bad)

    @property
    def waiting_for_upload(self) -> bool:
        """A file-upload job whose file has not arrived (time does not move it on)."""
        return self.kind == "fileupload" and self.status == "notUploaded"

    def next_status(self) -> str:
        """The state a single step leads to."""
        states, good, bad = FLOWS[self.kind]
        index = states.index(self.status)
        if index + 1 < len(states):
            return states[index + 1]
        return good if self.outcome == "succeeded" else bad

    def all_statuses(self) -> tuple[str, ...]:
        """Every state this kind of job can be in."""
        states, good, bad = FLOWS[self.kind]
        return (*states, good, bad)

    def view(self) -> dict[str, Any]:
        """The API representation (``record`` plus ``status``)."""
        return {**self.record, "status": self.status}

    def dump(self) -> dict[str, Any]:
        """A JSON-friendly copy for snapshots."""
        return {
            "kind": self.kind,
            "id": self.id,
            "record": self.record,
            "outcome": self.outcome,
            "since": self.since,
            "status": self.status,
            "payload": None if self.payload is None else base64.b64encode(self.payload).decode(),
            "errors": self.errors,
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> Job:
        """Rebuild a job saved by :meth:`dump`.

        :param data: the saved fields.
        """
        payload = data.get("payload")
        return cls(
            kind=data["kind"],
            id=data["id"],
            record=data["record"],
            outcome=data["outcome"],
            since=data["since"],
            status=data["status"],
            payload=None if payload is None else base64.b64decode(payload),
            errors=list(data.get("errors", [])),
        )
