"""Checkpoints of an ingest run: where progress is kept, what it says, and which batches it fits.

A checkpoint records the *set* of batches m3ter acknowledged (as ranges of batch indices), saved
after every acknowledgement, so a crash at any moment leaves unrecorded only the batches in flight
at that moment, whatever ``max_in_flight`` is. It is only valid for the same batch sequence, which
a fingerprint of the batching limits and the batches' bytes names. A run that delivered every
batch saves ``"complete": true`` and leaves the checkpoint in place: a later try of the same task
(killed after ``execute()`` returned, or cleared by a user) finds it and sends nothing again. The
store's owner removes it (Airflow: ``[state_store] clear_on_success``, atomically with the task's
success, or the store's retention).

Plain Python: the operator adapts Airflow's ``task_state_store`` to :class:`CheckpointStore`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from typing import Any, Protocol

__all__ = [
    "CHECKPOINT_VERSION",
    "AckedBatches",
    "BatchFingerprint",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "checkpoint_state",
]

#: Bumped when the checkpoint or the batching changes meaning, so old checkpoints stop matching.
CHECKPOINT_VERSION = 2


class CheckpointStore(Protocol):
    """Where a run keeps its progress between task tries (Airflow: ``context["task_state_store"]``)."""

    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint, or None."""
        ...

    def save(self, state: dict[str, Any]) -> None:
        """Save (overwrite) the checkpoint."""
        ...

    def clear(self) -> None:
        """Remove the checkpoint."""
        ...


class MemoryCheckpointStore:
    """A :class:`CheckpointStore` in memory (tests, plain-Python use within one process)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state = state
        #: every saved state, in order (lets tests see the progression)
        self.history: list[dict[str, Any]] = []

    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint, or None."""
        return self.state

    def save(self, state: dict[str, Any]) -> None:
        """Save (overwrite) the checkpoint."""
        self.state = dict(state)
        self.history.append(self.state)

    def clear(self) -> None:
        """Remove the checkpoint."""
        self.state = None


class BatchFingerprint:
    """Identifies a batch sequence: the batching limits plus every batch's bytes, in order.

    :param max_count: records per request.
    :param max_bytes: the request-body byte limit.
    """

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self._hash.update(json.dumps([CHECKPOINT_VERSION, max_count, max_bytes]).encode())

    def add(self, segment: bytes) -> None:
        """Add one batch (its records as stored, separated by ``\\n``)."""
        self._hash.update(segment)
        self._hash.update(b"\x1e")  # batch boundary

    def hexdigest(self) -> str:
        """The fingerprint so far, as 32 hex characters."""
        return self._hash.hexdigest()


class AckedBatches:
    """The set of acknowledged batch indices, kept as sorted, disjoint ``[start, end)`` ranges.

    Batches are sent in order with a bounded number in flight, so the set stays a handful of ranges
    however many batches a run has; adding an index costs a binary search.
    """

    def __init__(self, ranges: list[list[int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or []:
            for index in range(start, end):
                self.add(index)

    def add(self, index: int) -> None:
        """Record batch ``index`` as acknowledged (idempotent)."""
        at = bisect.bisect_right(self._starts, index)
        if at and self._ends[at - 1] > index:
            return  # already inside a range
        joins_left = bool(at) and self._ends[at - 1] == index
        joins_right = at < len(self._starts) and self._starts[at] == index + 1
        if joins_left and joins_right:
            self._ends[at - 1] = self._ends[at]
            del self._starts[at], self._ends[at]
        elif joins_left:
            self._ends[at - 1] = index + 1
        elif joins_right:
            self._starts[at] = index
        else:
            self._starts.insert(at, index)
            self._ends.insert(at, index + 1)

    def __contains__(self, index: int) -> bool:
        at = bisect.bisect_right(self._starts, index)
        return bool(at) and self._ends[at - 1] > index

    def __len__(self) -> int:
        return sum(end - start for start, end in zip(self._starts, self._ends, strict=True))

    def ranges(self) -> list[list[int]]:
        """The set as ``[[start, end), ...]`` (JSON-ready)."""
        return [[start, end] for start, end in zip(self._starts, self._ends, strict=True)]

    @classmethod
    def from_state(cls, value: Any, total: int) -> AckedBatches | None:
        """Read a checkpoint's ``acked`` ranges; None when they are malformed or out of ``[0, total)``."""
        if not isinstance(value, list):
            return None
        acked = cls()
        for item in value:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and all(type(number) is int for number in item)
                and 0 <= item[0] < item[1] <= total
            ):
                return None
            start, end = item
            if acked._starts and start <= acked._ends[-1]:
                return None  # ranges must be sorted and disjoint
            acked._starts.append(start)
            acked._ends.append(end)
        return acked


def checkpoint_state(
    fingerprint: str,
    acked: AckedBatches,
    measurements: int,
    total_batches: int,
    earlier_other: int = 0,
) -> dict[str, Any]:
    """The checkpoint after the batches in ``acked`` were acknowledged.

    :param fingerprint: the run's :class:`BatchFingerprint` digest.
    :param acked: the acknowledged batches.
    :param measurements: records in those batches.
    :param total_batches: batches the run makes.
    :param earlier_other: measurements earlier tries had acknowledged under other fingerprints
        (carried forward so that every later try can report them).
    """
    count = len(acked)
    return {
        "earlier_other_measurements": earlier_other,
        "version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "acked": acked.ranges(),
        "batches": count,
        "measurements": measurements,
        "total_batches": total_batches,
        "complete": count == total_batches,
    }
