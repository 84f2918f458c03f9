"""Dead letters: the rows an ingest run rejected, as JSON Lines (``on_invalid="skip"``).

Each line says where the row was (``row``, ``line``, ``source``), why it was rejected (``errors``)
and what it held (``data``, in a JSON-safe form), so the rows can be fixed and loaded again.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from airflow_provider_m3ter.client.measurements import RowError

__all__ = ["dead_letter", "open_dead_letters"]


def open_dead_letters(target: Any, namespace: str) -> tuple[IO[str], str]:
    """Open the dead-letter file for writing (overwriting it).

    :param target: a path, or anything with ``open()``; None picks
        ``<temp dir>/m3ter-dead-letters/<namespace>-<pid>.jsonl``.
    :param namespace: the run's uid namespace (names the default file).
    :return: the open text file and its name for the summary.
    """
    if target is None:
        name = f"{namespace}-{os.getpid()}.jsonl"
        target = Path(tempfile.gettempdir()) / "m3ter-dead-letters" / name
    if isinstance(target, (str, os.PathLike)):
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
    return target.open("w", encoding="utf-8"), str(target)


def dead_letter(row: int, line: int | None, source: str | None, errors: list[RowError], item: Any) -> str:
    """One dead-letter line (with its newline) for a rejected row.

    :param row: 1-based row number in the source.
    :param line: 1-based line in the file, if known.
    :param source: a name for the source, if known.
    :param errors: why the row was rejected.
    :param item: the row's data, or None when it could not be read.
    """
    letter: dict[str, Any] = {
        "row": row,
        "line": line,
        "source": source,
        "errors": [{"field": error.field, "reason": error.reason} for error in errors],
        "data": None,
    }
    if item is not None:
        try:
            letter["data"] = _json_safe(item)
            return json.dumps(letter) + "\n"
        except (RecursionError, MemoryError, TypeError, ValueError) as exc:
            # writing a dead letter never fails: without the data, saying why
            letter["data"] = None
            letter["data_unwritable"] = f"the row's data cannot be written as JSON ({type(exc).__name__})"
    return json.dumps(letter) + "\n"


def _json_safe(item: Any) -> Any:
    """The rejected row's data in a JSON-safe form (its ``repr`` when JSON cannot hold it).

    :raises RecursionError: the data nests deeper than Python can walk (the caller drops it).
    """
    try:
        json.dumps(item, allow_nan=False)
        return item
    except (TypeError, ValueError):
        pass
    if isinstance(item, dict):  # a row as read (SQL values: Decimal, datetime, ...): each as text
        return {str(key): _json_value(value) for key, value in item.items()}
    if isinstance(item, (list, tuple)):
        return [_json_value(value) for value in item]
    return repr(item)


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)
