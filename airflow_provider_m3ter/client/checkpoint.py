"""Checkpoints of an ingest run: where progress is kept, what it says, and which batches it fits.

A checkpoint records how many batches of a run were acknowledged in order. It is only valid for
the same batch sequence, which a fingerprint of the batching limits and the batches' bytes names.
Plain Python: the operator adapts Airflow's ``task_state_store`` to :class:`CheckpointStore`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

__all__ = [
    "CHECKPOINT_VERSION",
    "BatchFingerprint",
    "CheckpointStore",
    "MemoryCheckpointStore",
    "checkpoint_state",
]

#: Bumped when the checkpoint or the batching changes meaning, so old checkpoints stop matching.
CHECKPOINT_VERSION = 1


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


def checkpoint_state(fingerprint: str, acked: int, measurements: int, total_batches: int) -> dict[str, Any]:
    """The checkpoint after the first ``acked`` batches were acknowledged.

    :param fingerprint: the run's :class:`BatchFingerprint` digest.
    :param acked: batches acknowledged in order from the first.
    :param measurements: records in those batches.
    :param total_batches: batches the run makes.
    """
    return {
        "version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "batches": acked,
        "measurements": measurements,
        "total_batches": total_batches,
    }
