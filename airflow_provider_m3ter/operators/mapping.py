"""Row mapping: how flat rows (CSV records, SQL rows, flat dicts) become measurements.

A mapping names, per column, the measurement field it fills (``meter``, ``account``, ``ts``,
``ets``, ``uid`` or ``<category>.<field>``) and converts values on the way: numbers from CSV text
or SQL decimals, ISO-8601 text from datetimes, text from numbers for string categories.

Numbers are converted exactly or refused: numeric text must be ASCII decimal notation
(``-12``, ``3.5``, ``1e-3``; no ``1_000``, no ``+-``, no non-ASCII digits such as Arabic-Indic or
fullwidth ones, no ``NaN``/``Infinity``), integers must lie within +-2**53 (what a 64-bit float holds
exactly), and a value that would overflow to infinity or underflow to zero is refused. Every
conversion problem is a row error naming its field, never a crash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from airflow_provider_m3ter.client.measurements import (
    MAX_EXACT_INTEGER,
    NUMERIC_CATEGORIES,
    STRING_CATEGORIES,
)

__all__ = ["RowMapping", "SourceError", "parse_target"]

_SCALAR_TARGETS = frozenset({"meter", "account", "ts", "ets", "uid"})
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_NONZERO_MANTISSA = re.compile(r"[+-]?0*\.?0*[1-9]", re.ASCII)


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


class ConversionError(ValueError):
    """A value that cannot become what its field needs (the message says why)."""


def _checked_float(value: float, shown: Any, nonzero: bool) -> float:
    if math.isfinite(value) and not -MAX_EXACT_INTEGER < value < MAX_EXACT_INTEGER:
        # whatever the notation (9007199254740993.0, 1e16, a Decimal with a fraction): a 64-bit float
        # holds no fraction there and skips integers, so the value may already be rounded
        raise ConversionError(
            f"{shown!s:.40} is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly"
        )
    if math.isnan(value):
        raise ConversionError("NaN is not a number m3ter accepts")
    if not math.isfinite(value):
        raise ConversionError(f"{shown!s:.40} is too large for a 64-bit floating-point number")
    if value == 0.0 and nonzero:
        raise ConversionError(
            f"{shown!s:.40} is too small for a 64-bit floating-point number (it would become 0)"
        )
    return value


def _checked_int(value: int, shown: Any) -> int:
    if not -MAX_EXACT_INTEGER <= value <= MAX_EXACT_INTEGER:
        raise ConversionError(
            f"{shown!s:.40} is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly"
        )
    return value


def _to_number(value: Any) -> Any:
    """Numbers from CSV text or SQL types; raise ConversionError for anything not exactly a number."""
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            if len(text.lstrip("+-0")) > 16:  # more digits than 2**53 has: refuse before int()
                raise ConversionError(
                    f"{text:.40} is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly"
                )
            return _checked_int(int(text), text)
        if not _DECIMAL.fullmatch(text):
            raise ConversionError(f"not a number in ASCII decimal notation: {value[:40]!r}")
        return _checked_float(float(text), text, bool(_NONZERO_MANTISSA.match(text)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ConversionError(f"{value} is not a finite number")
        if value == value.to_integral_value():
            if value.adjusted() > 16:
                raise ConversionError(
                    f"{value} is beyond +-2**53, so a 64-bit floating-point number cannot hold it exactly"
                )
            return _checked_int(int(value), value)
        return _checked_float(float(value), value, value != 0)
    if type(value) is int:
        return _checked_int(value, value)
    if type(value) is float:
        return _checked_float(value, value, False)
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
        try:
            moment = value.astimezone(timezone.utc)
        except OverflowError:
            raise ConversionError(f"{value.isoformat()} is outside the years 0001-9999 in UTC") from None
        return moment.isoformat().replace("+00:00", "Z")
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
        claimed: dict[tuple[str, str | None], str] = {}
        for column, target in (self.mapping or {}).items():
            try:
                parsed = self._targets[column] = parse_target(target)
            except ValueError as exc:
                raise SourceError(f"mapping for column {column!r}: {exc}") from None
            if parsed in claimed:  # two columns for one field: which value is meant is ambiguous
                raise SourceError(
                    f"mapping: columns {claimed[parsed]!r} and {column!r} both map to {target!r}; "
                    "map exactly one column to each field"
                )
            claimed[parsed] = column

    def plan(self, columns: Iterable[str]) -> list[tuple[int, str, str | None, str] | None]:
        """For a fixed list of columns, where each goes: ``(index, field, key, column)`` or None."""
        plan: list[tuple[int, str, str | None, str] | None] = []
        seen: set[str] = set()
        for index, column in enumerate(columns):
            # A column named twice (CSV header, SQL result) is refused when it is used: either
            # value could be the meant one, and the later would silently win.
            if column in seen and (self.mapping is None or column in self._targets):
                raise SourceError(
                    f"column {column!r} appears more than once in the source's columns; "
                    "which value is meant is ambiguous (rename one)"
                )
            seen.add(column)
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
            try:
                if key is None:
                    m[field] = _to_timestamp(value) if field in ("ts", "ets") else _to_code(value)
                    continue
                value = _to_number(value) if field in NUMERIC_CATEGORIES else _to_text(value)
            except ConversionError as exc:
                return (field if key is None else f"{field}.{key}"), str(exc)
            except (ArithmeticError, ValueError, TypeError) as exc:  # any other value that will not convert
                reason = f"cannot convert {type(value).__name__} value: {exc}"
                return (field if key is None else f"{field}.{key}"), reason
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
