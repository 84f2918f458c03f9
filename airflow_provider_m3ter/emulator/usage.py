"""The Data Explorer usage query (``POST /organizations/{orgId}/usage/query``, operation
``PostUsageDataQuery``, tag DataExplorerV2) over the measurements the emulator holds.

Followed: m3ter's OpenAPI spec (``UsageQueryRequest``/``UsageQueryResponse``). What the spec leaves
open and this emulator chooses (documented in the README):

- ``startDate``/``endDate`` are required (the spec's description says so); both filter on ``ts``.
- Only measurements that passed the asynchronous validation are visible, and only once validated.
- Without aggregations each row is a stored measurement plus ``meterId`` and ``accountId``.
- With aggregations each row is one group: ``meterId`` and ``meter`` (code), the group keys
  (``accountId`` and ``account`` for ACCOUNT; the field code for DIMENSION; ``startDate`` and
  ``endDate`` of the bucket for TIME) and one value per aggregation under ``"<fieldCode>:<FUNCTION>"``.
- Rows come most recently received first; ``limit`` (1-20,000, default 20,000) truncates and sets
  ``hasMoreData``.
- Aggregations of derived fields are refused (400): the emulator does not evaluate calculations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_m3ter.emulator.errors import bad_request
from airflow_provider_m3ter.emulator.schema import parse_datetime

MAX_LIMIT = 20_000
MEASURE_FUNCTIONS = ("SUM", "MIN", "MAX", "COUNT", "LATEST", "MEAN")
DIMENSION_FUNCTIONS = ("COUNT", "UNIQUE")
FREQUENCIES = ("DAY", "HOUR", "WEEK", "MONTH", "QUARTER")
NUMERIC_MAPS = ("measure", "cost", "income")
STRING_MAPS = ("who", "where", "what", "other", "metadata")
_KNOWN = {
    "startDate",
    "endDate",
    "meterIds",
    "accountIds",
    "dimensionFilters",
    "aggregations",
    "groups",
    "limit",
}


class UsageBucket:
    """Data Explorer's own limit: a token bucket of ``burst`` requests refilled at ``rate`` per second.

    :param rate: requests per second sustained.
    :param burst: requests allowed at once.
    """

    def __init__(self, rate: float = 1.0, burst: int = 10) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        """Admit one request at ``now`` (monotonic seconds) or refuse it (no token spent).

        :param now: the current monotonic time.
        """
        if self.stamp is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _date(body: dict[str, Any], name: str) -> datetime:
    value = body.get(name)
    if value is None:
        raise bad_request(f"{name}: is required (the usage query needs a time period)")
    moment = parse_datetime(value) if isinstance(value, str) else None
    if moment is None:
        raise bad_request(f"{name}: must be an ISO-8601 date-time, got {value!r}")
    return _utc(moment)


def _strings(body: dict[str, Any], name: str) -> set[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_request(f"{name}: must be an array of strings")
    return set(value)


def _meter_field(item: Any, where: str, meters: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
    if not isinstance(item, dict):
        raise bad_request(f"{where}: must be an object")
    meter_id, code = item.get("meterId"), item.get("fieldCode")
    if not isinstance(meter_id, str) or not meter_id:
        raise bad_request(f"{where}.meterId: is required")
    if not isinstance(code, str) or not code:
        raise bad_request(f"{where}.fieldCode: is required")
    meter = meters.get(meter_id)
    if meter is None:
        raise bad_request(f"{where}.meterId: no meter has the id {meter_id!r}")
    for field in meter.get("dataFields", []):
        if field["code"] == code:
            return meter, code, field["category"]
    for field in meter.get("derivedFields", []):
        if field["code"] == code:
            raise bad_request(
                f"{where}.fieldCode: {code!r} is a derived field; the emulator does not evaluate calculations"
            )
    raise bad_request(f"{where}.fieldCode: {code!r} is not a field of meter {meter['code']!r}")


def _bucket(moment: datetime, frequency: str) -> tuple[datetime, datetime]:
    if frequency == "HOUR":
        start = moment.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if frequency == "DAY":
        return day, day + timedelta(days=1)
    if frequency == "WEEK":  # ISO weeks, Monday first
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    months = 1 if frequency == "MONTH" else 3
    first_month = moment.month if months == 1 else 3 * ((moment.month - 1) // 3) + 1
    start = day.replace(month=first_month, day=1)
    nxt = first_month + months
    end = start.replace(year=start.year + (nxt - 1) // 12, month=(nxt - 1) % 12 + 1)
    return start, end


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _value_of(m: dict[str, Any], maps: Iterable[str], code: str) -> Any:
    for name in maps:
        values = m.get(name)
        if values and code in values:
            return values[code]
    return None


class _Aggregate:
    """One aggregation's running state within one group."""

    __slots__ = ("count", "function", "latest", "latest_key", "maximum", "minimum", "total", "unique")

    def __init__(self, function: str) -> None:
        self.function = function
        self.count = 0
        self.total: list[float] = []
        self.minimum: Any = None
        self.maximum: Any = None
        self.latest: Any = None
        self.latest_key: tuple[datetime, int] | None = None
        self.unique: set[Any] = set()

    def add(self, value: Any, when: datetime, seq: int) -> None:
        self.count += 1
        if self.function in ("SUM", "MEAN"):
            self.total.append(value)
        elif self.function == "MIN":
            self.minimum = value if self.minimum is None else min(self.minimum, value)
        elif self.function == "MAX":
            self.maximum = value if self.maximum is None else max(self.maximum, value)
        elif self.function == "LATEST":
            key = (when, seq)
            if self.latest_key is None or key > self.latest_key:
                self.latest, self.latest_key = value, key
        elif self.function == "UNIQUE":
            self.unique.add(value)

    def result(self) -> Any:
        function = self.function
        if function == "COUNT":
            return self.count
        if function == "SUM":
            total = math.fsum(self.total)
            return int(total) if all(type(v) is int for v in self.total) else total
        if function == "MEAN":
            return math.fsum(self.total) / len(self.total) if self.total else None
        if function == "MIN":
            return self.minimum
        if function == "MAX":
            return self.maximum
        if function == "LATEST":
            return self.latest
        return len(self.unique)


def run_query(
    body: Any,
    measurements: Iterable[tuple[int, dict[str, Any]]],
    meters: dict[str, dict[str, Any]],
    account_ids: dict[str, str],
) -> dict[str, Any]:
    """Answer one usage query: ``{"data": [...], "hasMoreData": bool}``.

    :param body: the decoded request body.
    :param measurements: ``(arrival sequence, measurement)`` of every visible measurement.
    :param meters: every meter by id.
    :param account_ids: account ids by account code.
    :raises ApiError: 400 for a body the query cannot run.
    """
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise bad_request(f"{unknown[0]}: is not a field of the usage query")
    start, end = _date(body, "startDate"), _date(body, "endDate")
    if end <= start:
        raise bad_request("endDate: must be after startDate")
    limit = body.get("limit", MAX_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"limit: must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    meter_ids, wanted_accounts = _strings(body, "meterIds"), _strings(body, "accountIds")
    by_code = {meter["code"]: meter for meter in meters.values()}
    dim_filters: dict[str, list[tuple[str, set[str]]]] = {}
    for index, item in enumerate(body.get("dimensionFilters") or []):
        meter, code, category = _meter_field(item, f"dimensionFilters[{index}]", meters)
        values = item.get("values")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise bad_request(f"dimensionFilters[{index}].values: must be a non-empty array of strings")
        if category.lower() not in STRING_MAPS:
            raise bad_request(f"dimensionFilters[{index}].fieldCode: {code!r} is not a dimension field")
        dim_filters.setdefault(meter["id"], []).append((code, set(values)))
    aggregations: list[tuple[str, str, str, str]] = []  # meterId, fieldCode, category map, function
    for index, item in enumerate(body.get("aggregations") or []):
        meter, code, category = _meter_field(item, f"aggregations[{index}]", meters)
        field_type, function = item.get("fieldType"), item.get("function")
        if field_type not in ("MEASURE", "DIMENSION"):
            raise bad_request(f"aggregations[{index}].fieldType: must be MEASURE or DIMENSION")
        numeric = category.lower() in NUMERIC_MAPS
        if numeric != (field_type == "MEASURE"):
            raise bad_request(
                f"aggregations[{index}].fieldType: {code!r} is a {category} field, not {field_type}"
            )
        allowed = MEASURE_FUNCTIONS if field_type == "MEASURE" else DIMENSION_FUNCTIONS
        if function not in allowed:
            raise bad_request(
                f"aggregations[{index}].function: {field_type} fields take {', '.join(allowed)}"
            )
        aggregations.append((meter["id"], code, category.lower(), function))
    groups = body.get("groups") or []
    if groups and not aggregations:
        raise bad_request("groups: grouping needs at least one aggregation")
    by_account = False
    dim_groups: list[tuple[str, str]] = []
    frequency: str | None = None
    for index, group in enumerate(groups):
        kind = group.get("groupType") if isinstance(group, dict) else None
        if kind == "ACCOUNT":
            by_account = True
        elif kind == "DIMENSION":
            meter, code, category = _meter_field(group, f"groups[{index}]", meters)
            dim_groups.append((meter["id"], code))
        elif kind == "TIME":
            frequency = group.get("frequency")
            if frequency not in FREQUENCIES:
                raise bad_request(f"groups[{index}].frequency: must be one of {', '.join(FREQUENCIES)}")
        else:
            raise bad_request(f"groups[{index}].groupType: must be ACCOUNT, DIMENSION or TIME")

    selected: list[tuple[int, dict[str, Any], dict[str, Any], datetime]] = []
    for seq, m in measurements:
        found = by_code.get(m["meter"])
        if found is None or (meter_ids is not None and found["id"] not in meter_ids):
            continue
        meter = found
        account_id = account_ids.get(m["account"])
        if wanted_accounts is not None and account_id not in wanted_accounts:
            continue
        when = parse_datetime(m["ts"])
        if when is None:
            continue
        when = _utc(when)
        if not start <= when < end:
            continue
        filters = dim_filters.get(meter["id"])
        if filters and not all(_value_of(m, STRING_MAPS, code) in values for code, values in filters):
            continue
        selected.append((seq, m, meter, when))
    selected.sort(key=lambda item: item[0], reverse=True)  # most recently received first

    if not aggregations:
        rows = [
            {**m, "meterId": meter["id"], "accountId": account_ids.get(m["account"])}
            for _seq, m, meter, _when in selected[: limit + 1]
        ]
        return {"data": rows[:limit], "hasMoreData": len(rows) > limit}

    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}
    order: list[tuple[Any, ...]] = []
    for seq, m, meter, when in selected:
        mine = [agg for agg in aggregations if agg[0] == meter["id"]]
        if not mine:
            continue
        key: list[Any] = [meter["id"]]
        row: dict[str, Any] = {"meterId": meter["id"], "meter": meter["code"]}
        if by_account:
            key.append(m["account"])
            row["accountId"] = account_ids.get(m["account"])
            row["account"] = m["account"]
        for group_meter, code in dim_groups:
            value = _value_of(m, STRING_MAPS, code) if group_meter == meter["id"] else None
            key.append((code, value))
            row[code] = value
        if frequency is not None:
            lo, hi = _bucket(when, frequency)
            key.append(lo)
            row["startDate"], row["endDate"] = _iso(lo), _iso(hi)
        group_key = tuple(key)
        entry = grouped.get(group_key)
        if entry is None:
            entry = {"row": row, "aggs": {(code, fn): _Aggregate(fn) for _mid, code, _cat, fn in mine}}
            grouped[group_key] = entry
            order.append(group_key)
        for _mid, code, category, function in mine:
            value = (m.get(category) or {}).get(code)
            if value is not None:
                entry["aggs"][(code, function)].add(value, when, seq)
    rows = []
    for group_key in order[: limit + 1]:
        entry = grouped[group_key]
        row = dict(entry["row"])
        for (code, function), aggregate in entry["aggs"].items():
            row[f"{code}:{function}"] = aggregate.result()
        rows.append(row)
    return {"data": rows[:limit], "hasMoreData": len(rows) > limit}
