"""Normalized comparison, field-level diffs and whole-entity request bodies (no network)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client.meter_definitions import FIELD_CATEGORIES, validate_meter
from airflow_provider_m3ter.client.meter_diff import (
    comparable_meter,
    desired_comparable,
    diff_meter,
    request_body,
)

PRODUCT = "11111111-2222-4333-8444-555555555555"
GROUP = "99999999-2222-4333-8444-555555555555"


def _definition(**overrides: object):
    raw: dict = {
        "code": "api_calls",
        "name": "API calls",
        "dataFields": [
            {"category": "WHO", "code": "tier", "name": "Tier"},
            {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "{request}"},
        ],
        "derivedFields": [
            {
                "category": "MEASURE",
                "code": "billable",
                "name": "Billable",
                "unit": "1",
                "calculation": "requests",
            }
        ],
    }
    raw.update(overrides)
    meter, problems = validate_meter(raw, "test", 0)
    assert meter is not None, problems
    return meter


def _as_stored(body: dict, version: int = 3) -> dict:
    """What m3ter returns for a stored body: server attributes added, field order not guaranteed."""
    stored = {k: v for k, v in body.items() if k != "version"}
    stored["dataFields"] = list(reversed(stored["dataFields"]))
    stored.update(
        id="aaaaaaaa-0000-4000-8000-000000000001",
        version=version,
        dtCreated="2026-01-01T00:00:00Z",
        dtLastModified="2026-01-02T00:00:00Z",
        createdBy="someone",
        lastModifiedBy="someone",
    )
    return stored


def test_round_trip_through_m3ter_shows_no_difference() -> None:
    meter = _definition(customFields={"team": "platform"})
    stored = _as_stored(request_body(meter, PRODUCT))
    assert diff_meter(comparable_meter(stored), desired_comparable(meter, PRODUCT)) == []


def test_field_level_diff_lines() -> None:
    current = _as_stored(request_body(_definition(), None))
    current["dataFields"][0]["unit"] = "count"  # requests (list was reversed)
    current["dataFields"].append({"category": "WHERE", "code": "region", "name": "Region"})
    current["customFields"] = {"team": "old", "cost_centre": 7}
    desired = _definition(name="API requests", customFields={"team": "platform"})
    diff = diff_meter(comparable_meter(current), desired_comparable(desired, PRODUCT))
    assert diff == [
        'name: "API calls" -> "API requests"',
        f'productId: null -> "{PRODUCT}"',
        "dataFields[region]: removed",
        'dataFields[requests].unit: "count" -> "{request}"',
        "customFields.cost_centre: 7 -> null",
        'customFields.team: "old" -> "platform"',
    ]


def test_unmanaged_group_and_custom_fields_are_neither_diffed_nor_lost() -> None:
    current = _as_stored(request_body(_definition(), None))
    current.update(groupId=GROUP, customFields={"owner": "billing"}, futureAttribute={"kept": True})
    meter = _definition(name="Renamed")
    assert diff_meter(comparable_meter(current), desired_comparable(meter, None)) == [
        'name: "API calls" -> "Renamed"'
    ]
    body = request_body(meter, None, current)
    assert body["version"] == 3
    assert body["groupId"] == GROUP
    assert body["customFields"] == {"owner": "billing"}
    assert body["futureAttribute"] == {"kept": True}
    assert not {"id", "dtCreated", "dtLastModified", "createdBy", "lastModifiedBy"} & body.keys()
    assert body["derivedFields"] == [dict(f) for f in meter.derived_fields]


def test_managed_keys_replace_or_remove() -> None:
    current = _as_stored(request_body(_definition(), PRODUCT))
    current.update(groupId=GROUP, customFields={"owner": "billing"})
    # groupId: null and customFields: {} are managed: they clear; no product means global.
    meter = _definition(groupId=None, customFields={})
    diff = diff_meter(comparable_meter(current), desired_comparable(meter, None))
    assert diff == [
        f'productId: "{PRODUCT}" -> null',
        f'groupId: "{GROUP}" -> null',
        'customFields.owner: "billing" -> null',
    ]
    body = request_body(meter, None, current)
    assert "productId" not in body
    assert "groupId" not in body
    assert body["customFields"] == {}


def test_field_moving_between_lists_and_attribute_changes() -> None:
    current = _as_stored(request_body(_definition(), None))
    meter = _definition(
        dataFields=[
            {"category": "WHAT", "code": "tier", "name": "Tier"},
            {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "{request}"},
            {"category": "MEASURE", "code": "billable", "name": "Billable", "unit": "1"},
        ],
        derivedFields=[],
    )
    assert diff_meter(comparable_meter(current), desired_comparable(meter, None)) == [
        "dataFields[billable]: added",
        'dataFields[tier].category: "WHO" -> "WHAT"',
        "derivedFields[billable]: removed",
    ]


_code = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)


@st.composite
def _fields(draw: st.DrawFn, derived: bool) -> list[dict]:
    codes = draw(st.lists(_code, min_size=0 if derived else 1, max_size=5, unique=True))
    prefix = "d_" if derived else "f_"
    fields = []
    for code in codes:
        category = draw(st.sampled_from(FIELD_CATEGORIES))
        field = {"category": category, "code": prefix + code, "name": draw(st.text(min_size=1, max_size=20))}
        if category in {"MEASURE", "INCOME", "COST"} or draw(st.booleans()):
            field["unit"] = draw(st.sampled_from(["1", "{request}", "By", "GBy.h", "USD"]))
        if derived:
            field["calculation"] = draw(st.text(min_size=1, max_size=40).filter(str.strip))
        fields.append(field)
    return fields


@settings(max_examples=150, deadline=None)
@given(
    data_fields=_fields(False),
    derived_fields=_fields(True),
    custom=st.none() | st.dictionaries(_code, st.integers() | st.text(max_size=5), max_size=3),
    seed=st.integers(0, 1000),
)
def test_any_valid_definition_is_unchanged_after_a_round_trip(
    data_fields: list[dict], derived_fields: list[dict], custom: dict | None, seed: int
) -> None:
    raw = {"code": "m", "name": "M", "dataFields": data_fields, "derivedFields": derived_fields}
    if custom is not None:
        raw["customFields"] = custom
    meter, problems = validate_meter(raw, "prop", 0)
    assert meter is not None, problems
    stored = _as_stored(request_body(meter, PRODUCT))
    random.Random(seed).shuffle(stored["derivedFields"])
    for item in stored["dataFields"]:
        item.setdefault("unit", None)  # servers may spell "no unit" as null
    assert diff_meter(comparable_meter(stored), desired_comparable(meter, PRODUCT)) == []
    # And a changed name is always seen.
    assert diff_meter(comparable_meter({**stored, "name": "other"}), desired_comparable(meter, PRODUCT))


def test_plan_table_and_xcom_form() -> None:
    from airflow_provider_m3ter.client.meter_sync import MeterChange, MeterPlan

    plan = MeterPlan(
        [
            MeterChange("api_calls", "update", ['name: "a" -> "b"', "dataFields[region]: added"]),
            MeterChange("storage", "create", ["new meter: 1 data field(s), 0 derived field(s), global"]),
            *[MeterChange(f"m{i}", "unchanged") for i in range(3)],
            MeterChange("legacy", "blocked", ["not in the definitions, but used by ..."], aggregations=["x"]),
        ],
        delete_missing=True,
    )
    assert plan.format_table(max_unchanged=2).splitlines() == [
        "Meter sync plan: 1 create, 1 update, 3 unchanged, 0 delete, 1 blocked",
        "ACTION     METER       CHANGES",
        'update     api_calls   name: "a" -> "b"',
        "                       dataFields[region]: added",
        "create     storage     new meter: 1 data field(s), 0 derived field(s), global",
        "blocked    legacy      not in the definitions, but used by ...",
        "unchanged  (3 meters)  m0, m1 and 1 more",
    ]
    assert plan.writes == 2
    assert plan.to_dict() == {
        "summary": {"create": 1, "update": 1, "unchanged": 3, "delete": 0, "blocked": 1},
        "create": ["storage"],
        "update": {"api_calls": ['name: "a" -> "b"', "dataFields[region]: added"]},
        "unchanged": ["m0", "m1", "m2"],
        "delete": [],
        "blocked": {"legacy": ["x"]},
    }
