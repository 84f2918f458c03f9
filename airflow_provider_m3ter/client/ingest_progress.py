"""What an ingest run reports: its summary, the invalid-rows failure and its progress log lines.

Plain Python, no Airflow. The summary holds counts only (it becomes XCom), never measurement data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_m3ter.client.measurements import RowError

__all__ = ["IngestSummary", "InvalidMeasurementsError", "log_old_timestamps", "log_progress"]


class InvalidMeasurementsError(ValueError):
    """Rows failed validation and ``on_invalid="fail"``: nothing was sent.

    :param errors: the first rejected rows' errors (at most the run's ``max_errors_reported``).
    :param invalid_rows: how many rows were rejected in total.
    :param source: a name for the source.
    """

    def __init__(self, errors: list[RowError], invalid_rows: int, source: str | None = None) -> None:
        self.errors = errors
        self.invalid_rows = invalid_rows
        self.source = source
        where = f" in {source}" if source else ""
        head = f"{invalid_rows} invalid row{'s' if invalid_rows != 1 else ''}{where}; nothing was sent"
        more = f" (showing the first {len(errors)} problems)" if invalid_rows > len(errors) else ""
        super().__init__(head + more + ":\n" + "\n".join(f"  {error}" for error in errors))


@dataclass
class IngestSummary:
    """What a run did; its :meth:`as_dict` is the operator's XCom (counts only, never data).

    :param read: rows read from the source.
    :param valid: rows that passed validation.
    :param invalid: rows rejected (each reported with row, field and reason).
    :param identical: valid rows whose content repeats an earlier row of the source exactly (same
        fields and values; for rows with a ``uid``, the same uid too). Without ``deduplicate`` each
        is stored as its own measurement (an occurrence uid); see ``deduplicated``.
    :param deduplicated: of the ``identical`` rows, those not sent: repeats of a row without ``uid``
        under ``deduplicate=True``, and repeats of an explicit uid with the same content (one
        measurement). ``valid - deduplicated`` measurements make up the source in m3ter.
    :param sent: measurements acknowledged by m3ter in this run (a resumed run excludes earlier ones).
    :param batches: batches acknowledged in this run.
    :param total_batches: batches the source makes.
    :param bytes: request-body bytes acknowledged in this run.
    :param requests: ingest calls made (split halves count separately).
    :param splits: batches halved after a 413/403.
    :param retries: HTTP retries the client made.
    :param throttled: 429 responses seen.
    :param duration_seconds: wall time of the run.
    :param ts_min: earliest ``ts`` among valid rows (UTC).
    :param ts_max: latest ``ts`` among valid rows (UTC).
    :param older_than_dedup_window: valid rows whose ``ts`` is older than m3ter's 35-day window.
    :param dead_letter_path: where rejected rows were written (``on_invalid="skip"``), or None.
    :param resumed_from: ``{"batches", "measurements"}`` acknowledged by an earlier try, or None.
    :param fingerprint: identifies the batch sequence (source content plus batching parameters).
    :param earlier_other_source: ``{"measurements"}`` that earlier tries of this task had m3ter
        acknowledge for a *different* batch sequence (the source changed, or yielded its rows in
        another order), or None. m3ter holds those too: rows this source still has were sent again
        with the same uids (m3ter de-duplicates them); rows the source no longer has stay in m3ter.
    :param totals: what the run sends, ``{meter: {account: {"measurements": n, "measure.<field>":
        [sum, count], ...}}}`` (numeric fields only; None when there were too many meter/account
        pairs to keep it compact); reconciliation compares it with m3ter's usage query.
    """

    read: int = 0
    valid: int = 0
    invalid: int = 0
    identical: int = 0
    deduplicated: int = 0
    sent: int = 0
    batches: int = 0
    total_batches: int = 0
    bytes: int = 0
    requests: int = 0
    splits: int = 0
    retries: int = 0
    throttled: int = 0
    duration_seconds: float = 0.0
    ts_min: str | None = None
    ts_max: str | None = None
    older_than_dedup_window: int = 0
    dead_letter_path: str | None = None
    resumed_from: dict[str, int] | None = None
    fingerprint: str = ""
    earlier_other_source: dict[str, int] | None = None
    totals: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the summary."""
        return asdict(self)


def log_progress(logger: Any, sent: int, to_send: int, elapsed: float, stats: dict[str, Any]) -> None:
    """Log one progress line of the send phase: count, rate, retries, throttling and an ETA.

    :param logger: where to log (``info``).
    :param sent: measurements acknowledged so far in this send.
    :param to_send: measurements this send has to deliver.
    :param elapsed: seconds since the send began.
    :param stats: the client's stats snapshot (``retries``, ``throttled``), or ``{}``.
    """
    rate = sent / max(elapsed, 1e-9)
    eta = f"{(to_send - sent) / rate:.0f} s" if rate > 0 else "unknown"
    logger.info(
        "m3ter ingest: sent %d of %d measurements (%.0f/s), retries %d, throttled %d, ETA %s",
        sent,
        to_send,
        rate,
        stats.get("retries", 0),
        stats.get("throttled", 0),
        eta,
    )


def log_old_timestamps(logger: Any, summary: IngestSummary, rerun: bool) -> None:
    """Say when valid rows are older than m3ter's 35-day de-duplication window.

    A first run only notes it; a retry or rerun warns, since m3ter may count such rows again.

    :param logger: where to log (``info``/``warning``).
    :param summary: the prepared run's summary (``older_than_dedup_window``, ``resumed_from``).
    :param rerun: the run is a retry or rerun.
    """
    old = summary.older_than_dedup_window
    if not old:
        return
    message = (
        "m3ter ingest: %d measurements have a ts older than m3ter's 35-day de-duplication window; "
        "m3ter may not recognise their uids, so measurements sent before would be counted again%s"
    )
    if rerun or summary.resumed_from:
        logger.warning(message, old, " (this is a retry or rerun)")
    else:
        logger.info(message, old, "")
