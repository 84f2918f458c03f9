"""Differential test: the client's pre-flight and the emulator's asynchronous validation are two
independent implementations of m3ter's rules; for generated meters and rows they must reject the
same rows.

The emulator is sent every row with pre-flight off; the rows it later reports as
``ingest.validation.failure`` (plus those whose unknown account code it turned into a new account)
must be exactly the rows pre-flight rejects. Bounded for CI (``M3TER_DIFFERENTIAL_EXAMPLES``, 40 by
default).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.preflight import Preflight
from airflow_provider_m3ter.client.run_totals import canonical_shape, shape_of
from tests.emulator.api import Api
from tests.ingest.conftest import make_client

EXAMPLES = int(os.environ.get("M3TER_DIFFERENTIAL_EXAMPLES", "40"))
CODES = ["a", "b", "c", "d", "$x", "ñu"]
CATEGORIES = ["WHO", "WHERE", "WHAT", "OTHER", "METADATA", "MEASURE", "COST", "INCOME"]
NUMERIC = {"MEASURE", "COST", "INCOME"}
MAPS = [category.lower() for category in CATEGORIES]
KNOWN_ACCOUNTS = ["acme", "a,b"]


def _field(category: str, code: str, calculation: str | None = None) -> dict[str, Any]:
    field: dict[str, Any] = {"category": category, "code": code, "name": code}
    if category in NUMERIC:
        field["unit"] = "1"
    if calculation is not None:
        field["calculation"] = calculation
    return field


@st.composite
def calculations(draw: st.DrawFn) -> str:
    first, second = draw(st.sampled_from(CODES)), draw(st.sampled_from(CODES))
    form = draw(st.sampled_from(["{0} + {1}", "{0} == '{1}' ? 1 : 0", '"{1}" + {0}', "max({0}, 2)", "{0}*3"]))
    return form.format(first, second)


@st.composite
def meters(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for index in range(draw(st.integers(1, 2))):
        codes = draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=5, unique=True))
        split = draw(st.integers(1, len(codes)))
        data = [_field(draw(st.sampled_from(CATEGORIES)), code) for code in codes[:split]]
        derived = [
            _field(draw(st.sampled_from(["MEASURE", "WHAT"])), code, draw(calculations()))
            for code in codes[split:]
        ]
        out.append({"code": f"m{index}", "name": f"m{index}", "dataFields": data, "derivedFields": derived})
    return out


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for index in range(draw(st.integers(1, 12))):
        row: dict[str, Any] = {
            "uid": f"r{index}",
            "meter": draw(st.sampled_from(["m0", "m1", "zz"])),
            "account": draw(st.sampled_from([*KNOWN_ACCOUNTS, "new-co", "a"])),
            "ts": "2024-05-01T00:00:00Z",
        }
        for name in draw(st.lists(st.sampled_from(MAPS), max_size=4, unique=True)):
            keys = draw(st.lists(st.sampled_from(CODES), max_size=3, unique=True))
            row[name] = {key: (1.5 if name in ("measure", "cost", "income") else "v") for key in keys}
        out.append(row)
    return out


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(meter_configs=meters(), sent=rows())
def test_preflight_rejects_exactly_what_m3ter_later_reports(m3ter_emulator_server, meter_configs, sent):
    emulator = m3ter_emulator_server
    emulator.reset()
    api = Api(emulator)
    for meter in meter_configs:
        api.ok(api.post("meters", json=meter))
    for code in KNOWN_ACCOUNTS:
        api.ok(api.post("accounts", json={"code": code, "name": code, "emailAddress": "x@example.com"}))
    client = make_client(emulator)
    try:
        preflight = Preflight(client, unknown_accounts="fail")
        shapes = {row["uid"]: canonical_shape(shape_of(row)) for row in sent}
        preflight.load({shape[0] for shape in shapes.values()}, {shape[1] for shape in shapes.values()})
        verdicts = {uid: preflight.problems(shape) for uid, shape in shapes.items()}
        # m3ter's side: everything is sent (pre-flight off), then validated asynchronously
        client.submit_measurements(sent)
    finally:
        client.close()
    emulator.validate_now()
    events = api.ok(api.get("events", params={"pageSize": 100}))["data"]
    failed = {event["m3terEvent"]["uid"] for event in events}
    accounts = {a["code"] for a in api.ok(api.get("accounts", params={"pageSize": 100}))["data"]}
    created = accounts - set(KNOWN_ACCOUNTS)
    m3ter_rejects = failed | {row["uid"] for row in sent if row["account"] in created}
    preflight_rejects = {uid for uid, problems in verdicts.items() if problems}
    messages = [(e["m3terEvent"]["uid"], e["m3terEvent"]["message"]) for e in events]
    detail = {
        uid: (verdicts[uid], [m for u, m in messages if u == uid])
        for uid in preflight_rejects ^ m3ter_rejects
    }
    assert preflight_rejects == m3ter_rejects, detail
