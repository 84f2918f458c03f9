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
    letter = {
        "row": row,
        "line": line,
        "source": source,
        "errors": [{"field": error.field, "reason": error.reason} for error in errors],
        "data": None if item is None else _json_safe(item),
    }
    return json.dumps(letter) + "\n"


def _json_safe(item: Any) -> Any:
    """The rejected row's data in a JSON-safe form."""
    try:
        json.dumps(item, allow_nan=False)
        return item
    except (TypeError, ValueError):
        return repr(item)
