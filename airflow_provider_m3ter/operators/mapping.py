"""Row mapping: how flat rows (CSV records, SQL rows, flat dicts) become measurements.

A mapping names, per column, the measurement field it fills (``meter``, ``account``, ``ts``,
``ets``, ``uid`` or ``<category>.<field>``) and converts values on the way: numbers from CSV text
or SQL decimals, ISO-8601 text from datetimes, text from numbers for string categories.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from airflow_provider_m3ter.client.measurements import NUMERIC_CATEGORIES, STRING_CATEGORIES

__all__ = ["RowMapping", "SourceError", "parse_target"]

_SCALAR_TARGETS = frozenset({"meter", "account", "ts", "ets", "uid"})
_INTEGER = re.compile(r"[+-]?\d+")


class SourceError(ValueError):
    """The source as a whole cannot be read (missing file, broken JSON array, bad SQL, bad mapping).

    :param message: what is wrong, naming the file, position or column.
    """


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
