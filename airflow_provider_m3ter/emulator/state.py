"""The emulator's whole state (one organization), shared by both listeners, kept in memory."""

from __future__ import annotations

import json
import secrets
import threading
import time
from array import array
from collections import deque
from typing import Any

from airflow_provider_m3ter.emulator.faults import FaultPlan
from airflow_provider_m3ter.emulator.ingest import (
    EVENT_NAME,
    failure_event_detail,
    measurement_problem,
    meter_failures,
    meter_field_codes,
)
from airflow_provider_m3ter.emulator.jobs import Job
from airflow_provider_m3ter.emulator.limits import RateLimits
from airflow_provider_m3ter.emulator.options import EmulatorOptions
from airflow_provider_m3ter.emulator.schema import loads_strict
from airflow_provider_m3ter.emulator.stats import Stats
from airflow_provider_m3ter.emulator.store import EntityStore, new_id, now_iso
from airflow_provider_m3ter.emulator.usage import UsageBucket

ENTITY_KINDS = {
    "meters": "Meter",
    "accounts": "Account",
    "aggregations": "Aggregation",
    "products": "Product",
    "plans": "Plan",
    "events": "Event",
}
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class EmulatorState:
    """Entities, measurements, jobs, events, tokens, faults, limits and counters of one org.

    Handlers run on one event loop; the lock guards the few paths that may run elsewhere
    (snapshots written at shutdown).

    :param options: the start-up options (kept across resets).
    """

    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        self.lock = threading.RLock()
        self.tokens: dict[str, tuple[str, float]] = {}
        self.reset()

    # ---- lifecycle -------------------------------------------------------------------------
    def reset(self, keep_tokens: bool = False) -> None:
        """Forget everything but the start-up options (faults, limits, job mode go back to them).

        :param keep_tokens: keep issued tokens valid.
        """
        with self.lock:
            self.stores = {name: EntityStore(kind) for name, kind in ENTITY_KINDS.items()}
            self.account_ids_by_code: dict[str, str] = {}
            self.chunks: list[tuple[bytes, array[int] | None, int]] = []
            self.measurements_stored = 0
            self.uids: set[str] = set()
            # Stored positions (arrival order of non-duplicates) validated so far, and those that failed:
            # the usage query sees only validated measurements that passed.
            self.validated_stored = 0
            self.failed_positions: set[int] = set()
            self.usage_bucket = UsageBucket()
            self.pending: deque[tuple[float, dict[str, Any], bool]] = deque()
            self.jobs: dict[str, Job] = {}
            self.uploads: dict[str, dict[str, Any]] = {}
            self.job_outcomes: dict[str, str] = {}
            self.job_mode = self.options.job_mode
            self.job_step_seconds = self.options.job_step_seconds
            self.faults = FaultPlan.from_body(self.options.faults_body())
            self.limits = RateLimits.from_body(self.options.limits_body())
            self.stats = Stats()
            if not keep_tokens:
                self.tokens = {}

    # ---- tokens ----------------------------------------------------------------------------
    def issue_token(self) -> str:
        """A new random bearer token for the organization."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = (self.options.org_id, time.time() + self.options.token_ttl)
        self.stats.tokens_issued += 1
        return token

    def token_org(self, token: str) -> str | None:
        """The org a valid token belongs to; None when unknown or expired.

        :param token: the bearer token.
        """
        found = self.tokens.get(token)
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def expire_tokens(self) -> int:
        """Make every issued token expired; returns how many there were."""
        now = time.time()
        for token, (org, _) in list(self.tokens.items()):
            self.tokens[token] = (org, now - 1)
        return len(self.tokens)

    # ---- entities --------------------------------------------------------------------------
    def stamp_new(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new entity from a validated body: id, version 1 and audit fields added.

        :param body: the accepted request fields.
        """
        moment = now_iso()
        who = self.options.access_key_id
        return {
            **body,
            "id": new_id(),
            "version": 1,
            "dtCreated": moment,
            "dtLastModified": moment,
            "createdBy": who,
            "lastModifiedBy": who,
        }

    def stamp_update(self, old: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """The replacement of ``old`` by ``body`` (PUT semantics), with the version incremented.

        :param old: the stored entity.
        :param body: the accepted request fields (the whole new entity).
        """
        return {
            **body,
            "id": old["id"],
            "version": old["version"] + 1,
            "dtCreated": old["dtCreated"],
            "dtLastModified": now_iso(),
            "createdBy": old["createdBy"],
            "lastModifiedBy": self.options.access_key_id,
        }

    def add_account(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a new account and index its code.

        :param body: the accepted account fields.
        """
        account = self.stores["accounts"].add(self.stamp_new(body))
        self.account_ids_by_code[account["code"]] = account["id"]
        return account

    # ---- ingest ----------------------------------------------------------------------------
    def ingest(self, measurements: list[dict[str, Any]], raw: bytes | None = None) -> None:
        """Store checked measurements once per uid and queue them for validation.

        The request body is kept as received (with the positions of the non-duplicates), which is
        cheaper in time and memory than re-encoding each measurement.

        :param measurements: measurements that passed the schema check.
        :param raw: the body ``{"measurements": [...]}`` they were decoded from, if any.
        """
        due = time.monotonic() + self.options.validation_delay
        uids = self.uids
        pending = self.pending
        accounts = self.account_ids_by_code
        kept: list[int] = []
        for index, m in enumerate(measurements):
            uid = m.get("uid")
            if uid is not None:
                if uid in uids:
                    pending.append((due, m, True))
                    continue
                uids.add(uid)
            kept.append(index)
            pending.append((due, m, False))
            if m["account"] not in accounts:
                # m3ter silently creates a skeleton account for an unknown code.
                self.add_account({"code": m["account"], "name": m["account"]})
        if kept:
            if raw is None:
                raw = _dumps({"measurements": measurements}).encode()
            positions = None if len(kept) == len(measurements) else array("I", kept)
            self.chunks.append((raw, positions, len(kept)))
        self.measurements_stored += len(kept)
        self.stats.measurements_received += len(measurements)
        self.stats.duplicates_received += len(measurements) - len(kept)

    def stored_measurements(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored measurements in arrival order, exactly as they were sent.

        :param offset: how many to skip.
        :param limit: the most to return (None: all).
        """
        out: list[dict[str, Any]] = []
        skip = offset
        for raw, positions, count in self.chunks:
            if limit is not None and len(out) >= limit:
                break
            if skip >= count:
                skip -= count
                continue
            rows = json.loads(raw)["measurements"]
            chosen = rows if positions is None else [rows[i] for i in positions]
            out += chosen[skip:]
            skip = 0
        return out if limit is None else out[:limit]

    def visible_measurements(self) -> list[tuple[int, dict[str, Any]]]:
        """``(arrival position, measurement)`` of every stored measurement the usage query sees:
        validated, and not failed."""
        failed = self.failed_positions
        rows = self.stored_measurements(0, self.validated_stored)
        return [(index, m) for index, m in enumerate(rows) if index not in failed]

    def tamper(self, match: dict[str, Any], drop: bool, changes: dict[str, Any]) -> int:
        """Drop or alter stored measurements (admin; simulates m3ter losing or changing data).

        :param match: top-level fields a measurement must equal (for example ``{"uid": "u-1"}``).
        :param drop: remove the matching measurements.
        :param changes: top-level fields to replace in the matching ones (``{"measure": {...}}``).
        :return: how many stored measurements matched.
        """
        with self.lock:
            self.validate_pending(force=True)
            rows = self.stored_measurements()
            kept: list[dict[str, Any]] = []
            failed: set[int] = set()
            matched = 0
            for index, m in enumerate(rows):
                if all(m.get(key) == value for key, value in match.items()):
                    matched += 1
                    if drop:
                        continue
                    m = {**m, **changes}
                if index in self.failed_positions:
                    failed.add(len(kept))
                kept.append(m)
            self.chunks = [(_dumps({"measurements": kept}).encode(), None, len(kept))] if kept else []
            self.measurements_stored = self.validated_stored = len(kept)
            self.failed_positions = failed
            return matched

    def validate_pending(self, force: bool = False) -> int:
        """Check queued measurements against their meters; returns how many were checked.

        :param force: check everything queued, even if its validation delay has not passed.
        """
        now = time.monotonic()
        pending = self.pending
        if not pending or (not force and pending[0][0] > now):
            return 0
        meters = {
            meter["code"]: (meter, meter_field_codes(meter)) for meter in self.stores["meters"].items.values()
        }
        events = self.stores["events"]
        checked = 0
        while pending and (force or pending[0][0] <= now):
            _, m, duplicate = pending.popleft()
            checked += 1
            meter, codes = meters.get(m["meter"], (None, {}))
            failures = meter_failures(m, meter, codes, duplicate)
            if not duplicate:
                if failures:
                    self.failed_positions.add(self.validated_stored)
                self.validated_stored += 1
            for failure_type, reason in failures:
                detail = failure_event_detail(
                    m, failure_type, reason, meter, self.account_ids_by_code.get(m["account"])
                )
                moment = now_iso()
                events.add(
                    {
                        "id": new_id(),
                        "eventName": EVENT_NAME,
                        "eventTime": moment,
                        "m3terEvent": detail,
                        # Raised events count as actioned: the spec requires a date-time here.
                        "dtActioned": moment,
                    }
                )
        return checked

    # ---- jobs ------------------------------------------------------------------------------
    def create_job(self, kind: str, record: dict[str, Any]) -> Job:
        """Register a new job of ``kind`` whose API fields are ``record`` (``id`` included).

        :param kind: ``fileupload``, ``billjob`` or ``dataexport``.
        :param record: the fields the job's GET returns (besides ``status``).
        """
        job = Job(
            kind=kind,
            id=record["id"],
            record=record,
            outcome=self.job_outcomes.get(kind, "succeeded"),
            since=time.time(),
        )
        self.jobs[job.id] = job
        return job

    def step_job(self, job: Job, to_status: str | None = None, outcome: str | None = None) -> Job:
        """Move a job one state on, or on until ``to_status``.

        :param job: the job.
        :param to_status: a state to move to directly (its final states set the outcome).
        :param outcome: ``succeeded`` or ``failed``, how the job will end.
        """
        if outcome is not None:
            job.outcome = outcome
        if job.terminal:
            return job
        if to_status is None:
            self._enter(job, job.next_status())
            return job
        states = job.all_statuses()
        good, bad = states[-2], states[-1]
        if to_status in (good, bad):
            job.outcome = "succeeded" if to_status == good else "failed"
        while not job.terminal and job.status != to_status:
            self._enter(job, job.next_status())
        return job

    def _enter(self, job: Job, status: str) -> None:
        job.status = status
        job.since = time.time()
        if job.terminal:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        if job.kind == "fileupload":
            self._process_upload(job)
        elif job.kind == "billjob":
            job.record.update(pending=0, dtLastModified=now_iso())
        elif job.kind == "dataexport" and "startedAt" not in job.record:
            job.record["startedAt"] = now_iso()

    def _process_upload(self, job: Job) -> None:
        rows: Any = None
        try:
            rows = loads_strict(job.payload or b"")
        except ValueError:
            job.errors.append("the file is not valid JSON")
        if not isinstance(rows, list):
            if rows is not None:
                job.errors.append("the file must be a JSON array of measurements")
            job.status = "failed"
            job.record.update(totalRows=0, processedRows=0, failedRows=0)
            return
        good = []
        for index, row in enumerate(rows):
            problem = measurement_problem(row)
            if problem is None:
                good.append(row)
            else:
                job.errors.append(f"row {index}: {problem[0] or 'measurement'}: {problem[1]}")
        job.record.update(totalRows=len(rows), processedRows=len(rows), failedRows=len(rows) - len(good))
        if job.status == "succeeded":
            self.ingest(good)

    def tick(self) -> None:
        """Advance time-driven jobs and run due validations (called a few times per second)."""
        with self.lock:
            if self.job_mode == "time":
                now = time.time()
                step = max(self.job_step_seconds, 0.0)
                for job in list(self.jobs.values()):
                    while not job.terminal and not job.waiting_for_upload and now - job.since >= step:
                        entered = job.since + step
                        self._enter(job, job.next_status())
                        job.since = entered
            self.validate_pending()

    def running_bill_jobs(self) -> int:
        """How many bill jobs are not yet in a final state."""
        return sum(1 for job in self.jobs.values() if job.kind == "billjob" and not job.terminal)

    # ---- snapshots -------------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """Everything worth keeping, as JSON-friendly data (pending validations are run first)."""
        with self.lock:
            self.validate_pending(force=True)
            return {
                "format": 1,
                "org_id": self.options.org_id,
                "entities": {name: store.dump() for name, store in self.stores.items()},
                "measurements": [_dumps(m) for m in self.stored_measurements()],
                "uids": sorted(self.uids),
                "failed_positions": sorted(self.failed_positions),
                "jobs": [job.dump() for job in self.jobs.values()],
                "uploads": self.uploads,
                "job_outcomes": self.job_outcomes,
                "tokens": {token: list(value) for token, value in self.tokens.items()},
                "stats": {
                    "measurements_received": self.stats.measurements_received,
                    "duplicates_received": self.stats.duplicates_received,
                    "ingest_requests": self.stats.ingest_requests,
                    "tokens_issued": self.stats.tokens_issued,
                },
            }

    def load(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`dump` saved (faults, limits and request counts start fresh).

        :param data: the saved state.
        """
        with self.lock:
            self.reset()
            for name, entities in data.get("entities", {}).items():
                if name in self.stores:
                    self.stores[name].load(entities)
            self.account_ids_by_code = {a["code"]: a["id"] for a in self.stores["accounts"].items.values()}
            saved = data.get("measurements", [])
            if saved:
                self.chunks = [(('{"measurements":[' + ",".join(saved) + "]}").encode(), None, len(saved))]
            self.measurements_stored = self.validated_stored = len(saved)
            self.failed_positions = set(data.get("failed_positions", []))
            self.uids = set(data.get("uids", []))
            self.jobs = {job["id"]: Job.load(job) for job in data.get("jobs", [])}
            self.uploads = dict(data.get("uploads", {}))
            self.job_outcomes = dict(data.get("job_outcomes", {}))
            self.tokens = {
                token: (value[0], float(value[1])) for token, value in data.get("tokens", {}).items()
            }
            for key, value in data.get("stats", {}).items():
                setattr(self.stats, key, int(value))
