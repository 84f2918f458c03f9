"""IngestRun: validated, de-duplicable, paced and checkpointed measurement submission.

One run goes through the source twice, cheaply:

1. **Prepare.** Stream the rows once: validate, derive uids, serialize each record once and cut
   deterministic batches (<= 1,000 records, body < 512,000 bytes) into a spill file on local disk,
   noting each row in a :class:`~airflow_provider_m3ter.client.identical.RowLedger`. Then resolve
   the ledger: identical rows get occurrence uids (or are dropped with ``deduplicate=True``), a
   repeated explicit uid is dropped (same content) or a row error (different content). Memory stays
   bounded; the whole source is checked before anything is sent, so ``on_invalid="fail"`` sends
   nothing when any row is bad.
2. **Send.** Post the spilled batches through the client (which paces and retries), with up to
   ``max_in_flight`` requests at once. After every acknowledged batch the set of acknowledged
   batches is saved to a checkpoint store; a retry whose source yields the same batches (same
   fingerprint) sends only the others. A 413 (or a 403 on a multi-record batch) splits the batch in
   halves. A finished run leaves a ``complete`` checkpoint, so a later try sends nothing.

Plain Python. Checkpoints are in :mod:`~airflow_provider_m3ter.client.checkpoint` (the operator adapts
Airflow's ``task_state_store`` to a ``CheckpointStore``); the summary and progress lines in
:mod:`~airflow_provider_m3ter.client.ingest_progress`; rejected rows in
:mod:`~airflow_provider_m3ter.client.dead_letters`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, Literal

from airflow_provider_m3ter.client.batches import (
    BODY_PREFIX,
    BODY_SUFFIX,
    MAX_BATCH_BYTES,
    MAX_BATCH_COUNT,
    BatchBuilder,
)
from airflow_provider_m3ter.client.checkpoint import (
    CHECKPOINT_VERSION,
    AckedBatches,
    BatchFingerprint,
    CheckpointStore,
    checkpoint_state,
)
from airflow_provider_m3ter.client.dead_letters import dead_letter, open_dead_letters
from airflow_provider_m3ter.client.encoding import UidDeriver, encode
from airflow_provider_m3ter.client.errors import M3terFinalError, M3terPayloadTooLargeError
from airflow_provider_m3ter.client.identical import DERIVED_ENTRY, PARTITIONS, Conflict, Resolution, RowLedger
from airflow_provider_m3ter.client.identical import DROP as _DROP
from airflow_provider_m3ter.client.identical import UID_AT as _UID_AT
from airflow_provider_m3ter.client.ingest_progress import (
    IngestSummary,
    InvalidMeasurementsError,
    log_old_timestamps,
    log_progress,
)
from airflow_provider_m3ter.client.measurements import (
    DEDUP_WINDOW,
    RowColumns,
    RowError,
    all_certainly_valid,
    certainly_valid,
    cutoff_key,
    row_snapshot,
    timestamp_key,
    utc_key_to_iso,
    validate_measurement,
)
from airflow_provider_m3ter.client.run_totals import RunLedger, canonical_shape, shape_of

__all__ = ["IngestRun", "number_rows"]

log = logging.getLogger("airflow_provider_m3ter.ingest")

OnInvalid = Literal["fail", "skip"]
_RECORD_DECODER = json.JSONDecoder()
#: Rows taken from the source at a time: checked as one batch, then encoded one by one.
_CHUNK_ROWS = 1024
_ITEM, _TS, _UTC_KEY = itemgetter(2), itemgetter("ts"), itemgetter(slice(None, -1))
#: How often a 403 on a multi-record batch may halve it before the 403 counts as final.
MAX_403_SPLITS = 3


def _count(value: Any) -> int:
    """A non-negative count from a checkpoint field (0 for anything else)."""
    return value if type(value) is int and value > 0 else 0


def number_rows(items: Iterable[Any]) -> Iterator[tuple[int, None, Any]]:
    """Turn plain measurements into ``(row, line, item)`` rows for :meth:`IngestRun.run`.

    Items of a one-shot iterable (anything but a list or tuple: a generator may reuse or change a
    dict after yielding it) are copied as they are read (:func:`row_snapshot`), since the run holds
    1,024 rows before it checks and encodes them.
    """
    if isinstance(items, (list, tuple)):
        for row, item in enumerate(items, start=1):
            yield row, None, item
        return
    for row, item in enumerate(map(row_snapshot, items), start=1):
        yield row, None, item


@dataclass
class _Spill:
    """The prepared batches on disk: ``(offset, size, count)`` each, records separated by ``\\n``."""

    path: Path
    batches: list[tuple[int, int, int]] = field(default_factory=list)
    records: int = 0
    size: int = 0  # bytes written: where the next batch starts

    def append(self, out: IO[bytes], batch: list[bytes], fingerprint: BatchFingerprint) -> None:
        """Write one batch at the end of the spill (``out``) and note it and its fingerprint."""
        segment = b"\n".join(batch)
        out.write(segment)
        fingerprint.add(segment)
        self.batches.append((self.size, len(segment), len(batch)))
        self.records += len(batch)
        self.size += len(segment)


class IngestRun:
    """Submit measurements to m3ter: validate all, then send paced, checkpointed batches.

    :param client: an :class:`~airflow_provider_m3ter.client.M3terClient` (its ingest pacing and
        retry rules apply to every request).
    :param namespace: scopes derived uids (rows without ``uid``); keep it stable across reruns.
    :param on_invalid: ``"fail"`` sends nothing if any row is invalid; ``"skip"`` sends the valid
        rows and writes rejected ones to ``dead_letter_path``.
    :param dead_letter_path: JSON Lines file for rejected rows (``skip``); anything with ``open()``.
    :param max_in_flight: concurrent requests (threads); every acknowledgement is checkpointed.
    :param checkpoint: where to keep progress for resume; None disables resume.
    :param max_errors_reported: how many row errors the failure message lists.
    :param progress_interval: seconds between progress log lines.
    :param spill_dir: directory for the temporary spill file (default: the system temp dir).
    :param max_batch_count: records per request, at most 1,000.
    :param max_batch_bytes: request bodies stay strictly under this size, at most 512,000.
    :param rerun: this is a retry or rerun (old timestamps then warrant a de-duplication warning).
    :param clock: monotonic clock (seconds) for durations and progress.
    :param now: the current UTC time (for the 35-day de-duplication window).
    :param logger: a logger with ``info``/``warning`` (default: ``airflow_provider_m3ter.ingest``).
    :param deduplicate: identical rows without ``uid`` are sent once (the repeats are counted in
        ``identical`` and ``deduplicated``) instead of each being its own measurement.
    :param preflight: a :class:`~airflow_provider_m3ter.client.preflight.Preflight`: rows m3ter would
        reject later are row errors before anything is sent (None: no pre-flight).
    :param unicode_codes: accept ``meter``/``account`` codes beyond printable ASCII, under
        best-effort look-alike checks (default: ASCII only, which guarantees that no two codes look
        alike; see :func:`~airflow_provider_m3ter.client.measurements.validate_measurement`).
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str,
        on_invalid: OnInvalid = "fail",
        dead_letter_path: Any = None,
        max_in_flight: int = 1,
        checkpoint: CheckpointStore | None = None,
        max_errors_reported: int = 20,
        progress_interval: float = 5.0,
        spill_dir: str | None = None,
        max_batch_count: int = MAX_BATCH_COUNT,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        rerun: bool = False,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        logger: Any = None,
        deduplicate: bool = False,
        preflight: Any = None,
        unicode_codes: bool = False,
    ) -> None:
        if on_invalid not in ("fail", "skip"):
            raise ValueError(f"on_invalid must be 'fail' or 'skip', got {on_invalid!r}")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive integer, got {max_in_flight!r}")
        self.client = client
        self.namespace = namespace
        self.on_invalid = on_invalid
        self.dead_letter_path = dead_letter_path
        self.max_in_flight = max_in_flight
        self.checkpoint = checkpoint
        self.max_errors_reported = max_errors_reported
        self.progress_interval = progress_interval
        self.spill_dir = spill_dir
        self.builder_args = (max_batch_count, max_batch_bytes)
        BatchBuilder(*self.builder_args)  # validates the limits now rather than mid-run
        self.rerun = rerun
        self._clock = clock
        self._now = now
        self.log = logger or log
        self.deduplicate = bool(deduplicate)
        self.unicode_codes = bool(unicode_codes)
        self.errors: list[RowError] = []
        self.summary = IngestSummary()
        self._dead_letters: IO[str] | None = None
        self._earlier_other = 0  # measurements earlier tries acknowledged for other batch sequences
        self.preflight = preflight
        self.totals = RunLedger()

    # -- public ---------------------------------------------------------------------------------

    def run(self, rows: Iterable[tuple[int, int | None, Any]], source: str | None = None) -> IngestSummary:
        """Prepare and send every row; return the summary.

        :param rows: ``(row, line, measurement-or-RowError)`` in source order (see
            :func:`number_rows` for plain measurement lists). Rows are read 1,024 at a time before
            they are checked and encoded: a measurement must not change after it is yielded (the
            package's sources yield fresh objects; :func:`number_rows` copies those of a generator).
        :param source: a name for the source in messages and dead letters.
        :raises InvalidMeasurementsError: rows were invalid and ``on_invalid="fail"`` (nothing sent).
        :raises M3terError: a request failed for good; the checkpoint keeps what was acknowledged.
        """
        started = self._clock()
        self.errors, self.summary = [], IngestSummary()
        self._earlier_other = 0
        stats_before = self._client_stats()
        with tempfile.TemporaryDirectory(prefix="m3ter-ingest-", dir=self.spill_dir) as tmp:
            try:
                self.totals = RunLedger(self.totals.max_groups)
                ledger = RowLedger(Path(tmp), self.namespace, self.deduplicate)
                try:
                    spill = self._prepare(rows, Path(tmp) / "batches.spill", source, ledger)
                finally:
                    ledger.close()
                if self.preflight is not None and not (self.summary.invalid and self.on_invalid == "fail"):
                    spill, ledger = self._apply_preflight(spill, ledger, Path(tmp) / "checked", source)
                spill = self._resolve(spill, ledger, source)
                self.summary.totals = self.totals.totals()
            finally:
                if self._dead_letters is not None:
                    self._dead_letters.close()
                    self._dead_letters = None
            self._log_prepared(source, spill)
            if self.summary.invalid and self.on_invalid == "fail":
                raise InvalidMeasurementsError(self.errors, self.summary.invalid, source)
            acked = self._resume_point(spill)
            log_old_timestamps(self.log, self.summary, self.rerun)
            try:
                self._send(spill, acked)
            finally:
                stats_after = self._client_stats()
                self.summary.retries = stats_after.get("retries", 0) - stats_before.get("retries", 0)
                self.summary.throttled = stats_after.get("throttled", 0) - stats_before.get("throttled", 0)
                self.summary.duration_seconds = round(self._clock() - started, 3)
        # The checkpoint stays (now "complete"): a later try of this task finds it and sends nothing.
        self.log.info("m3ter ingest finished: %s", json.dumps(self.summary.as_dict()))
        return self.summary

    def run_measurements(self, measurements: Iterable[Any], source: str | None = None) -> IngestSummary:
        """:meth:`run` for plain measurement dicts (rows numbered from 1)."""
        return self.run(number_rows(measurements), source)

    # -- prepare --------------------------------------------------------------------------------

    def _prepare(
        self, rows: Iterable[tuple[int, int | None, Any]], path: Path, source: str | None, ledger: RowLedger
    ) -> _Spill:
        summary = self.summary
        builder = BatchBuilder(*self.builder_args)
        max_record = builder.max_record_bytes
        deriver = UidDeriver(self.namespace)
        encode_derived, encode_plain = deriver.encode_derived, encode
        encode_derived_many = deriver.encode_derived_many
        add_explicit = ledger.add_explicit
        ledger_writes, ledger_mask, derived_entry = ledger.writes, PARTITIONS - 1, DERIVED_ENTRY.pack
        validate, quick_check, all_valid = validate_measurement, certainly_valid, all_certainly_valid
        observe_many = self.totals.observe_many
        unicode_codes = self.unicode_codes
        fingerprint = BatchFingerprint(*self.builder_args)
        if self.deduplicate:
            fingerprint.add(b"deduplicate")
        spill = _Spill(path)
        cutoff = cutoff_key(self._now() - DEDUP_WINDOW)
        lo, hi = "\uffff", ""  # sort after / before every timestamp key
        read = valid = old = 0
        in_batch = 0  # bytes of the batch being built so far (records and separators)
        next_report = self._clock() + self.progress_interval

        with open(path, "wb", buffering=1 << 20) as out:

            def take(entries: list[tuple[int, int | None, Any]], columns: RowColumns | None = None) -> None:
                """Encode valid rows (in source order), cut them into batches and note them in both
                ledgers; a row too large for any request is rejected. ``columns``: the rows' columns
                when the batch check proved them all valid and laid out alike."""
                nonlocal in_batch
                add_record, append, ledger_write = builder.add, spill.append, ledger_writes
                if columns is not None and columns.layout is not None and "uid" not in columns.layout:
                    records, digests = encode_derived_many(columns.items, columns)
                    if max(map(len, records)) <= max_record:  # the common case: every record fits
                        for (row, line, _), encoded, hashed in zip(entries, records, digests, strict=True):
                            if (done := add_record(encoded)) is not None:
                                append(out, done, fingerprint)
                                in_batch = 0
                            at = spill.size + in_batch  # where this record starts in the spill file
                            in_batch += len(encoded) + 1
                            ledger_write[hashed[0] & ledger_mask](derived_entry(hashed, at, row, line or 0))
                        note(entries, columns)
                        return
                skipped: set[int] | None = None
                for index, (row, line, item) in enumerate(entries):
                    if "uid" in item:
                        record, digest = encode_plain(item), None
                    else:
                        record, digest = encode_derived(item)
                    if len(record) > max_record:
                        reason = (
                            f"the measurement is {len(record)} bytes as JSON; a request body must stay "
                            f"under {self.builder_args[1]} bytes"
                        )
                        self._reject(row, line, item, [RowError(row, "", reason, source, line)], source)
                        skipped = skipped or set()
                        skipped.add(index)
                        continue
                    if (done := add_record(record)) is not None:
                        append(out, done, fingerprint)
                        in_batch = 0
                    at = spill.size + in_batch  # where this record starts in the spill file
                    in_batch += len(record) + 1
                    if digest is not None:
                        ledger_write[digest[0] & ledger_mask](derived_entry(digest, at, row, line or 0))
                    else:
                        content = encode_plain({k: v for k, v in item.items() if k != "uid"})
                        add_explicit(item["uid"], content, at, row, line)
                if skipped:
                    entries = [entry for index, entry in enumerate(entries) if index not in skipped]
                    columns = None
                if entries:
                    note(entries, columns)

            def note(entries: list[tuple[int, int | None, Any]], columns: RowColumns | None) -> None:
                """Count rows about to be sent: the summary's timestamps and the run totals."""
                nonlocal valid, old, lo, hi
                valid += len(entries)
                stamps = columns.column("ts") if columns is not None else list(map(_TS, map(_ITEM, entries)))
                if sum(map(str.endswith, stamps, repeat("Z"))) == len(stamps):
                    keys = list(map(_UTC_KEY, stamps))
                else:
                    keys = list(map(timestamp_key, stamps))
                low, high = min(keys), max(keys)
                lo, hi = min(lo, low), max(hi, high)
                if low < cutoff:
                    old += sum(map(cutoff.__gt__, keys))
                observe_many(entries, columns)

            def handle(chunk: list[tuple[int, int | None, Any]]) -> None:
                """Check a batch of rows and take the valid ones, in source order."""
                nonlocal read, next_report
                read += len(chunk)
                if self._clock() >= next_report:
                    next_report = self._clock() + self.progress_interval
                    self.log.info("m3ter ingest: read %d rows, %d invalid so far", read, summary.invalid)
                # the batch check settles the common case; otherwise each row is checked (the quick
                # check first, the full one names the problems)
                columns = RowColumns(list(map(_ITEM, chunk)))
                if all_valid(columns.items, unicode_codes, columns):
                    take(chunk, columns)
                    return
                start = 0
                for index, (row, line, item) in enumerate(chunk):
                    if type(item) is dict and quick_check(item, unicode_codes):
                        continue
                    if isinstance(item, RowError):
                        errors, data = [item], item.data
                    elif problems := validate(item, unicode_codes):
                        errors = [RowError(row, p.field, p.reason, source, line) for p in problems]
                        data = item
                    else:
                        continue
                    if start < index:
                        take(chunk[start:index])
                    start = index + 1
                    self._reject(row, line, data, errors, source)
                if start < len(chunk):
                    take(chunk[start:] if start else chunk)

            pending = iter(rows)
            collecting = gc.isenabled()
            more = True
            while more:
                chunk: list[tuple[int, int | None, Any]] = []
                failure: Exception | None = None
                # The cyclic garbage collector pauses while a batch of rows is held (it would walk
                # every row's objects over and over, for nothing: rows hold no reference cycles) and
                # runs again once they are freed, so it still runs once per batch. Only resumed if
                # it was running.
                if collecting:
                    gc.disable()
                try:
                    try:
                        chunk.extend(islice(pending, _CHUNK_ROWS))
                    except Exception as exc:  # the rows read before the source failed are handled first
                        failure = exc
                    more = failure is None and len(chunk) == _CHUNK_ROWS
                    if chunk:
                        handle(chunk)
                finally:
                    chunk.clear()
                    if collecting:
                        gc.enable()
                if failure is not None:
                    raise failure
            if (last := builder.flush()) is not None:
                spill.append(out, last, fingerprint)
        summary.read, summary.valid, summary.older_than_dedup_window = read, valid, old
        summary.total_batches = len(spill.batches)
        summary.fingerprint = fingerprint.hexdigest()
        summary.ts_min = utc_key_to_iso(lo) if valid else None
        summary.ts_max = utc_key_to_iso(hi) if valid else None
        return spill

    def _apply_preflight(
        self, spill: _Spill, ledger: RowLedger, directory: Path, source: str | None
    ) -> tuple[_Spill, RowLedger]:
        """Judge the prepared rows' shapes against m3ter's configuration; prepare again without the
        rows it would reject (each becomes a row error). Nothing is re-read when all pass."""
        first = self.totals
        assert self.preflight is not None
        verdicts = self.preflight.judge(shape for shape, _entry in first.raw_shapes())
        if not verdicts:
            return spill, ledger
        for shape, problems in list(verdicts.items())[: self.max_errors_reported]:
            self.log.warning(
                "m3ter ingest pre-flight: rows for meter %r, account %r would be rejected by m3ter: %s",
                shape[0],
                shape[1],
                "; ".join(f"{name}: {reason}" for name, reason in problems),
            )
        read = self.summary.read

        def again() -> Iterator[tuple[int, int | None, Any]]:
            index = 0
            with open(spill.path, "rb") as prepared:
                for offset, size, _count in spill.batches:
                    for record in os.pread(prepared.fileno(), size, offset).split(b"\n"):
                        item = json.loads(record)
                        row, line, explicit = first.position(index)
                        index += 1
                        if not explicit:
                            del item["uid"]  # derived again, the same way, by the second preparation
                        problems = verdicts.get(canonical_shape(shape_of(item)))
                        if problems:
                            errors = [RowError(row, name, reason, source, line) for name, reason in problems]
                            self._reject(row, line, item, errors, source)
                            continue
                        yield row, line, item

        directory.mkdir()
        self.totals = RunLedger(first.max_groups)
        checked = RowLedger(directory, self.namespace, self.deduplicate)
        try:
            prepared = self._prepare(again(), directory / "batches.spill", source, checked)
        finally:
            checked.close()
        self.summary.read = read
        spill.path.unlink()
        return prepared, checked

    def _log_prepared(self, source: str | None, spill: _Spill) -> None:
        summary = self.summary
        self.log.info(
            "m3ter ingest: read %d rows from %s: %d valid (%d identical to an earlier row, %d of them "
            "not sent), %d invalid, %d batches prepared",
            summary.read,
            source or "the source",
            summary.valid,
            summary.identical,
            summary.deduplicated,
            summary.invalid,
            len(spill.batches),
        )

    # -- identical rows and repeated uids --------------------------------------------------------

    def _resolve(self, spill: _Spill, ledger: RowLedger, source: str | None) -> _Spill:
        """Apply the ledger: occurrence uids for identical rows, drops, and uid conflicts as row errors."""
        summary = self.summary
        reader = open(spill.path, "rb")  # noqa: SIM115 - closed below

        def record_at(offset: int) -> Any:
            # batches follow each other without a separator: decode the one record that starts here
            text = os.pread(reader.fileno(), self.builder_args[1], offset).decode("ascii")
            return _RECORD_DECODER.raw_decode(text)[0]

        def conflict(found: Conflict) -> None:
            data = record_at(found.offset)
            reason = (
                f"uid {data.get('uid')!r} is carried by {found.rows} rows of this source (given, or "
                "derived from a row's content) with different content; m3ter would keep one of them "
                "and drop the others"
            )
            error = RowError(found.row, "uid", reason, source, found.line)
            self._reject(found.row, found.line, data, [error], source)

        try:
            resolution = ledger.resolve(conflict)
        finally:
            reader.close()
        summary.identical = resolution.identical
        summary.deduplicated = resolution.dropped
        summary.valid -= resolution.conflict_rows
        if resolution.identical or resolution.conflict_rows:
            self.log.info(
                "m3ter ingest: %d rows repeat an earlier row exactly (%s); %d rows share a uid with "
                "different content",
                resolution.identical,
                "sent once" if self.deduplicate else "each stored as its own measurement",
                resolution.conflict_rows,
            )
        if not resolution.files or (summary.invalid and self.on_invalid == "fail"):
            return spill
        if resolution.dropped or resolution.conflict_rows:
            return self._rewrite(spill, resolution)
        with open(spill.path, "r+b") as patch:  # occurrence uids only: same length, in place
            for offset, uid in resolution.actions():
                os.pwrite(patch.fileno(), uid, offset + _UID_AT)
        return spill

    def _rewrite(self, spill: _Spill, resolution: Resolution) -> _Spill:
        """Copy the spill without the dropped records (and with occurrence uids), re-cutting batches."""
        builder = BatchBuilder(*self.builder_args)
        fingerprint = BatchFingerprint(*self.builder_args)
        if self.deduplicate:
            fingerprint.add(b"deduplicate")
        fresh = _Spill(spill.path.with_suffix(".final"))
        actions = resolution.actions()
        pending = next(actions, None)

        with open(spill.path, "rb") as old, open(fresh.path, "wb", buffering=1 << 20) as out:
            for start, size, _count in spill.batches:
                at = start
                for record in os.pread(old.fileno(), size, start).split(b"\n"):
                    if pending is not None and pending[0] == at:
                        uid = pending[1]
                        pending = next(actions, None)
                        if uid == _DROP:
                            at += len(record) + 1
                            continue
                        record = record[:_UID_AT] + uid + record[_UID_AT + len(uid) :]
                    at += len(record) + 1
                    if (done := builder.add(record)) is not None:
                        fresh.append(out, done, fingerprint)
            if (last := builder.flush()) is not None:
                fresh.append(out, last, fingerprint)
        spill.path.unlink()
        self.summary.total_batches = len(fresh.batches)
        self.summary.fingerprint = fingerprint.hexdigest()
        return fresh

    def _reject(
        self, row: int, line: int | None, item: Any, errors: list[RowError], source: str | None
    ) -> None:
        """Count a rejected row, keep its first errors for the report, and dead-letter it (``skip``)."""
        self.summary.invalid += 1
        room = self.max_errors_reported - len(self.errors)
        if room > 0:
            self.errors.extend(errors[:room])
        if self.on_invalid != "skip":
            return
        if self._dead_letters is None:
            self._dead_letters, self.summary.dead_letter_path = open_dead_letters(
                self.dead_letter_path, self.namespace
            )
        self._dead_letters.write(dead_letter(row, line, source, errors, item))

    # -- send -----------------------------------------------------------------------------------

    def _client_stats(self) -> dict[str, Any]:
        stats = getattr(self.client, "stats", None)
        snapshot = getattr(stats, "snapshot", None)
        return snapshot() if callable(snapshot) else {}

    def _resume_point(self, spill: _Spill) -> AckedBatches:
        """The batches an earlier try of this run already had acknowledged (empty without a match)."""
        total = len(spill.batches)
        if self.checkpoint is None:
            return AckedBatches()
        state = self.checkpoint.load()
        if not isinstance(state, dict):
            return AckedBatches()
        earlier = _count(state.get("earlier_other_measurements"))
        if state.get("fingerprint") != self.summary.fingerprint or state.get("version") != CHECKPOINT_VERSION:
            earlier += _count(state.get("measurements"))
            self._earlier_other = earlier
            if earlier:
                self.summary.earlier_other_source = {"measurements": earlier}
                self.log.warning(
                    "m3ter ingest: a checkpoint of an earlier try does not match this source's batches "
                    "(the source changed, or yields its rows in another order: a SQL query needs ORDER BY "
                    "for a retry to resume); m3ter also holds %d measurements sent by earlier tries of a "
                    "different source version. Everything is sent again: rows that are the same get the "
                    "same uids (m3ter de-duplicates them within 35 days), rows the source no longer has "
                    "stay in m3ter",
                    earlier,
                )
            else:
                self.log.info(
                    "m3ter ingest: ignoring a checkpoint of another source or batching; starting over"
                )
            return AckedBatches()
        self._earlier_other = earlier
        if earlier:
            self.summary.earlier_other_source = {"measurements": earlier}
            self.log.warning(
                "m3ter ingest: m3ter also holds %d measurements sent by earlier tries of a different "
                "source version",
                earlier,
            )
        acked = AckedBatches.from_state(state.get("acked"), total)
        if acked is None:
            self.log.warning("m3ter ingest: ignoring a malformed checkpoint; starting over")
            return AckedBatches()
        if not len(acked):
            return acked
        measurements = sum(spill.batches[index][2] for index in range(total) if index in acked)
        self.summary.resumed_from = {"batches": len(acked), "measurements": measurements}
        if len(acked) == total:
            self.log.info(
                "m3ter ingest: an earlier try delivered all %d batches (%d measurements) of this source; "
                "nothing to send",
                total,
                measurements,
            )
        else:
            self.log.info(
                "m3ter ingest: resuming: %d acknowledged batches (%d measurements) are not sent again",
                len(acked),
                measurements,
            )
        return acked

    def _send(self, spill: _Spill, acked: AckedBatches) -> None:
        summary = self.summary
        total = len(spill.batches)
        todo = [index for index in range(total) if index not in acked]
        acked_measurements = (summary.resumed_from or {}).get("measurements", 0)
        if not todo:
            self._save_checkpoint(spill, acked, acked_measurements)  # marks an empty source complete
            return
        lock = threading.Lock()
        reader = open(spill.path, "rb")  # noqa: SIM115 - shared by the worker threads, closed below

        def read(offset: int, size: int) -> bytes:
            if hasattr(os, "pread"):
                return os.pread(reader.fileno(), size, offset)
            with lock:  # pragma: no cover - platforms without pread
                reader.seek(offset)
                return reader.read(size)

        def send_batch(index: int) -> tuple[int, int, int]:
            offset, size, count = spill.batches[index]
            return self._submit(read(offset, size), count, 0)

        first_error: BaseException | None = None
        to_send = sum(spill.batches[index][2] for index in todo)
        sent_before = self.summary.sent
        started = self._clock()
        next_report = started + self.progress_interval
        pending: dict[Future[tuple[int, int, int]], int] = {}
        queue = iter(todo)
        next_index = next(queue, None)
        try:
            with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="m3ter-ingest") as pool:
                while pending or (next_index is not None and first_error is None):
                    while (
                        first_error is None and next_index is not None and len(pending) < self.max_in_flight
                    ):
                        pending[pool.submit(send_batch, next_index)] = next_index
                        next_index = next(queue, None)
                    done, _ = wait(pending, timeout=self.progress_interval, return_when=FIRST_COMPLETED)
                    for future in done:
                        index = pending.pop(future)
                        try:
                            body_bytes, requests_made, splits = future.result()
                        except BaseException as exc:
                            first_error = first_error or exc
                            continue
                        count = spill.batches[index][2]
                        summary.bytes += body_bytes
                        summary.requests += requests_made
                        summary.splits += splits
                        summary.sent += count
                        summary.batches += 1
                        acked.add(index)
                        acked_measurements += count
                        # every acknowledgement is recorded before the next batch is submitted, so
                        # a crash leaves unrecorded at most the batches in flight
                        self._save_checkpoint(spill, acked, acked_measurements)
                    if self._clock() >= next_report:
                        next_report = self._clock() + self.progress_interval
                        log_progress(
                            self.log,
                            summary.sent - sent_before,
                            to_send,
                            self._clock() - started,
                            self._client_stats(),
                        )
        finally:
            reader.close()
        if first_error is not None:
            raise first_error

    def _save_checkpoint(self, spill: _Spill, acked: AckedBatches, measurements: int) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.save(
            checkpoint_state(
                self.summary.fingerprint, acked, measurements, len(spill.batches), self._earlier_other
            )
        )

    def _submit(self, segment: bytes, count: int, splits_403: int) -> tuple[int, int, int]:
        """Send one batch (records separated by ``\\n``); halve it on 413 or 403.

        :return: ``(body bytes acknowledged, requests made, splits)``.
        """
        body = BODY_PREFIX + segment.replace(b"\n", b",") + BODY_SUFFIX
        try:
            self.client.submit_measurements(body)
            return len(body), 1, 0
        except M3terPayloadTooLargeError:
            if count == 1:
                raise
            next_403 = splits_403
        except M3terFinalError as exc:
            # m3ter answers an over-size ingest body with 403; a 403 that halving does not cure is final.
            if exc.status != 403 or count == 1 or splits_403 >= MAX_403_SPLITS:
                raise
            next_403 = splits_403 + 1
        records = segment.split(b"\n")
        half = len(records) // 2
        self.log.warning("m3ter ingest: m3ter refused a batch of %d as too large; sending halves", count)
        first = self._submit(b"\n".join(records[:half]), half, next_403)
        second = self._submit(b"\n".join(records[half:]), len(records) - half, next_403)
        return first[0] + second[0], first[1] + second[1] + 1, first[2] + second[2] + 1
