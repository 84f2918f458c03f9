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
from collections.abc import Callable, Generator, Iterable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from airflow_provider_m3ter.client.batches import MAX_BATCH_BYTES
from airflow_provider_m3ter.client.measurements import MAX_EXACT_INTEGER, NotANumber, RowError, row_snapshot
from airflow_provider_m3ter.operators.mapping import RowMapping, SourceError

__all__ = [
    "FILE_FORMATS",
    "DuplicateKeyError",
    "FileSource",
    "IterableSource",
    "JsonTextSource",
    "MeasurementSource",
    "NestingError",
    "SourceRow",
    "SqlSource",
    "loads_strict",
]

SourceRow = tuple[int, "int | None", "dict[str, Any] | RowError"]
FILE_FORMATS = ("jsonl", "json", "csv")
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_WHITESPACE = re.compile(r"[ \t\r\n]*")
# JSON whitespace directly before a colon: a key written ``"k" :`` (the fast key count misses it)
_SPACED_COLON = re.compile(r"[ \t\r\n]:")
#: Containers nested deeper than this are refused as a row error before anything recurses on them
#: (a valid measurement nests two levels: the row object and a category object).
MAX_NESTING = 32


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


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (at any depth): which value is meant is ambiguous.

    :param key: the repeated key.
    """

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears more than once in one JSON object")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a dict, or DuplicateKeyError when a key repeats."""
    made = dict(pairs)
    if len(made) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return made


def _strict_float(text: str, limit: float = float(MAX_EXACT_INTEGER)) -> float | NotANumber:
    """``parse_float``: the float, or :class:`NotANumber` when it would overflow, underflow to 0 or
    lie beyond +-2**53 (where a float skips integers, so the text's value may have been rounded)."""
    value = float(text)
    if -limit < value < limit:  # the common case
        if value == 0.0 and any(digit in "123456789" for digit in text.lower().partition("e")[0]):
            return NotANumber(text, "too small for a 64-bit floating-point number (it would become 0)")
        return value
    if value - value != 0.0:  # infinity
        return NotANumber(text, "too large for a 64-bit floating-point number")
    return NotANumber(text, "is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly")


_PLAIN_DECODER = json.JSONDecoder()


def _skip_value(buffer: str, pos: int) -> int | None:
    """Where the JSON value at ``pos`` ends (ignoring duplicate keys), or None if it is incomplete."""
    try:
        return _PLAIN_DECODER.raw_decode(buffer, pos)[1]
    except json.JSONDecodeError:
        return None


#: The JSON decoder of every source: duplicate keys are refused, unrepresentable numbers marked.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=_strict_float)
# The fast path: C-built dicts, then a key count proves there was no duplicate key (see _keys_unique).
_FAST_DECODER = json.JSONDecoder(parse_float=_strict_float)


def _keys_unique(item: Any, text: str, start: int, end: int) -> bool:
    """True when the JSON text ``text[start:end]`` of ``item`` certainly names no key twice.

    Every key in the text is followed by its colon, with or without JSON whitespace between. When
    no colon in the text follows whitespace, every key is followed directly by ``":``, so the text
    holds at least as many ``":`` as the decoded dicts hold keys, and more when a key was repeated
    (the dict kept one), a string contains ``":``, or dicts nest deeper than two levels. Equal
    counts therefore prove the keys unique; anything else (including any whitespace before a colon,
    even inside a string) takes the careful decoder.
    """
    if type(item) is not dict:
        return False
    keys = len(item)
    for value in item.values():
        if type(value) is dict:
            keys += len(value)
    if text.count('":', start, end) != keys:
        return False
    if start or end != len(text):
        return _SPACED_COLON.search(text, start, end) is None
    # a whole line: substring tests are cheaper than a regex search, and a one-character test
    # (which settles compact JSON) many times cheaper than a two-character one
    return not (
        (" " in text and " :" in text)
        or ("\t" in text and "\t:" in text)
        or ("\r" in text and "\r:" in text)
        or ("\n" in text and "\n:" in text)
    )


#: JSON's whitespace: all that may follow a value on its line (``str.strip()`` strips U+00A0, U+2028 ...,
#: which the careful decoder refuses as extra data).
_JSON_WHITESPACE = " \t\r\n"
#: What ``bytes.strip()`` strips: a line of only these is blank (``str.strip()`` strips more).
_BYTES_WHITESPACE = " \t\n\r\x0b\x0c"


def _NO_MAPS(item: Any) -> tuple[Any, ...]:
    return ()


def _maps_of(item: Any) -> Callable[[Any], tuple[Any, ...]]:
    """A function giving the values of ``item``'s keys that hold objects, for rows laid out alike."""
    keys = [key for key, value in item.items() if type(value) is dict] if type(item) is dict else []
    if not keys:
        return _NO_MAPS
    if len(keys) == 1:
        key = keys[0]
        return lambda m: (m[key],)
    return itemgetter(*keys)


def _keys_counted(item: Any, text: str, pick: Callable[[Any], tuple[Any, ...]]) -> bool:
    """True when the JSON text ``text`` of ``item`` certainly names no key twice, at any depth.

    For text with no JSON whitespace before any colon (the caller checks that): every key
    occurrence in it, at any depth, ends with ``":``, so the text holds at least as many ``":`` as
    the row object's keys plus the keys of any of its inner objects, and more for every key that
    was repeated (at any depth; a decoded object keeps one of them). ``pick`` gives some of the row's
    values, each of which must be an object (``dict.__len__`` refuses anything else); an equal count
    proves that no key was repeated anywhere. Otherwise False: nothing proven, look closer.
    """
    if type(item) is not dict:  # len() of an array counts its elements, not the keys inside them
        return False
    try:
        return text.count('":') == len(item) + sum(map(dict.__len__, pick(item)))
    except (TypeError, KeyError):  # not an object, or laid out otherwise than ``pick`` expects
        return False


class NestingError(ValueError):
    """A JSON value nests containers deeper than :data:`MAX_NESTING` levels."""

    def __init__(self) -> None:
        super().__init__(f"containers nest deeper than {MAX_NESTING} levels")


def _json_end(text: str, pos: int, limit: int = MAX_NESTING) -> int | None:
    """Where the JSON value starting at ``text[pos]`` ends, found without recursion.

    :return: the index after the value, or None when it is not complete in ``text``.
    :raises NestingError: containers nest deeper than ``limit`` before the value ends.
    :raises ValueError: brackets that do not match.
    """
    depth, index, size = 0, pos, len(text)
    closers = []
    while index < size:
        char = text[index]
        if char == '"':
            index += 1
            while True:
                found = text.find('"', index)
                if found < 0:
                    return None
                backslashes = 0
                while text[found - 1 - backslashes] == "\\":
                    backslashes += 1
                index = found + 1
                if not backslashes % 2:
                    break
            if depth == 0:
                return index
            continue
        if char in "[{":
            depth += 1
            if depth > limit:
                raise NestingError()
            closers.append("]" if char == "[" else "}")
        elif char in "]}":
            if not closers or closers.pop() != char:
                raise ValueError("brackets do not match")
            depth -= 1
            if depth == 0:
                return index + 1
        elif depth == 0 and char in ",\n\r\t ":
            return index if index > pos else None
        index += 1
    return None


def _too_deep(text: str, start: int = 0, end: int | None = None) -> bool:
    """True when the JSON text ``text[start:end]`` nests containers deeper than :data:`MAX_NESTING`.

    Two counts settle the common case; brackets inside strings are skipped when it takes a look.
    """
    end = len(text) if end is None else end
    if text.count("[", start, end) + text.count("{", start, end) <= MAX_NESTING:
        return False
    depth, in_string, escaped = 0, False, False
    for char in text[start:end]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "[" or char == "{":
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif char == "]" or char == "}":
            depth -= 1
    return False


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses duplicate keys (:class:`DuplicateKeyError`) and marks numbers that
    a 64-bit float cannot hold (:class:`~airflow_provider_m3ter.client.measurements.NotANumber`);
    :class:`NestingError` when containers nest deeper than :data:`MAX_NESTING` levels."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    if _too_deep(text):
        raise NestingError()
    return json.loads(text, object_pairs_hook=_unique_keys, parse_float=_strict_float)


def _json_error(exc: ValueError, row: int, line: int | None, source: str) -> RowError:
    if isinstance(exc, DuplicateKeyError):
        reason = f"{exc}; which value is meant is ambiguous"
        return RowError(row, exc.key, reason, source, line)
    if isinstance(exc, NestingError):
        return RowError(row, "", f"{exc}; a measurement nests at most two levels", source, line)
    reason = f"not valid JSON: {getattr(exc, 'msg', exc)}"
    if isinstance(exc, json.JSONDecodeError):
        reason += f" (column {exc.colno})"
    return RowError(row, "", reason, source, line)


def _text_encoding(encoding: str) -> str:
    """The codec to read with: normalized (``utf8``, ``UTF-8``, ``U8`` are one), BOM-skipping for UTF-8."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise SourceError(f"unknown text encoding {encoding!r}") from None
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def _as_item(
    mapped: Any, row: int, line: int | None, source: str, data: Any = None
) -> dict[str, Any] | RowError:
    """A mapped row as a source item: :meth:`RowMapping.build`'s ``(field, reason)`` becomes a
    RowError carrying ``data`` (the row as read) for its dead letter."""
    if isinstance(mapped, tuple):
        return RowError(row, mapped[0], mapped[1], source, line, data)
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
        """Yield each item as a row (no line numbers); the items of a one-shot iterable (not a list
        or tuple) are copied as they are read (see
        :func:`~airflow_provider_m3ter.client.measurements.row_snapshot`)."""
        plans: dict[tuple[str, ...], list[Any]] = {}
        mapping = self.mapping
        items = self.items if isinstance(self.items, (list, tuple)) else map(row_snapshot, self.items)
        for row, item in enumerate(items, start=1):
            try:
                mapped = mapping.from_dict(item, plans)
            except SourceError as exc:
                yield row, None, RowError(row, "", str(exc), self.name, None, item)
                continue
            yield row, None, _as_item(mapped, row, None, self.name, item)


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
    :param encoding: text encoding of the file, any name Python's ``codecs`` knows (``utf8``,
        ``UTF-8`` and ``utf-8`` are the same codec; a UTF-8 byte-order mark is skipped).
    :raises SourceError: an unknown encoding or format.
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
        self._codec = _text_encoding(encoding)
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
        codec = self._codec
        if codec in ("utf-8", "utf-8-sig"):
            yield from self._jsonl_blocks(handle)
            return
        lines: Iterable[bytes] = handle
        if "a\n{".encode(codec) != b"a\n{":
            # not ASCII-compatible (UTF-16, UTF-32): a byte 0x0A is not a line break, so decode the
            # text first and split it on its own line breaks
            decoded = io.TextIOWrapper(handle, encoding=codec, newline="\n")
            lines = (text.encode("utf-8", "surrogatepass") for text in decoded)
            codec = "utf-8"
        yield from self._jsonl_lines(lines, codec, 0, 0)

    def _jsonl_lines(
        self, lines: Iterable[bytes], codec: str, line_no: int, row: int
    ) -> Generator[SourceRow, None, int]:
        """JSON Lines read line by line (``lines`` are the raw lines after line ``line_no``, the last
        row so far is ``row``); returns the last row number."""
        mapping = self.mapping
        plans: dict[tuple[str, ...], list[Any]] = {}
        simple = mapping.mapping is None and mapping.meter is None and mapping.account is None
        # the decoder's own scanner on decoded text skips json.loads' per-call encoding detection
        # typeshed's JSONDecoder stub omits scan_once, which every JSONDecoder sets in __init__
        scan = cast(_ScanningDecoder, _FAST_DECODER).scan_once
        unique = _keys_unique
        fast_codec = "utf-8" if codec == "utf-8-sig" else codec  # the BOM can only start line 1
        for line_no, raw in enumerate(lines, start=line_no + 1):  # noqa: B020 - the count goes on
            try:
                text = raw.decode(fast_codec)
                # Deeper than MAX_NESTING needs more than MAX_NESTING - 3 arrays on one path, or an
                # object below the second level, whose keys the key count below does not expect:
                # either way the row takes the careful path, which measures the depth exactly.
                if text.count("[") > MAX_NESTING - 3:
                    raise ValueError("maybe nested too deeply")
                item, end = scan(text, 0)
                if end != len(text) and (rest := text[end:]) != "\n" and rest.strip(_JSON_WHITESPACE):
                    raise ValueError("extra data")
                # after the value only whitespace follows (checked above): the whole line is counted
                if not unique(item, text, 0, len(text)):
                    raise ValueError("maybe a repeated key")
            except (StopIteration, ValueError, RecursionError):
                # unusual lines (blank, indented, BOM, malformed) take the careful path
                if not raw.strip():
                    continue
                row += 1
                item = self._careful_line(raw, line_no, row, codec)
                if isinstance(item, RowError):
                    yield row, line_no, item
                    continue
            else:
                row += 1
            if simple:
                yield row, line_no, item
            else:
                yield row, line_no, _as_item(mapping.from_dict(item, plans), row, line_no, self.name, item)
        return row

    def _careful_line(self, raw: bytes, line_no: int, row: int, codec: str) -> Any:
        """One JSON Lines line read strictly: the value, or a RowError (text, JSON, duplicate key)."""
        try:
            text = raw.decode(codec if line_no == 1 else ("utf-8" if codec == "utf-8-sig" else codec))
        except UnicodeDecodeError as exc:
            reason = f"not valid {self.encoding} text at byte {exc.start + 1}"
            return RowError(row, "", reason, self.name, line_no)
        try:
            return loads_strict(text)
        except ValueError as exc:
            return _json_error(exc, row, line_no, self.name)

    def _jsonl_blocks(self, handle: BinaryIO) -> Iterator[SourceRow]:
        """UTF-8 JSON Lines, decoded a block of whole lines at a time (the common case, the fast one).

        Each line is decoded with the C scanner (which keeps a repeated key silently); a key count
        (:func:`_keys_counted`) then proves that the line names no key twice, at any depth, and
        the line takes the careful path otherwise. Whitespace before a colon anywhere in the block
        makes each of its lines take the full test of :func:`_keys_unique`; a block that is not
        valid UTF-8 is read line by line, as other encodings are.
        """
        mapping, name, codec = self.mapping, self.name, self._codec
        plans: dict[tuple[str, ...], list[Any]] = {}
        simple = mapping.mapping is None and mapping.meter is None and mapping.account is None
        scan = cast(_ScanningDecoder, _FAST_DECODER).scan_once
        unique = _keys_unique
        pick: Callable[[Any], tuple[Any, ...]] = _NO_MAPS
        line_no = row = 0
        waiting: list[bytes] = []  # the start of a line longer than one read
        while True:
            data = handle.read(_CHUNK)
            if data:
                cut = data.rfind(b"\n") + 1
                if not cut:
                    waiting.append(data)
                    continue
                block = b"".join((*waiting, data[:cut])) if waiting else data[:cut]
                waiting = [data[cut:]] if cut < len(data) else []
            elif waiting:
                block, waiting = b"".join(waiting), []
            else:
                return
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError:
                raws = block.split(b"\n")
                if not raws[-1]:
                    raws.pop()
                lines_of = [line + b"\n" for line in raws[:-1]] + raws[-1:]
                row = yield from self._jsonl_lines(lines_of, codec, line_no, row)
                line_no += len(raws)
                continue
            lines = text.split("\n")
            if not lines[-1]:
                lines.pop()  # the block ends with a line break
            deep = "[" in text and text.count("[") > MAX_NESTING - 3
            # JSON whitespace before a colon (no line holds a line break): a one-character search
            # settles the common case of compact JSON (it is many times cheaper than a two-character one)
            spaced = (
                (" " in text and " :" in text)
                or ("\t" in text and "\t:" in text)
                or ("\r" in text and "\r:" in text)
            )
            for line in lines:
                line_no += 1
                try:
                    # see _jsonl_lines for the reason of each test
                    if deep and line.count("[") > MAX_NESTING - 3:
                        raise ValueError("maybe nested too deeply")
                    item, end = scan(line, 0)
                    if end != len(line) and line[end:].strip(_JSON_WHITESPACE):
                        raise ValueError("extra data")
                    if spaced or not _keys_counted(item, line, pick):
                        if not unique(item, line, 0, len(line)):
                            raise ValueError("maybe a repeated key")
                        if not spaced:
                            pick = _maps_of(item)  # this line's layout: count the next ones like it
                except (StopIteration, ValueError, RecursionError):
                    if not line.strip(_BYTES_WHITESPACE):
                        continue  # blank, as bytes.strip() sees it
                    row += 1
                    item = self._careful_line(line.encode("utf-8"), line_no, row, codec)
                    if isinstance(item, RowError):
                        yield row, line_no, item
                        continue
                else:
                    row += 1
                if simple:
                    yield row, line_no, item
                else:
                    yield row, line_no, _as_item(mapping.from_dict(item, plans), row, line_no, name, item)

    def _json_array(self, handle: BinaryIO) -> Iterator[SourceRow]:
        text = io.TextIOWrapper(handle, encoding=self._codec)
        decode, careful = _FAST_DECODER.raw_decode, _DECODER.raw_decode
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

        def end_of_array() -> None:
            # after the closing ']' only whitespace may follow
            nonlocal pos
            pos += 1
            if (after := next_char()) != "":
                raise SourceError(
                    f"{name}: line {line}: {after!r} after the JSON array's closing ']'; a JSON "
                    "array source holds exactly one array (nothing was sent)"
                )

        if next_char() == "]":
            end_of_array()
            return
        while True:
            if next_char() == "":
                raise SourceError(f"{name}: the JSON array ends early after element {row} (line {line})")
            while True:
                try:
                    item, end = decode(buffer, pos)
                    # A value that reaches the end of the buffer may be cut short (a number).
                    if end < len(buffer) or eof:
                        if _too_deep(buffer, pos, end):
                            item = NestingError()
                        elif not _keys_unique(item, buffer, pos, end):
                            item, end = careful(buffer, pos)  # raises DuplicateKeyError if one repeats
                        break
                except RecursionError:
                    # deeper than Python's recursion limit: find the element's end without recursing
                    try:
                        skipped = _json_end(buffer, pos, limit=len(buffer))
                    except ValueError:
                        raise SourceError(
                            f"{name}: element {row + 1} at line {line} is not valid JSON "
                            "(brackets do not match)"
                        ) from None
                    if skipped is not None:
                        item, end = NestingError(), skipped
                        break
                    if eof:
                        raise SourceError(
                            f"{name}: element {row + 1} at line {line} is not valid JSON"
                        ) from None
                except DuplicateKeyError as exc:
                    skipped = _skip_value(buffer, pos)
                    if skipped is not None and (skipped < len(buffer) or eof):
                        item, end = exc, skipped
                        break
                    if skipped is None and eof:
                        raise SourceError(
                            f"{name}: element {row + 1} at line {line} is not valid JSON"
                        ) from None
                except json.JSONDecodeError as exc:
                    if eof:
                        raise SourceError(
                            f"{name}: element {row + 1} at line {line} is not valid JSON: {exc.msg}"
                        ) from None
                if not fill():
                    continue
            row += 1
            if isinstance(item, (DuplicateKeyError, NestingError)):
                yield row, line, _json_error(item, row, line, name)
            else:
                yield row, line, _as_item(mapping.from_dict(item, plans), row, line, name, item)
            line += buffer.count("\n", pos, end)
            pos = end
            char = next_char()
            if char == "]":
                end_of_array()
                return
            if char != ",":
                found = repr(char) if char else "the end of the file"
                raise SourceError(
                    f"{name}: expected ',' or ']' after element {row} (line {line}), found {found}"
                )
            pos += 1

    def _csv(self, handle: BinaryIO) -> Iterator[SourceRow]:
        """CSV rows; a structurally broken file raises SourceError (file, line, reason) before any row
        after the break is used, and the run sends nothing (it checks the whole source first)."""
        text = io.TextIOWrapper(handle, encoding=self._codec, newline="")
        _allow_fields_up_to_the_request_limit()
        reader = csv.reader(text, strict=True)
        name = self.name

        def broken(line: int, reason: str) -> SourceError:
            return SourceError(f"{name}: line {line}: {reason}; the file is not valid CSV, nothing was sent")

        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise broken(reader.line_num, str(exc)) from None
        if header is None:
            return
        if reader.line_num != 1:
            raise broken(1, f"the header spans lines 1-{reader.line_num} (a quote is not closed)")
        header = [column.strip() for column in header]
        plan = self.mapping.plan(header)
        width = len(header)
        build = self.mapping.build
        row, last_line = 0, reader.line_num
        while True:
            line = last_line + 1
            try:
                values = next(reader, None)
            except csv.Error as exc:
                message = str(exc)
                if "field larger than field limit" in message and reader.line_num == line:
                    # one line holding a field over m3ter's request size: that row can never be sent
                    last_line = reader.line_num
                    row += 1
                    reason = (
                        f"a field is over {MAX_BATCH_BYTES:,} characters; m3ter's request limit is "
                        f"{MAX_BATCH_BYTES:,} bytes"
                    )
                    yield row, line, RowError(row, "", reason, name, line)
                    continue
                if message == "unexpected end of data":
                    message = f"a quoted field opened on line {line} is not closed before the end of the file"
                raise broken(line, message) from None
            if values is None:
                return
            if reader.line_num != line:
                raise broken(
                    line,
                    f"the record spans lines {line}-{reader.line_num}: a quoted field holds a line break "
                    "(a stray quote merges rows); line breaks inside CSV values are refused",
                )
            last_line = reader.line_num
            if not values:
                continue
            row += 1
            if len(values) != width:
                reason = f"expected {width} fields as in the header, got {len(values)}"
                yield row, line, RowError(row, "", reason, name, line, values)
                continue
            mapped = build(values, plan)
            if isinstance(mapped, tuple):
                yield row, line, _as_item(mapped, row, line, name, dict(zip(header, values, strict=True)))
            else:
                yield row, line, mapped


class JsonTextSource(FileSource):
    """Measurements from a JSON array given as text, read element by element like a ``.json`` file:
    an element that cannot be read (nested too deeply, a key given twice) is a row error.

    :param text: the JSON text (an array of measurement objects).
    :param mapping: as for :class:`FileSource`.
    :param name: how the source is named in messages.
    """

    def __init__(self, text: str, mapping: RowMapping | None = None, name: str = "measurements") -> None:
        super().__init__(name, "json", mapping)
        self._text = text

    def _open(self) -> BinaryIO:
        return io.BufferedReader(io.BytesIO(self._text.encode("utf-8", "surrogatepass")))


def _allow_fields_up_to_the_request_limit() -> None:
    """Raise the csv module's (process-wide) field limit to m3ter's request size if it is lower.

    The default (131,072 characters) is stricter than m3ter; a larger field cannot be sent at all
    and becomes a row error.
    """
    if csv.field_size_limit() < MAX_BATCH_BYTES:
        csv.field_size_limit(MAX_BATCH_BYTES)


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
            columns = [str(column[0]) for column in cursor.description]
            build, name, row = self.mapping.build, self.name, 0
            while batch := cursor.fetchmany(self.fetch_size):
                for values in batch:
                    row += 1
                    mapped = build(values, plan)
                    if isinstance(mapped, tuple):
                        yield (
                            row,
                            None,
                            _as_item(mapped, row, None, name, dict(zip(columns, values, strict=False))),
                        )
                    else:
                        yield row, None, mapped
        finally:
            cursor.close()
            connection.close()
