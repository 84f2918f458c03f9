"""Reconciliation: compare what an ingest run sent with what m3ter's own usage query counts.

An ingest run's summary carries ``totals`` (per meter, account and numeric field: sum and count; see
:mod:`~airflow_provider_m3ter.client.run_totals`). :func:`check_reconciliation` asks m3ter's Data
Explorer (``POST /organizations/{orgId}/usage/query``, operation ``PostUsageDataQuery``) for the
same totals over the run's period and compares them:

- equal (sums within a relative 1e-9, counts exactly): succeeded;
- different before ``settle_until``: pending (m3ter processes measurements asynchronously);
- different after it: failed, naming every meter/account/field that differs and by how much.

What it proves: with ``allow_other_writers=False`` (default), that m3ter holds exactly the run's
count and sum for every meter/account/field it sent, which is a proof that m3ter counted the run's
measurements only when nothing else writes to those meters and accounts in that period; any other
writer's usage makes it fail. With ``allow_other_writers=True`` it checks that m3ter holds *at
least* the run's count (and, for non-negative values, sum): other writers no longer fail it, but a
loss of the run's own measurements can then be masked by another writer's.

m3ter does not document the usage query's row layout. The provider assumes one row per meter and
account with ``meterId``, ``accountId`` (or ``account``) and each aggregation under
``"<fieldCode>:<FUNCTION>"``; a row without them fails the check rather than being guessed at.

Data Explorer allows 1 request/s with bursts of 10: one check makes one query (more only when m3ter
reports ``hasMoreData``, then one per meter), spaced at least a second apart.

Plain Python, no Airflow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_m3ter.client.jobs import CheckResult

__all__ = ["ReconciliationError", "check_reconciliation", "compare_totals", "format_table", "usage_totals"]

#: Data Explorer's sustained rate: at most one query per this many seconds within one check.
QUERY_SPACING_SECONDS = 1.0
MAX_LIMIT = 20_000
REL_TOL = 1e-9
MAX_REPORTED = 1000


class ReconciliationError(ValueError):
    """The comparison cannot be made (m3ter's answer unreadable, totals missing or truncated)."""


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value)
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ReconciliationError(f"not an ISO-8601 date-time: {text!r}") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _iso(value: Any) -> str:
    return _moment(value).isoformat().replace("+00:00", "Z")


def usage_totals(
    client: Any,
    expected: Mapping[str, Mapping[str, Mapping[str, Any]]],
    start: Any,
    end: Any,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[dict[str, dict[str, dict[str, list[float]]]], int]:
    """m3ter's sum and count of every meter/account/field in ``expected``, over ``[start, end)``.

    :param client: an :class:`~airflow_provider_m3ter.client.M3terClient`.
    :param expected: run totals ``{meter: {account: {"measure.requests": [sum, count], ...}}}``.
    :param start: inclusive start (datetime or ISO-8601).
    :param end: exclusive end (datetime or ISO-8601).
    :param sleep: how to wait between queries (tests inject it).
    :return: ``({meter: {account: {field: [sum, count]}}}, usage queries made)``.
    :raises ReconciliationError: m3ter's rows cannot be read.
    :raises M3terError: a call failed (see the client's errors).
    """
    meters = client.find_meters_by_codes(list(expected))
    accounts_wanted = sorted({account for per in expected.values() for account in per})
    accounts = client.find_accounts_by_codes(accounts_wanted) if accounts_wanted else {}
    code_of_account = {item["id"]: code for code, item in accounts.items()}
    actual: dict[str, dict[str, dict[str, list[float]]]] = {}
    plans: list[tuple[str, dict[str, Any], dict[str, str]]] = []  # meter code, meter, fieldCode -> field
    for code, per_account in expected.items():
        meter = meters.get(code)
        if meter is None:
            continue  # m3ter has no such meter: it holds nothing for it
        fields = sorted({field for totals in per_account.values() for field in totals if "." in field})
        plans.append((code, meter, {field.split(".", 1)[1]: field for field in fields}))
    account_ids = sorted(code_for for code_for in code_of_account)
    if not plans or not account_ids:
        return actual, 0
    calls = 0
    last: float | None = None

    def query(chosen: list[tuple[str, dict[str, Any], dict[str, str]]]) -> dict[str, Any]:
        nonlocal calls, last
        if last is not None:
            wait = QUERY_SPACING_SECONDS - (time.monotonic() - last)
            if wait > 0:
                sleep(wait)
        body = {
            "startDate": _iso(start),
            "endDate": _iso(end),
            "meterIds": [meter["id"] for _code, meter, _fields in chosen],
            "accountIds": account_ids,
            "aggregations": [
                {
                    "meterId": meter["id"],
                    "fieldCode": field_code,
                    "fieldType": "MEASURE",
                    "function": function,
                }
                for _code, meter, fields in chosen
                for field_code in fields
                for function in ("SUM", "COUNT")
            ],
            "groups": [{"groupType": "ACCOUNT"}],
            "limit": MAX_LIMIT,
        }
        calls += 1
        answer = client.request("POST", "usage/query", json=body)
        last = time.monotonic()
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise ReconciliationError("m3ter's usage query answered without a data list")
        return answer

    batches = [plans]
    while batches:
        chosen = batches.pop(0)
        answer = query(chosen)
        if answer.get("hasMoreData"):
            if len(chosen) == 1:
                raise ReconciliationError(
                    f"m3ter's usage query has more than {MAX_LIMIT} rows for meter {chosen[0][0]!r}; "
                    "reconcile fewer accounts per run"
                )
            batches = [[plan] for plan in chosen] + batches
            continue
        by_id = {meter["id"]: (code, fields) for code, meter, fields in chosen}
        for row in answer["data"]:
            _read_row(row, by_id, code_of_account, actual)
    return actual, calls


def _read_row(
    row: Any,
    by_id: dict[str, tuple[str, dict[str, str]]],
    code_of_account: dict[str, str],
    actual: dict[str, dict[str, dict[str, list[float]]]],
) -> None:
    if not isinstance(row, dict) or row.get("meterId") not in by_id:
        raise ReconciliationError(f"cannot read a usage query row (no known meterId): {str(row)[:200]}")
    code, fields = by_id[row["meterId"]]
    account = code_of_account.get(str(row.get("accountId"))) or row.get("account")
    if not isinstance(account, str):
        raise ReconciliationError(f"cannot read a usage query row (no account): {str(row)[:200]}")
    per = actual.setdefault(code, {}).setdefault(account, {})
    for field_code, field in fields.items():
        total, count = row.get(f"{field_code}:SUM"), row.get(f"{field_code}:COUNT")
        if count is None and total is None:
            continue
        if not isinstance(count, (int, float)) or (total is not None and not isinstance(total, (int, float))):
            raise ReconciliationError(
                f"cannot read {field_code}:SUM/COUNT of a usage query row: {str(row)[:200]}"
            )
        pair = per.setdefault(field, [0, 0])
        pair[0] += total or 0
        pair[1] += int(count)


def compare_totals(
    expected: Mapping[str, Mapping[str, Mapping[str, Any]]],
    actual: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    allow_other_writers: bool = False,
) -> list[dict[str, Any]]:
    """One row per meter/account/field the run sent: sent and m3ter's sum and count, and ``ok``.

    :param expected: the run's totals.
    :param actual: m3ter's totals (from :func:`usage_totals`).
    :param allow_other_writers: m3ter may hold more than the run sent (see the module docstring).
    """
    rows: list[dict[str, Any]] = []
    for meter in sorted(expected):
        for account in sorted(expected[meter]):
            for field in sorted(f for f in expected[meter][account] if "." in f):
                sent_sum, sent_count = expected[meter][account][field]
                got_sum, got_count = actual.get(meter, {}).get(account, {}).get(field, [0, 0])
                close = math.isclose(got_sum, sent_sum, rel_tol=REL_TOL, abs_tol=REL_TOL)
                if allow_other_writers:
                    ok = got_count >= sent_count and (close or got_sum >= sent_sum)
                else:
                    ok = got_count == sent_count and close
                rows.append(
                    {
                        "meter": meter,
                        "account": account,
                        "field": field,
                        "sent_sum": sent_sum,
                        "m3ter_sum": got_sum,
                        "sent_count": sent_count,
                        "m3ter_count": got_count,
                        "ok": ok,
                    }
                )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a fixed-width text table (one line per meter/account/field).

    :param rows: output of :func:`compare_totals`.
    """
    head = ("meter", "account", "field", "sent sum", "m3ter sum", "sent n", "m3ter n", "")
    lines = [
        (
            r["meter"],
            r["account"],
            r["field"],
            f"{r['sent_sum']:g}",
            f"{r['m3ter_sum']:g}",
            str(r["sent_count"]),
            str(r["m3ter_count"]),
            "ok" if r["ok"] else "DIFFERS",
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(head, *lines, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *lines])  # fmt: skip


def _difference(row: dict[str, Any]) -> str:
    return (
        f"{row['meter']}/{row['account']}/{row['field']}: "
        f"sent sum {row['sent_sum']:g} over {row['sent_count']}, "
        f"m3ter has {row['m3ter_sum']:g} over {row['m3ter_count']} "
        f"(difference {row['m3ter_sum'] - row['sent_sum']:+g}, {row['m3ter_count'] - row['sent_count']:+d})"
    )


def check_reconciliation(
    client: Any,
    summary: Mapping[str, Any],
    start: Any,
    end: Any,
    *,
    settle_until: float,
    allow_other_writers: bool = False,
    now: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """Compare an ingest run's totals with m3ter's usage query once (see the module docstring).

    :param client: an :class:`~airflow_provider_m3ter.client.M3terClient`.
    :param summary: the ingest operator's summary (its ``totals``, ``ts_min`` and ``ts_max``).
    :param start: inclusive start of the period (datetime or ISO-8601).
    :param end: exclusive end of the period.
    :param settle_until: epoch seconds until which a difference means "not yet" rather than "wrong".
    :param allow_other_writers: m3ter may hold more than the run sent.
    :param now: the current epoch time (default: ``time.time()``).
    :param sleep: how to wait between queries.
    :raises ReconciliationError: the summary has no totals, or the run sent outside the period.
    """
    totals = summary.get("totals")
    if not isinstance(totals, Mapping):
        raise ReconciliationError(
            "the ingest summary has no totals (too many meter/account pairs to keep, or an older provider)"
        )
    lo, hi = _iso(start), _iso(end)
    for name in ("ts_min", "ts_max"):
        ts = summary.get(name)
        if ts and not _moment(lo) <= _moment(ts) < _moment(hi):
            raise ReconciliationError(
                f"the run sent measurements with ts {ts} outside the period [{lo}, {hi}); give the "
                "sensor a start and end that cover the run's ts_min and ts_max"
            )
    actual, calls = usage_totals(client, totals, lo, hi, sleep=sleep)
    rows = compare_totals(totals, actual, allow_other_writers=allow_other_writers)
    different = [row for row in rows if not row["ok"]]
    detail = {
        "start": lo,
        "end": hi,
        "compared": len(rows),
        "different": len(different),
        "queries": calls,
        "allow_other_writers": allow_other_writers,
        "table": rows[:MAX_REPORTED],
    }
    if not different:
        return CheckResult(
            "succeeded", f"m3ter's usage equals what the run sent ({len(rows)} meter/account/fields)", detail
        )
    current = time.time() if now is None else now
    listed = "; ".join(_difference(row) for row in different[:MAX_REPORTED])
    more = f" (and {len(different) - MAX_REPORTED} more)" if len(different) > MAX_REPORTED else ""
    if current < settle_until:
        return CheckResult(
            "pending", f"{len(different)} of {len(rows)} still differ; waiting for m3ter", detail
        )
    return CheckResult(
        "failed",
        f"m3ter's usage differs from what the run sent in {len(different)} of {len(rows)} "
        f"meter/account/fields after settling: {listed}{more}",
        detail,
    )
