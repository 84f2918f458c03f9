"""Row sources for measurement ingest: inline/XCom lists, files (JSON Lines, JSON array, CSV, gzip) and SQL.

Every source streams: it yields one row at a time as ``(row, line, item)`` where ``row`` is the
1-based row number in the source, ``line`` the 1-based line where the row starts (when the format
has lines) and ``item`` either the measurement dict or a :class:`RowError` for a row that could not
be read or mapped. Nothing holds the whole source in memory.

Airflow is imported lazily (only for ``ObjectStoragePath`` URLs and SQL connections), so the file
path stays usable in plain Python.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from airflow_provider_m3ter.client.measurements import NUMERIC_CATEGORIES, STRING_CATEGORIES, RowError

__all__ = [
    "FILE_FORMATS",
    "FileSource",
    "IterableSource",
    "MeasurementSource",
    "RowMapping",
    "SourceError",
    "SourceRow",
    "SqlSource",
    "parse_target",
]

SourceRow = tuple[int, "int | None", "dict[str, Any] | RowError"]
FILE_FORMATS = ("jsonl", "json", "csv")
_SCALAR_TARGETS = frozenset({"meter", "account", "ts", "ets", "uid"})
_GZIP_MAGIC = b"\x1f\x8b"
_INTEGER = re.compile(r"[+-]?\d+")
_CHUNK = 1 << 20
_WHITESPACE = re.compile(r"[ \t\r\n]*")


class SourceError(ValueError):
    """The source as a whole cannot be read (missing file, broken JSON array, bad SQL, bad mapping).

    :param message: what is wrong, naming the file, position or column.
    """


class MeasurementSource(Protocol):
    """Anything that yields source rows: ``name`` for messages and ``rows()`` to stream them."""

    name: str

    def rows(self) -> Iterator[SourceRow]:
        """Yield ``(row, line, measurement-or-RowError)`` in source order."""
        ...


# --- mapping ------------------------------------------------------------------------------------


def parse_target(target: str) -> tuple[str, str | None]:
    """Split a mapping target into ``(field, key)``: ``"ts"`` -> ``("ts", None)``,
    ``"measure.requests"`` -> ``("measure", "requests")``.

    :param target: ``meter``, ``account``, ``ts``, ``ets``, ``uid`` or ``<category>.<field>``.
    :raises ValueError: for anything else.
    """
    if target in _SCALAR_TARGETS:
        return target, None
    category, dot, key = target.partition(".")
    if dot and key and (category in STRING_CATEGORIES or category in NUMERIC_CATEGORIES):
        return category, key
    raise ValueError(
        f"unknown mapping target {target!r}: use meter, account, ts, ets, uid or <category>.<field> "
        f"with a category of {', '.join(sorted(STRING_CATEGORIES | NUMERIC_CATEGORIES))}"
    )


def _to_number(value: Any) -> Any:
    """Numbers from CSV text or SQL types; raise ValueError for text that is not a number."""
    if isinstance(value, str):
        text = value.strip()
        return int(text) if _INTEGER.fullmatch(text) else float(text)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _to_text(value: Any) -> Any:
    """Strings for string categories: numbers and dates from SQL become their text."""
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _to_timestamp(value: Any) -> Any:
    """ISO-8601 text for datetimes (naive ones are taken as UTC); anything else as is."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        text = value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return text
    return value


def _to_code(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RowMapping:
    """Turns flat rows (CSV records, SQL rows, flat dicts) into measurements.

    :param mapping: column name -> target (``meter``, ``account``, ``ts``, ``ets``, ``uid`` or
        ``<category>.<field>`` such as ``measure.requests`` or ``who.user``). Columns not listed are
        ignored. ``None`` maps each column by its own name (a CSV header ``meter,account,ts,
        measure.requests`` needs no mapping) and rejects columns that are not targets.
    :param meter: Meter code for rows without a ``meter`` value.
    :param account: Account code for rows without an ``account`` value.
    """

    def __init__(
        self,
        mapping: Mapping[str, str] | None = None,
        *,
        meter: str | None = None,
        account: str | None = None,
    ) -> None:
        self.mapping = dict(mapping) if mapping is not None else None
        self.meter = meter
        self.account = account
        self._targets: dict[str, tuple[str, str | None]] = {}
        for column, target in (self.mapping or {}).items():
            try:
                self._targets[column] = parse_target(target)
            except ValueError as exc:
                raise SourceError(f"mapping for column {column!r}: {exc}") from None

    def plan(self, columns: Iterable[str]) -> list[tuple[int, str, str | None, str] | None]:
        """For a fixed list of columns, where each goes: ``(index, field, key, column)`` or None."""
        plan: list[tuple[int, str, str | None, str] | None] = []
        for index, column in enumerate(columns):
            if self.mapping is not None:
                target = self._targets.get(column)
                plan.append((index, *target, column) if target else None)
            else:
                try:
                    plan.append((index, *parse_target(column), column))
                except ValueError as exc:
                    raise SourceError(
                        f"column {column!r} is not a measurement field and no mapping was given ({exc})"
                    ) from None
        return plan

    def build(self, values: list[Any] | tuple[Any, ...], plan: list[Any]) -> dict[str, Any] | tuple[str, str]:
        """One measurement from a row's values, or ``(field, reason)`` when a value cannot convert."""
        m: dict[str, Any] = {}
        for step in plan:
            if step is None:
                continue
            index, field, key, _column = step
            value = values[index]
            if value is None or value == "":
                continue  # empty cells / NULLs mean "no value"
            if key is None:
                m[field] = _to_timestamp(value) if field in ("ts", "ets") else _to_code(value)
                continue
            if field in NUMERIC_CATEGORIES:
                try:
                    value = _to_number(value)
                except ValueError:
                    return f"{field}.{key}", f"not a number: {str(value)[:40]!r}"
            else:
                value = _to_text(value)
            m.setdefault(field, {})[key] = value
        if self.meter is not None and "meter" not in m:
            m["meter"] = self.meter
        if self.account is not None and "account" not in m:
            m["account"] = self.account
        return m

    def apply_defaults(self, m: Any) -> Any:
        """Add the constant ``meter``/``account`` to a measurement dict that lacks them (copying it)."""
        if not isinstance(m, dict):
            return m
        if (self.meter is not None and "meter" not in m) or (self.account is not None and "account" not in m):
            m = dict(m)
            if self.meter is not None:
                m.setdefault("meter", self.meter)
            if self.account is not None:
                m.setdefault("account", self.account)
        return m

    def from_dict(self, row: Any, plans: dict[tuple[str, ...], list[Any]]) -> Any:
        """Map a dict row: nested measurements pass through, flat rows follow the mapping."""
        if not isinstance(row, dict):
            return row
        if self.mapping is None:
            return self.apply_defaults(row)
        columns = tuple(row)
        plan = plans.get(columns)
        if plan is None:
            plan = plans[columns] = self.plan(columns)
        return self.build(list(row.values()), plan)


def _as_item(mapped: Any, row: int, line: int | None, source: str) -> dict[str, Any] | RowError:
    if isinstance(mapped, tuple):
        return RowError(row, mapped[0], mapped[1], source, line)
    return mapped  # type: ignore[no-any-return]


# --- inline / XCom ------------------------------------------------------------------------------


class IterableSource:
    """Measurements from a list or any iterable (inline in the DAG, or pulled from XCom).

    :param items: measurement dicts (or flat dicts when ``mapping`` is given).
    :param mapping: optional :class:`RowMapping` for flat dicts and the ``meter``/``account`` defaults.
    :param name: how the source is named in messages.
    """

    def __init__(self, items: Iterable[Any], mapping: RowMapping | None = None, name: str = "inline") -> None:
        self.items = items
        self.mapping = mapping or RowMapping()
        self.name = name

    def rows(self) -> Iterator[SourceRow]:
        """Yield each item as a row (no line numbers)."""
        plans: dict[tuple[str, ...], list[Any]] = {}
        mapping = self.mapping
        for row, item in enumerate(self.items, start=1):
            try:
                mapped = mapping.from_dict(item, plans)
            except SourceError as exc:
                yield row, None, RowError(row, "", str(exc), self.name)
                continue
            yield row, None, _as_item(mapped, row, None, self.name)


# --- files --------------------------------------------------------------------------------------


class _ReadAdapter(io.RawIOBase):
    """Lets io.BufferedReader wrap a file object that has ``read`` but no ``peek``."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()


class FileSource:
    """Measurements from a file: JSON Lines, a JSON array or CSV, optionally gzip-compressed.

    The format comes from ``file_format`` or the suffix (``.jsonl``/``.ndjson``, ``.json``,
    ``.csv``, each optionally ``.gz``); a ``.json`` file or an unknown suffix is sniffed (``[``
    starts an array, ``{`` JSON Lines, anything else CSV). Gzip is recognised by suffix or by its
    magic bytes. Everything is read as a stream.

    :param path: a local path, a ``file://``/object-storage URL, or an ``airflow.sdk.ObjectStoragePath``.
    :param file_format: ``jsonl``, ``json`` or ``csv``; ``None`` detects it.
    :param mapping: maps flat rows (CSV always; JSON rows when it has a ``mapping``) and supplies
        ``meter``/``account`` defaults.
    :param encoding: text encoding of the file (a UTF-8 byte-order mark is skipped).
    """

    def __init__(
        self,
        path: Any,
        file_format: str | None = None,
        mapping: RowMapping | None = None,
        encoding: str = "utf-8",
    ) -> None:
        if file_format is not None and file_format not in FILE_FORMATS:
            raise SourceError(f"file_format must be one of {', '.join(FILE_FORMATS)}, got {file_format!r}")
        self.path = path
        self.file_format = file_format
        self.mapping = mapping or RowMapping()
        self.encoding = encoding
        self.name = str(path)

    def _open(self) -> BinaryIO:
        path = self.path
        if isinstance(path, str) and "://" in path:
            from airflow.sdk import ObjectStoragePath

            path = ObjectStoragePath(path)
        elif isinstance(path, (str, os.PathLike)):
            path = Path(path)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise SourceError(f"source file not found: {self.name}") from None
        except OSError as exc:
            raise SourceError(f"cannot open source file {self.name}: {exc}") from None
        if not hasattr(handle, "peek"):
            handle = io.BufferedReader(_ReadAdapter(handle), buffer_size=_CHUNK)
        if handle.peek(2)[:2] == _GZIP_MAGIC or self.name.endswith(".gz"):
            handle = gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[assignment]
        return handle  # type: ignore[no-any-return]

    def _detect(self, handle: Any) -> str:
        if self.file_format:
            return self.file_format
        name = self.name[:-3] if self.name.endswith(".gz") else self.name
        suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if suffix in ("jsonl", "ndjson"):
            return "jsonl"
        if suffix == "csv":
            return "csv"
        try:
            head = handle.peek(4096)[:4096].lstrip(codecs.BOM_UTF8).lstrip()
        except (OSError, EOFError) as exc:
            raise SourceError(f"cannot read source file {self.name}: {exc}") from None
        if head.startswith(b"["):
            return "json"
        if head.startswith(b"{") or (suffix == "json" and not head):
            return "jsonl"
        return "csv"

    def rows(self) -> Iterator[SourceRow]:
        """Stream the file's rows in order."""
        handle = self._open()
        try:
            file_format = self._detect(handle)
            if file_format == "jsonl":
                yield from self._jsonl(handle)
            elif file_format == "json":
                yield from self._json_array(handle)
            else:
                yield from self._csv(handle)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read source file {self.name}: {exc}") from None
        finally:
            handle.close()

    def _jsonl(self, handle: BinaryIO) -> Iterator[SourceRow]:
        mapping, name = self.mapping, self.name
        plans: dict[tuple[str, ...], list[Any]] = {}
        simple = mapping.mapping is None and mapping.meter is None and mapping.account is None
        # the decoder's own scanner on decoded text skips json.loads' per-call encoding detection
        scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
        row = 0
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(self.encoding)
                item, end = scan(text, 0)
                if end != len(text) and (rest := text[end:]) != "\n" and rest.strip():
                    raise ValueError("extra data")
            except (StopIteration, ValueError):
                # unusual lines (blank, indented, BOM, malformed) take the careful path
                if not raw.strip():
                    continue
                row += 1
                try:
                    item = json.loads(raw)
                except ValueError as exc:
                    reason = f"not valid JSON: {getattr(exc, 'msg', exc)}"
                    if isinstance(exc, json.JSONDecodeError):
                        reason += f" (column {exc.colno})"
                    yield row, line_no, RowError(row, "", reason, name, line_no)
                    continue
            else:
                row += 1
            if simple:
                yield row, line_no, item
            else:
                yield row, line_no, _as_item(mapping.from_dict(item, plans), row, line_no, name)

    def _json_array(self, handle: BinaryIO) -> Iterator[SourceRow]:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig" if self.encoding == "utf-8" else self.encoding)
        decode = json.JSONDecoder().raw_decode
        mapping, name = self.mapping, self.name
        plans: dict[tuple[str, ...], list[Any]] = {}
        buffer, pos, line, row, eof = "", 0, 1, 0, False

        def fill() -> bool:
            # Keep the unread tail and append the next chunk; False at the end of the file.
            nonlocal buffer, pos, eof
            chunk = "" if eof else text.read(_CHUNK)
            if not chunk:
                eof = True
                return False
            buffer, pos = buffer[pos:] + chunk, 0
            return True

        def next_char() -> str:
            # Skip whitespace (counting lines) and return the next character, or "" at the end.
            nonlocal pos, line
            while True:
                start = pos
                pos = _WHITESPACE.match(buffer, pos).end()  # type: ignore[union-attr]
                line += buffer.count("\n", start, pos)
                if pos < len(buffer):
                    return buffer[pos]
                if not fill():
                    return ""

        if next_char() != "[":
            raise SourceError(f"{name}: a JSON array source must start with '['")
        pos += 1
        if next_char() == "]":
            return
        while True:
            if next_char() == "":
                raise SourceError(f"{name}: the JSON array ends early after element {row} (line {line})")
            while True:
                try:
                    item, end = decode(buffer, pos)
                    # A value that reaches the end of the buffer may be cut short (a number).
                    if end < len(buffer) or eof:
                        break
                except json.JSONDecodeError as exc:
                    if eof:
                        raise SourceError(
                            f"{name}: element {row + 1} at line {line} is not valid JSON: {exc.msg}"
                        ) from None
                if not fill():
                    continue
            row += 1
            yield row, line, _as_item(mapping.from_dict(item, plans), row, line, name)
            line += buffer.count("\n", pos, end)
            pos = end
            char = next_char()
            if char == "]":
                return
            if char != ",":
                found = repr(char) if char else "the end of the file"
                raise SourceError(
                    f"{name}: expected ',' or ']' after element {row} (line {line}), found {found}"
                )
            pos += 1

    def _csv(self, handle: BinaryIO) -> Iterator[SourceRow]:
        text = io.TextIOWrapper(
            handle, encoding="utf-8-sig" if self.encoding == "utf-8" else self.encoding, newline=""
        )
        reader = csv.reader(text)
        name = self.name
        header = next(reader, None)
        if header is None:
            return
        header = [column.strip() for column in header]
        plan = self.mapping.plan(header)
        width = len(header)
        build = self.mapping.build
        row, last_line = 0, reader.line_num
        for values in reader:
            line, last_line = last_line + 1, reader.line_num
            if not values:
                continue
            row += 1
            if len(values) != width:
                reason = f"expected {width} fields as in the header, got {len(values)}"
                yield row, line, RowError(row, "", reason, name, line)
                continue
            yield row, line, _as_item(build(values, plan), row, line, name)


# --- SQL ----------------------------------------------------------------------------------------


class SqlSource:
    """Rows of a SQL query through any Airflow ``DbApiHook`` connection, read with ``fetchmany``.

    :param conn_id: the Airflow connection of the database (its hook must be a ``DbApiHook``).
    :param sql: the query; each result row becomes one measurement through ``mapping``.
    :param parameters: bind parameters for the query (a sequence or a mapping, per the driver).
    :param mapping: maps result columns to measurement fields (by name when it has no ``mapping``).
    :param fetch_size: rows fetched per round trip.
    """

    def __init__(
        self,
        conn_id: str,
        sql: str,
        parameters: Any = None,
        mapping: RowMapping | None = None,
        fetch_size: int = 5000,
    ) -> None:
        self.conn_id = conn_id
        self.sql = sql
        self.parameters = parameters
        self.mapping = mapping or RowMapping()
        self.fetch_size = fetch_size
        self.name = f"sql ({conn_id})"

    def _hook(self) -> Any:
        try:
            from airflow.sdk import BaseHook
        except ImportError:  # pragma: no cover - Airflow < 3.1
            from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
        hook = BaseHook.get_connection(self.conn_id).get_hook()
        if not hasattr(hook, "get_conn"):
            kind = type(hook).__name__
            raise SourceError(f"connection {self.conn_id!r} does not give a database hook (got {kind})")
        return hook

    def rows(self) -> Iterator[SourceRow]:
        """Run the query and stream its rows."""
        connection = self._hook().get_conn()
        cursor = connection.cursor()
        try:
            try:
                if self.parameters is None:
                    cursor.execute(self.sql)
                else:
                    cursor.execute(self.sql, self.parameters)
            except Exception as exc:
                raise SourceError(f"query on connection {self.conn_id!r} failed: {exc}") from exc
            if cursor.description is None:
                raise SourceError(f"query on connection {self.conn_id!r} returned no result set")
            plan = self.mapping.plan([str(column[0]) for column in cursor.description])
            build, name, row = self.mapping.build, self.name, 0
            while batch := cursor.fetchmany(self.fetch_size):
                for values in batch:
                    row += 1
                    yield row, None, _as_item(build(values, plan), row, None, name)
        finally:
            cursor.close()
            connection.close()
