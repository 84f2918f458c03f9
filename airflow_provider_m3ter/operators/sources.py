"""Row sources for measurement ingest: inline/XCom lists, files (JSON Lines, JSON array, CSV, gzip) and SQL.

Every source streams: it yields one row at a time as ``(row, line, item)`` where ``row`` is the
1-based row number in the source, ``line`` the 1-based line where the row starts (when the format
has lines) and ``item`` either the measurement dict or a :class:`RowError` for a row that could not
be read or mapped. Nothing holds the whole source in memory. Flat rows become measurements through
a :class:`~airflow_provider_m3ter.operators.mapping.RowMapping`.

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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from airflow_provider_m3ter.client.measurements import RowError
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError

__all__ = [
    "FILE_FORMATS",
    "FileSource",
    "IterableSource",
    "MeasurementSource",
    "SourceRow",
    "SqlSource",
]

SourceRow = tuple[int, "int | None", "dict[str, Any] | RowError"]
FILE_FORMATS = ("jsonl", "json", "csv")
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_WHITESPACE = re.compile(r"[ \t\r\n]*")


class MeasurementSource(Protocol):
    """Anything that yields source rows: ``name`` for messages and ``rows()`` to stream them."""

    name: str

    def rows(self) -> Iterator[SourceRow]:
        """Yield ``(row, line, measurement-or-RowError)`` in source order."""
        ...


class _ScanningDecoder(Protocol):
    """The part of ``json.JSONDecoder`` used for JSON Lines."""

    def scan_once(self, string: str, idx: int) -> tuple[Any, int]:
        """Decode the JSON value starting at ``idx``; return it and the index after it."""
        ...


def _as_item(mapped: Any, row: int, line: int | None, source: str) -> dict[str, Any] | RowError:
    """A mapped row as a source item: :meth:`RowMapping.build`'s ``(field, reason)`` becomes a RowError."""
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
        # Airflow 3.0's object-storage file wrapper forwards peek but is not iterable (its class
        # has no __iter__): such handles are read through a buffer of our own too
        if not hasattr(handle, "peek") or not hasattr(type(handle), "__iter__"):
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
        # typeshed's JSONDecoder stub omits scan_once, which every JSONDecoder sets in __init__
        scan = cast(_ScanningDecoder, json.JSONDecoder()).scan_once
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
        from airflow_provider_m3ter.compat import BaseHook

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
