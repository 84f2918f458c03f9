"""Byte-aware batches: request bodies of pre-encoded records, cut by count and by bytes.

Plain Python, no Airflow. m3ter's Ingest API takes 1 to 1,000 measurements per request, and the
JSON body ``{"measurements":[...]}`` must stay under 512,000 bytes. Records arrive already encoded
(see :mod:`airflow_provider_m3ter.client.encoding`), so batching only counts and joins bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "BODY_OVERHEAD",
    "BODY_PREFIX",
    "BODY_SUFFIX",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_COUNT",
    "BatchBuilder",
    "body_size",
    "build_body",
    "split_batches",
]

MAX_BATCH_COUNT = 1000
MAX_BATCH_BYTES = 512_000

BODY_PREFIX = b'{"measurements":['
BODY_SUFFIX = b"]}"
#: Bytes a request body adds around its records (the records are joined by one comma each).
BODY_OVERHEAD = len(BODY_PREFIX) + len(BODY_SUFFIX)


def body_size(record_bytes: int, count: int) -> int:
    """Size of ``{"measurements":[...]}`` holding ``count`` records of ``record_bytes`` in total."""
    return BODY_OVERHEAD + record_bytes + max(count - 1, 0)


def build_body(records: list[bytes]) -> bytes:
    """Join pre-encoded records into one request body without re-encoding them."""
    return BODY_PREFIX + b",".join(records) + BODY_SUFFIX


class BatchBuilder:
    """Cuts a stream of encoded records into batches by count and by bytes.

    Boundaries depend only on the records and the limits, so the same source always yields the same
    batches (which makes a checkpoint's batch count meaningful on resume).

    :param max_count: most records per batch (m3ter: 1,000).
    :param max_bytes: a batch's whole request body stays strictly under this many bytes.
    """

    def __init__(self, max_count: int = MAX_BATCH_COUNT, max_bytes: int = MAX_BATCH_BYTES) -> None:
        if not 1 <= max_count <= MAX_BATCH_COUNT:
            raise ValueError(f"max_count must be 1-{MAX_BATCH_COUNT}, got {max_count}")
        if not BODY_OVERHEAD + 2 < max_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"max_bytes must be {BODY_OVERHEAD + 3}-{MAX_BATCH_BYTES}, got {max_bytes}")
        self.max_count = max_count
        self.max_bytes = max_bytes
        #: The largest single record that fits in a request on its own.
        self.max_record_bytes = max_bytes - BODY_OVERHEAD - 1
        self._records: list[bytes] = []
        # Body size so far if the batch were sent now, minus the suffix/prefix constant.
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes of the batch being built: its records and the commas between them."""
        return self._size

    def fits_alone(self, record: bytes) -> bool:
        """Whether ``record`` can be sent at all (its one-record body is under the byte limit)."""
        return len(record) <= self.max_record_bytes

    def add(self, record: bytes) -> list[bytes] | None:
        """Add one record; return the finished previous batch when this record starts a new one.

        :param record: encoded record; must satisfy :meth:`fits_alone`.
        """
        records = self._records
        added = len(record) + (1 if records else 0)
        if records and (
            len(records) >= self.max_count or BODY_OVERHEAD + self._size + added >= self.max_bytes
        ):
            self._records = [record]
            self._size = len(record)
            return records
        records.append(record)
        self._size += added
        return None

    def flush(self) -> list[bytes] | None:
        """Return the last, partial batch (or None when empty) and start afresh."""
        records, self._records, self._size = self._records, [], 0
        return records or None


def split_batches(
    records: list[bytes], max_count: int = MAX_BATCH_COUNT, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[list[bytes]]:
    """Cut a list of encoded records into batches (a convenience over :class:`BatchBuilder`)."""
    builder = BatchBuilder(max_count, max_bytes)
    for record in records:
        if not builder.fits_alone(record):
            raise ValueError(f"a record of {len(record)} bytes cannot be sent in a request under {max_bytes}")
        if (done := builder.add(record)) is not None:
            yield done
    if (last := builder.flush()) is not None:
        yield last
