"""Identical rows and repeated uids in one source, found with bounded memory.

Plain Python, no Airflow. While a run prepares its batches it records, for every valid row, a
fixed-size entry in one of :data:`PARTITIONS` ledger files on local disk (chosen by the row's key
digest). After the source is read, each partition is resolved on its own:

* a row **without** ``uid`` is keyed by its derived uid (a hash of namespace and content). The
  first row of a group of identical rows keeps that uid; the k-th repeat (k = 1, 2, ...) gets the
  uid of :func:`~airflow_provider_m3ter.client.encoding.occurrence_uid`, so identical rows are
  distinct measurements, and a reordered source gives the same set of uids. With
  ``deduplicate=True`` the repeats are dropped instead (and counted).
* a row **with** an explicit ``uid`` is keyed by that uid (a uid shaped like a derived one, 40
  lowercase hex characters, in the derived uids' key space). After the occurrence uids are
  assigned, every final uid is checked across all rows that carry it, given or derived: the same
  uid with the same content again is the same measurement (the explicit repeat is dropped and
  counted as identical); the same uid with different content is ambiguous (m3ter would keep one
  and drop the others): every row that *gave* that uid explicitly is a row error.

Memory: a partition is read in chunks; what stays in memory is a counter of its distinct 64-bit
key heads (about 100 bytes each, so about ``100 * distinct rows / PARTITIONS`` bytes: 1.6 MB per
million distinct rows) and, for the partitions with repeats, a small entry per distinct repeated
key (round 2 also keeps its drop actions in a list). A source of one row repeated a million times
needs one counter entry. Disk: 48 bytes per valid row (and per occurrence uid, re-entered).
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from airflow_provider_m3ter.client.encoding import occurrence_uid

_HEX40 = re.compile(r"[0-9a-f]{40}")

__all__ = ["DERIVED_ENTRY", "DROP", "PARTITIONS", "UID_AT", "Conflict", "Resolution", "RowLedger"]

#: Ledger files; a power of two (the partition is the key digest's first byte modulo this).
PARTITIONS = 64
# key (16 bytes) | content digest (8) | spill offset (8) | row, high bit = explicit uid (8) | line (8)
_ENTRY = struct.Struct("<16s8sQQQ")
#: The same 48-byte layout for a row without uid, from its 20-byte uid digest: the first 16 bytes
#: are the key, the last 4 (and 4 zero bytes) the content digest (one value per key).
DERIVED_ENTRY = struct.Struct("<20s4xQQQ")
_WORDS = _ENTRY.size // 8
_EXPLICIT = 1 << 63
# an action on the spill: offset (8) | new uid (40 ASCII bytes), all zero bytes meaning "drop"
_ACTION = struct.Struct("<Q40s")
_DROP = bytes(40)
#: An action's uid meaning "drop this record".
DROP = _DROP
#: Where a derived uid starts in its record (after ``{"uid":"``).
UID_AT = 8


@dataclass(frozen=True)
class Conflict:
    """A row whose explicit ``uid`` also appears with different content elsewhere in the source.

    :param offset: where its record is in the spill file.
    :param row: 1-based row number in the source.
    :param line: 1-based line in the file, or None.
    :param rows: how many rows of the source carry it.
    """

    offset: int
    row: int
    line: int | None
    rows: int


@dataclass
class Resolution:
    """What resolving the ledger found (counts, plus the per-partition action files to apply)."""

    #: rows whose content (or explicit uid and content) repeats an earlier row's
    identical: int = 0
    #: of those, rows not to be sent (``deduplicate=True``, or a repeated explicit uid)
    dropped: int = 0
    #: rows given an occurrence uid
    patched: int = 0
    #: rows whose explicit uid repeats with different content (each one handed to ``on_conflict``)
    conflict_rows: int = 0
    files: list[Path] = field(default_factory=list)

    def actions(self) -> Iterator[tuple[int, bytes]]:
        """Every ``(spill offset, new uid or 40 zero bytes for "drop")``, in offset order."""
        return heapq.merge(*(_read_actions(path) for path in self.files))


def _read_actions(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as handle:
        while chunk := handle.read(_ACTION.size * 256):  # 64 files merged at once: small chunks
            yield from _ACTION.iter_unpack(chunk)


def _chunks(paths: list[Path]) -> Iterator[bytes]:
    """Ledger files in chunks of whole entries (about 3 MB each)."""
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_ENTRY.size * 65536):
                yield chunk


def _repeated_heads(paths: list[Path]) -> set[int]:
    """The 64-bit key heads that occur more than once in these ledger files.

    Counted chunk by chunk, so memory follows the distinct heads, not the entries (a source of one
    row repeated a million times needs one counter entry).
    """
    counts: collections.Counter[int] = collections.Counter()
    for chunk in _chunks(paths):
        counts.update(memoryview(chunk).cast("Q")[0::_WORDS].tolist())
    return {head for head, count in counts.items() if count > 1}


class RowLedger:
    """Records one entry per valid row; :meth:`resolve` finds the repeats.

    :param directory: an existing directory for the ledger files (the run's temp dir).
    :param namespace: the run's uid namespace (for occurrence uids).
    :param deduplicate: drop identical rows without ``uid`` instead of giving them occurrence uids.
    """

    def __init__(self, directory: Path, namespace: str, deduplicate: bool = False) -> None:
        self.directory = directory
        self.namespace = namespace
        self.deduplicate = deduplicate
        self._paths = [directory / f"ledger-{i:02d}" for i in range(PARTITIONS)]
        self._files: list[IO[bytes]] = [open(p, "wb", buffering=1 << 14) for p in self._paths]  # noqa: SIM115
        #: per partition, the ``write`` of its file (the run's hot loop calls them directly)
        self.writes = [f.write for f in self._files]
        self._pack = _ENTRY.pack
        self._derived = DERIVED_ENTRY.pack
        self._uid_base = hashlib.blake2b(digest_size=20)  # as UidDeriver hashes: namespace, NUL, content
        self._uid_base.update(namespace.encode("utf-8") + b"\x00")

    def add_derived(self, digest: bytes, offset: int, row: int, line: int | None) -> None:
        """A row without ``uid``: ``digest`` is its derived uid's digest (at least 16 bytes)."""
        self.writes[digest[0] & (PARTITIONS - 1)](self._derived(digest[:20], offset, row, line or 0))

    def add_explicit(self, uid: str, content: bytes, offset: int, row: int, line: int | None) -> None:
        """A row with an explicit ``uid``; ``content`` is its canonical JSON without the uid.

        An explicit uid shaped like a derived one (40 lowercase hex characters) is keyed like a
        derived uid, with the content digest a derived row of that content would have, so that it
        meets the row whose derived (or occurrence) uid it equals.
        """
        if len(uid) == 40 and _HEX40.fullmatch(uid):
            key = bytes.fromhex(uid)[:16]
            hasher = self._uid_base.copy()
            hasher.update(content)
            content_digest = hasher.digest()[16:20] + bytes(4)
        else:
            key = hashlib.blake2b(uid.encode("utf-8"), digest_size=16, person=b"m3ter-uid").digest()
            content_digest = hashlib.blake2b(content, digest_size=8).digest()
        self.writes[key[0] & (PARTITIONS - 1)](
            self._pack(key, content_digest, offset, row | _EXPLICIT, line or 0)
        )

    def close(self) -> None:
        """Flush and close the ledger files (idempotent)."""
        for handle in self._files:
            handle.close()

    def resolve(self, on_conflict: Callable[[Conflict], None]) -> Resolution:
        """Resolve every partition; the ledger files are removed, action files stay in the directory.

        Two rounds. First, rows without ``uid`` that repeat each other get their final uids (the
        first keeps its derived uid, the k-th repeat an occurrence uid, or is dropped with
        ``deduplicate``); each occurrence uid is entered into the partition of that uid. Then every
        final uid is checked across the rows that carry it: explicit uids equal to a derived or
        occurrence uid, or to each other, are resolved (same content: one measurement; different
        content: a row error for each explicit row).

        :param on_conflict: called for every row whose explicit uid repeats with different content.
        """
        self.close()
        result = Resolution()
        incoming: dict[int, IO[bytes]] = {}
        clean: list[bool] = []
        for index, path in enumerate(self._paths):
            repeated = _repeated_heads([path])
            if not repeated:  # the common case: no repeats in this partition
                clean.append(True)
                continue
            clean.append(False)
            actions = self.directory / f"actions-{index:02d}"
            if self._assign_occurrences([path], repeated, actions, result, incoming):
                result.files.append(actions)
            else:
                actions.unlink()
        for handle in incoming.values():
            handle.close()
        for index, path in enumerate(self._paths):
            extra_path = self.directory / f"incoming-{index:02d}"
            has_extra = index in incoming
            if clean[index] and not has_extra:
                path.unlink()
                continue
            paths = [path, extra_path] if has_extra else [path]
            repeated = _repeated_heads(paths)
            if repeated:
                actions = self.directory / f"uid-actions-{index:02d}"
                if self._check_uids(paths, repeated, actions, result, on_conflict):
                    result.files.append(actions)
            for done in paths:
                done.unlink()
        return result

    @staticmethod
    def _entries(paths: list[Path], repeated: set[int]) -> Iterator[tuple[bytes, bytes, int, int, int]]:
        for chunk in _chunks(paths):
            for entry in _ENTRY.iter_unpack(chunk):
                if int.from_bytes(entry[0][:8], "little") in repeated:
                    yield entry

    def _assign_occurrences(
        self,
        paths: list[Path],
        repeated: set[int],
        actions_path: Path,
        result: Resolution,
        incoming: dict[int, IO[bytes]],
    ) -> bool:
        """Round 1 for one partition: occurrence uids (or drops) for repeated rows without uid.

        :return: whether any action was written.
        """
        counts: collections.Counter[bytes] = collections.Counter(
            key for key, _c, _o, row, _l in self._entries(paths, repeated) if not row & _EXPLICIT
        )
        seen: dict[bytes, int] = {}
        wrote = False
        with open(actions_path, "wb", buffering=1 << 16) as out:
            for key, content, offset, row, line in self._entries(paths, repeated):
                if row & _EXPLICIT or counts[key] < 2:
                    continue
                occurrence = seen.get(key, 0)
                seen[key] = occurrence + 1
                if occurrence == 0:
                    continue
                result.identical += 1
                wrote = True
                if self.deduplicate:
                    result.dropped += 1
                    out.write(_ACTION.pack(offset, _DROP))
                    continue
                result.patched += 1
                uid = occurrence_uid(key, occurrence)
                out.write(_ACTION.pack(offset, uid.encode("ascii")))
                # the repeat now carries that uid: enter it where that uid is checked (round 2)
                new_key = bytes.fromhex(uid)[:16]
                target = new_key[0] & (PARTITIONS - 1)
                handle = incoming.get(target)
                if handle is None:
                    handle = incoming[target] = open(  # noqa: SIM115 - closed in resolve
                        self.directory / f"incoming-{target:02d}", "ab", buffering=1 << 14
                    )
                handle.write(_ENTRY.pack(new_key, content, offset, row, line))
        return wrote

    def _check_uids(
        self,
        paths: list[Path],
        repeated: set[int],
        actions_path: Path,
        result: Resolution,
        on_conflict: Callable[[Conflict], None],
    ) -> bool:
        """Round 2 for one partition: rows with explicit uids that share their final uid with others.

        :return: whether any action was written.
        """
        # per key: [rows, first content, conflict flag, rows without explicit uid]
        groups: dict[bytes, list[Any]] = {}
        for key, content, _offset, row, _line in self._entries(paths, repeated):
            group = groups.get(key)
            if group is None:
                group = groups[key] = [0, content, 0, 0]
            group[0] += 1
            if content != group[1]:
                group[2] = 1
            if not row & _EXPLICIT:
                group[3] += 1
        actions: list[tuple[int, bytes]] = []
        kept: set[bytes] = set()
        for key, _content, offset, row, line in self._entries(paths, repeated):
            rows, _first, conflict, derived = groups[key]
            if rows == 1 or not row & _EXPLICIT:
                continue  # a 64-bit head shared with another key, or a row round 1 settled
            row &= ~_EXPLICIT
            if conflict:
                result.conflict_rows += 1
                on_conflict(Conflict(offset, row, line or None, rows))
                actions.append((offset, _DROP))
                continue
            if not derived and key not in kept:
                kept.add(key)  # the first row of an explicit uid with one content is sent
                continue
            result.identical += 1
            result.dropped += 1
            actions.append((offset, _DROP))
        if not actions:
            return False
        actions.sort()
        with open(actions_path, "wb") as out:
            for offset, uid in actions:
                out.write(_ACTION.pack(offset, uid))
        return True
