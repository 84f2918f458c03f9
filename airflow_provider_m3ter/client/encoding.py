"""One-time serialization and deterministic uids: the bytes hashed for a uid are the bytes sent.

Plain Python, no Airflow. A record is encoded as canonical JSON (keys sorted, ASCII, no whitespace,
no NaN); a derived ``uid`` is a hash of that encoding, spliced in rather than serializing twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from binascii import hexlify
from collections import deque
from itertools import repeat
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from operator import itemgetter
from typing import Any

from airflow_provider_m3ter.client.measurements import RowColumns

__all__ = ["UidDeriver", "canonical_by_template", "derive_uid", "encode", "occurrence_uid"]


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _canonical_encoder() -> tuple[Any, Any]:
    """``dumps(sort_keys, compact, ASCII, no NaN)``, the C encoder built once (json builds one per
    call), and the same for many values at once (a list of str; one C-level pass, no Python call per
    value)."""
    slow = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode

    def slow_many(values: list[Any]) -> list[str]:
        return list(map(slow, values))

    if c_make_encoder is None:  # pragma: no cover - CPython always has the C accelerator
        return slow, slow_many
    try:
        fast = c_make_encoder(None, _refuse, encode_basestring_ascii, None, ":", ",", True, False, False)
    except TypeError:  # pragma: no cover - a Python with another C encoder signature
        return slow, slow_many

    def dumps(value: Any) -> str:
        return "".join(fast(value, 0))

    join = "".join

    def dumps_many(values: list[Any]) -> list[str]:
        return list(map(join, map(fast, values, repeat(0))))

    probe = {"b": [1.5, "\u00e9"], "a": None}
    if dumps(probe) != slow(probe) or dumps_many([probe]) != [slow(probe)]:  # pragma: no cover
        return slow, slow_many
    return dumps, dumps_many


_dumps_canonical, _dumps_canonical_many = _canonical_encoder()
_AFTER_BRACE = itemgetter(slice(1, None))


class UidDeriver:
    """Derives deterministic uids and encodes each measurement exactly once.

    The uid is a BLAKE2b hash of the namespace and the measurement's canonical JSON (sorted keys,
    no whitespace, ``uid`` left out), so the same content gets the same uid on every retry and
    rerun, and different namespaces never collide. The bytes hashed are the bytes sent: the uid is
    spliced into the canonical JSON instead of serializing twice.

    :param namespace: separates loads that might carry identical rows (default in the operator:
        ``<dag_id>.<task_id>``).
    """

    #: 20-byte digest -> 40 hex characters, within m3ter's 50-character uid limit.
    DIGEST_SIZE = 20

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._base = hashlib.blake2b(digest_size=self.DIGEST_SIZE)
        self._base.update(namespace.encode("utf-8") + b"\x00")

    def uid(self, m: dict[str, Any]) -> str:
        """The uid this deriver gives ``m`` (any ``uid`` already in ``m`` is ignored)."""
        if "uid" in m:
            m = {key: value for key, value in m.items() if key != "uid"}
        hasher = self._base.copy()
        hasher.update(_dumps_canonical(m).encode("ascii"))
        return hasher.hexdigest()

    def encode_derived(self, m: dict[str, Any]) -> tuple[bytes, bytes]:
        """Serialize a valid measurement without ``uid`` once, splicing in its derived uid.

        :param m: a valid measurement with no ``uid`` key.
        :return: ``(compact JSON bytes with the uid first, the uid's 20-byte digest)``; the uid is
            always the 8th to 48th byte (``{"uid":"`` then 40 hex characters), so a later
            :func:`occurrence_uid` can replace it in place.
        """
        canonical = _dumps_canonical(m).encode("ascii")
        hasher = self._base.copy()
        hasher.update(canonical)
        digest = hasher.digest()
        if len(canonical) <= 2:
            return b'{"uid":"' + hexlify(digest) + b'"}', digest
        return b'{"uid":"' + hexlify(digest) + b'",' + canonical[1:], digest

    def encode_derived_many(
        self, items: list[dict[str, Any]], columns: RowColumns | None = None
    ) -> tuple[list[bytes], list[bytes]]:
        """:meth:`encode_derived` for many measurements at once, with C-level passes (no Python call
        per measurement); the same bytes and digests as :meth:`encode_derived` gives each one.

        :param items: valid measurements, none with a ``uid`` key.
        :param columns: the :class:`~airflow_provider_m3ter.client.measurements.RowColumns` of
            ``items`` when its ``layout`` is known: rows laid out alike are encoded through one
            template (see :func:`canonical_by_template`).
        :return: ``(records, digests)``, in the order of ``items``.
        """
        texts = canonical_by_template(columns) if columns is not None else None
        if texts is None:
            texts = _dumps_canonical_many(items)
        canonical = list(map(str.encode, texts, repeat("ascii")))
        if min(map(len, canonical), default=3) <= 2:
            pairs = [self.encode_derived(m) for m in items]  # an empty object: nothing to splice into
            return [record for record, _digest in pairs], [digest for _record, digest in pairs]
        base = self._base
        hashers = list(map(type(base).copy, repeat(base, len(canonical))))
        deque(map(type(base).update, hashers, canonical), maxlen=0)
        digests = list(map(type(base).digest, hashers))
        spliced = zip(repeat(b'{"uid":"'), map(hexlify, digests), repeat(b'",'), map(_AFTER_BRACE, canonical))
        records = list(map(b"".join, spliced))
        return records, digests

    def encode(self, m: dict[str, Any]) -> bytes:
        """Serialize a valid measurement once, adding a derived ``uid`` when it has none.

        :param m: a measurement that passed
            :func:`~airflow_provider_m3ter.client.measurements.validate_measurement`.
        :return: compact JSON bytes with a ``uid``.
        """
        if "uid" in m:
            return _dumps_canonical(m).encode("ascii")
        canonical = _dumps_canonical(m).encode("ascii")
        hasher = self._base.copy()
        hasher.update(canonical)
        if len(canonical) <= 2:  # an empty object has nothing after its brace to splice into
            return b'{"uid":"' + hasher.hexdigest().encode("ascii") + b'"}'
        return b'{"uid":"' + hasher.hexdigest().encode("ascii") + b'",' + canonical[1:]


_STR, _NUMBERS = frozenset({str}), frozenset({int, float})


def canonical_by_template(columns: RowColumns) -> list[str] | None:
    """The canonical JSON (as :func:`encode` writes it, as text) of rows laid out alike, or None.

    Rows with the same keys, whose objects have the same keys, differ only in their values: one
    template per layout (keys sorted, compact, as the canonical encoder writes them: the literal
    text between the values) takes every row's values, each column of values encoded in one C-level
    pass (strings with the JSON encoder's own ``encode_basestring_ascii``, ints and floats with their
    ``repr``, which is what the C encoder writes) and joined with the literal text. Anything else
    (a value of another type, a non-finite float, a layout that differs, non-string keys) gives
    None: encode those rows the usual way. The first row is also encoded the usual way and
    compared, as a guard.

    :param columns: the rows' :class:`~airflow_provider_m3ter.client.measurements.RowColumns`
        with its ``layout`` set (every row has those keys, in that order).
    """
    layout, items = columns.layout, columns.items
    if layout is None or not items or not all(type(key) is str for key in layout):
        return None
    first = items[0]
    literal = "{"  # the text before the next value
    parts: list[Any] = []  # literal text (repeated) and value columns, alternating
    values: list[list[Any]] = []
    for index, key in enumerate(sorted(layout)):
        literal += ("," if index else "") + encode_basestring_ascii(key) + ":"
        if type(first[key]) is not dict:
            parts.append(literal)
            values.append(columns.column(key))
            parts.append(values[-1])
            literal = ""
            continue
        column = columns.column(key)
        keys = columns.key_tuples(key)
        inner = keys[0]
        if (
            set(map(type, column)) != {dict}
            or keys.count(inner) != len(keys)
            or not all(type(field) is str for field in inner)
        ):
            return None
        literal += "{"
        for position, field in enumerate(sorted(inner)):
            literal += ("," if position else "") + encode_basestring_ascii(field) + ":"
            parts.append(literal)
            values.append(list(map(itemgetter(field), column)))
            parts.append(values[-1])
            literal = ""
        literal += "}"
    literal += "}"
    if not values:
        return [literal] * len(items)
    for index, part in enumerate(parts):
        if type(part) is not list:
            parts[index] = repeat(part)
            continue
        kinds = set(map(type, part))
        if kinds == _STR:
            parts[index] = map(encode_basestring_ascii, part)
        elif kinds <= _NUMBERS:
            if float in kinds:
                try:
                    if not all(map(math.isfinite, part)):
                        return None  # NaN and the infinities are no JSON
                except OverflowError:  # an int too large for a float: the C encoder takes it
                    return None
            parts[index] = map(repr, part)
        else:
            return None
    # the repeated literals are endless: the value columns (all as long as ``items``) end the zip
    texts = list(map("".join, zip(*parts, repeat(literal), strict=False)))
    if texts[0] != _dumps_canonical(first):  # pragma: no cover - a guard; never seen
        return None
    return texts


def occurrence_uid(key: bytes, occurrence: int) -> str:
    """The uid of the ``occurrence``-th repeat (1, 2, ...) of an identical row (40 hex characters).

    The first row of a group of identical rows keeps its derived uid; the k-th repeat gets
    ``BLAKE2b-160(person="m3ter-occurrence", key || "#" || k)`` where ``key`` is the first 16 bytes
    of the derived uid's digest. A source in another order gives its group the same set of uids.

    :param key: the first 16 bytes of the derived uid's digest (``bytes.fromhex(uid)[:16]``).
    :param occurrence: 1 for the second identical row, 2 for the third, ...
    """
    if occurrence < 1:
        raise ValueError(f"occurrence must be at least 1, got {occurrence}")
    data = key[:16] + b"#" + str(occurrence).encode("ascii")
    return hashlib.blake2b(data, digest_size=UidDeriver.DIGEST_SIZE, person=b"m3ter-occurrence").hexdigest()


def derive_uid(namespace: str, m: dict[str, Any], occurrence: int = 0) -> str:
    """The deterministic uid of measurement ``m`` in ``namespace`` (40 hex characters).

    :param namespace: a caller-chosen string that scopes the uids (e.g. ``dag_id.task_id``).
    :param m: the measurement; an existing ``uid`` key is ignored for hashing.
    :param occurrence: 0 for the first of a group of identical rows (or a unique row), k for the
        k-th repeat (see :func:`occurrence_uid`).
    """
    uid = UidDeriver(namespace).uid(m)
    return uid if occurrence == 0 else occurrence_uid(bytes.fromhex(uid)[:16], occurrence)


def encode(m: dict[str, Any]) -> bytes:
    """Compact JSON bytes of one measurement, as sent (keys sorted, ASCII, no whitespace)."""
    return _dumps_canonical(m).encode("ascii")
