"""Loading and validating meter definitions: every source form, every rule, all errors at once."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_provider_m3ter.client.meter_definitions import (
    FIELD_CATEGORIES,
    MeterDefinition,
    MeterDefinitionError,
    load_meter_definitions,
    validate_meter,
)

API_CALLS_YAML = """\
meters:
  - code: api_calls
    name: API calls
    product: api_platform
    dataFields:
      - {category: WHO, code: customer_tier, name: Customer tier}
      - {category: MEASURE, code: requests, name: Requests, unit: "{request}"}
    derivedFields:
      - category: MEASURE
        code: billable_requests
        name: Billable requests
        unit: "{request}"
        calculation: |
          requests * 1
    customFields: {team: platform, tier: 2}
"""

STORAGE_JSON = [
    {
        "code": "storage",
        "name": "Storage",
        "groupId": None,
        "dataFields": [{"category": "MEASURE", "code": "gb_hours", "name": "GB hours", "unit": "GBy.h"}],
    }
]


def _meter(code: str = "m", **overrides: object) -> dict:
    base: dict = {
        "code": code,
        "name": "Meter",
        "dataFields": [{"category": "MEASURE", "code": "units", "name": "Units", "unit": "{unit}"}],
    }
    base.update(overrides)
    return base


def _problems(exc: pytest.ExceptionInfo[MeterDefinitionError]) -> set[tuple[str, str | None, str | None]]:
    return {(p.source, p.meter, p.field) for p in exc.value.problems}


@pytest.fixture
def meters_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "meters"
    folder.mkdir()
    (folder / "a_api.yaml").write_text(API_CALLS_YAML)
    (folder / "b_storage.json").write_text(json.dumps(STORAGE_JSON))
    (folder / "notes.txt").write_text("ignored: not a definition file")
    return folder


def test_directory_glob_file_and_python_forms_load_the_same_meters(meters_dir: Path) -> None:
    from_dir = load_meter_definitions("meters", base_dir=meters_dir.parent)
    from_glob = load_meter_definitions("meters/*.*", base_dir=meters_dir.parent)
    from_files = load_meter_definitions(
        [meters_dir / "a_api.yaml", str(meters_dir / "b_storage.json")], base_dir="/nonexistent"
    )
    assert [m.code for m in from_dir] == ["api_calls", "storage"]
    assert from_glob[0] == from_dir[0]
    # Same meters; only the source label differs (absolute paths are named in full).
    assert [replace(m, source="") for m in from_files] == [replace(m, source="") for m in from_dir]
    assert from_files[1].source == str(meters_dir / "b_storage.json")
    api, storage = from_dir
    assert api.product == "api_platform"
    assert api.product_id is None
    assert api.custom_fields == {"team": "platform", "tier": 2}
    assert api.source == "meters/a_api.yaml"
    # The block scalar's trailing newline is not part of the calculation.
    assert api.derived_fields[0]["calculation"] == "requests * 1"
    # WHO fields need no unit and none is invented.
    assert "unit" not in api.data_fields[0]
    assert storage.manages_group is True
    assert storage.group_id is None
    assert storage.custom_fields is None
    assert api.manages_group is False

    python = load_meter_definitions([*STORAGE_JSON, _meter("other")])
    assert python[0] == MeterDefinition(
        code="storage",
        name="Storage",
        data_fields=({"category": "MEASURE", "code": "gb_hours", "name": "GB hours", "unit": "GBy.h"},),
        manages_group=True,
        source="definitions[0]",
    )
    assert python[1].code == "other"


def test_every_problem_is_reported_at_once_naming_file_meter_and_field(tmp_path: Path) -> None:
    bad = [
        _meter(
            "api_calls",
            dataFields=[
                {"category": "MEASURE", "code": "requests", "name": "Requests"},  # no unit
                {"category": "SIZE", "code": "1bytes", "name": "Bytes", "unit": "By"},
                {"category": "WHO", "code": "requests", "name": ""},
            ],
            derivedFields=[{"category": "COST", "code": "cost", "name": "Cost", "unit": "USD"}],
            productId="not-a-uuid",
            colour="blue",
        ),
        _meter("bad\tcode"),
        _meter(
            "too_many", dataFields=[{"category": "WHAT", "code": f"f{i}", "name": "F"} for i in range(16)]
        ),
        _meter(
            "calc",
            derivedFields=[
                {"category": "MEASURE", "code": "units", "name": "U", "unit": "1", "calculation": "x"},
                {"category": "OTHER", "code": "long", "name": "L", "calculation": "x" * 5001},
            ],
            customFields={"owner": ["a", "b"], "flag": True},
        ),
        {"name": "no code", "dataFields": []},
        "just a string",
    ]
    (tmp_path / "one.yaml").write_text(json.dumps(bad))
    (tmp_path / "two.json").write_text(json.dumps([_meter("calc"), _meter("fine")]))
    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions(["one.yaml", "two.json"], base_dir=tmp_path)
    found = _problems(exc)
    expected = {
        ("one.yaml", "api_calls", "dataFields[requests].unit"),
        ("one.yaml", "api_calls", "dataFields[1bytes].code"),
        ("one.yaml", "api_calls", "dataFields[1bytes].category"),
        ("one.yaml", "api_calls", "dataFields[requests].name"),
        ("one.yaml", "api_calls", "dataFields[requests].code"),  # duplicate within data fields
        ("one.yaml", "api_calls", "derivedFields[cost].calculation"),
        ("one.yaml", "api_calls", "productId"),
        ("one.yaml", "api_calls", "colour"),
        ("one.yaml", "#2", "code"),
        ("one.yaml", "too_many", "dataFields"),
        ("one.yaml", "calc", "derivedFields[units].code"),  # duplicate across data + derived
        ("one.yaml", "calc", "derivedFields[long].calculation"),
        ("one.yaml", "calc", "customFields.owner"),
        ("one.yaml", "calc", "customFields.flag"),
        ("one.yaml", "#5", "code"),
        ("one.yaml", "#5", "dataFields"),
        ("one.yaml", "#6", None),
    }
    assert expected <= found, expected - found
    # A duplicate code is reported even when the first definition is itself invalid.
    assert ("two.json", "calc", "code") in found
    assert not any(p.meter == "fine" for p in exc.value.problems)
    text = str(exc.value)
    assert f"{len(exc.value.problems)} problem(s)" in text
    assert "one.yaml: meter 'api_calls': dataFields[requests].unit: is required for category MEASURE" in text
    assert "one.yaml: meter 'calc': customFields.owner: must be a string or a number, not list" in text
    assert "one.yaml: meter #2: code: must not contain control characters" in text
    assert "SIZE' is not one of WHO, WHERE, WHAT, OTHER, METADATA, MEASURE, INCOME, COST" in text


def test_duplicate_meter_codes_across_files_name_both_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(json.dumps([_meter("dup")]))
    (tmp_path / "b.yaml").write_text(json.dumps({"meters": [_meter("dup"), _meter("ok")]}))
    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions("*.yaml", base_dir=tmp_path)
    [problem] = exc.value.problems
    assert (problem.source, problem.meter, problem.field) == ("b.yaml", "dup", "code")
    assert "already defined in a.yaml" in problem.reason


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("meters: [", "invalid YAML"),
        ("", "expected a list of meters"),
        ("code: x\nname: y\n", "expected a list of meters"),
        ("{meters: [], extra: 1}", "expected a list of meters"),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, content: str, reason: str) -> None:
    (tmp_path / "broken.yml").write_text(content)
    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions("broken.yml", base_dir=tmp_path)
    [problem] = exc.value.problems
    assert problem.source == "broken.yml"
    assert reason in problem.reason


def test_yaml_parse_error_carries_the_line(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("meters:\n  - code: a\n    name: [unclosed\n")
    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions("m.yaml", base_dir=tmp_path)
    assert "line" in exc.value.problems[0].reason


def test_missing_paths_globs_and_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.txt").write_text("[]")
    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions(["nope.yaml", "meters/*.yaml", "empty", "x.txt", 42], base_dir=tmp_path)
    reasons = {p.source: p.reason for p in exc.value.problems}
    assert "no such file or directory" in reasons["nope.yaml"]
    assert "matches no definition file" in reasons["meters/*.yaml"]
    assert "has no .yaml/.yml/.json file" in reasons["empty"]
    assert "unsupported file type" in reasons["x.txt"]
    assert "not int" in reasons["definitions[4]"]
    with pytest.raises(MeterDefinitionError, match="no meter definitions found"):
        load_meter_definitions([])


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("api_calls", True),
        ("API Calls v2", True),  # inner plain spaces are allowed
        ("x" * 80, True),
        ("x" * 81, False),
        (" leading", False),
        ("trailing ", False),
        ("tab\tinside", False),
        ("line\nbreak", False),
        ("", False),
        (7, False),
    ],
)
def test_meter_code_rules(code: object, ok: bool) -> None:
    meter, problems = validate_meter(_meter(code), "t", 0)  # type: ignore[arg-type]
    assert (meter is not None) is ok
    assert ok or problems[0].field == "code"


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("requests", True),
        ("_x1", True),
        ("$cost", True),
        ("größe", True),  # any Unicode letter
        ("日本", True),
        ("a_b$9", True),
        ("9lives", False),
        ("has-dash", False),
        ("has space", False),
        ("a٣", False),  # only ASCII digits after the first character
        ("x" * 81, False),
    ],
)
def test_field_code_pattern(code: str, ok: bool) -> None:
    raw = _meter(dataFields=[{"category": "WHAT", "code": code, "name": "F"}])
    meter, problems = validate_meter(raw, "t", 0)
    assert (meter is not None) is ok, problems


@pytest.mark.parametrize("category", FIELD_CATEGORIES)
def test_units_are_required_exactly_for_numeric_categories(category: str) -> None:
    raw = _meter(dataFields=[{"category": category, "code": "f", "name": "F"}])
    meter, problems = validate_meter(raw, "t", 0)
    numeric = category in {"MEASURE", "INCOME", "COST"}
    assert (meter is None) is numeric
    if numeric:
        assert [(p.field, p.reason.split(" (")[0]) for p in problems] == [
            ("dataFields[f].unit", f"is required for category {category}")
        ]


def test_field_counts_at_the_limits() -> None:
    fifteen = [{"category": "WHAT", "code": f"f{i}", "name": "F"} for i in range(15)]
    derived = [{"category": "OTHER", "code": f"d{i}", "name": "D", "calculation": "1"} for i in range(15)]
    meter, problems = validate_meter(_meter(dataFields=fifteen, derivedFields=derived), "t", 0)
    assert meter is not None
    assert not problems
    _, problems = validate_meter(_meter(dataFields=[]), "t", 0)
    assert [p.field for p in problems] == ["dataFields"]
    too_many = [*derived, {"category": "OTHER", "code": "d15", "name": "D", "calculation": "1"}]
    _, problems = validate_meter(_meter(derivedFields=too_many), "t", 0)
    assert [p.field for p in problems] == ["derivedFields"]
    _, problems = validate_meter(_meter(product="p", productId="0" * 36), "t", 0)
    assert [p.field for p in problems] == ["product"]


def test_definition_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions([_meter("bad code\t")])
    copy = pickle.loads(pickle.dumps(exc.value))  # noqa: S301 - our own bytes
    assert copy.problems == exc.value.problems
    assert str(copy) == str(exc.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "inf.yaml",
            "- {code: m_inf, name: M, dataFields: [{category: WHO, code: u, name: U}],"
            " customFields: {k: .inf, j: .nan, n: -.inf}}\n",
        ),
        (
            "big.json",
            '[{"code": "m_inf", "name": "M", "dataFields": [{"category": "WHO", "code": "u",'
            ' "name": "U"}], "customFields": {"k": 1e400, "j": -1e400, "n": 1e400}}]',
        ),
    ],
)
def test_custom_fields_that_no_request_body_can_carry_are_refused(
    tmp_path: Path, name: str, text: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(MeterDefinitionError) as exc:
        load_meter_definitions([name], base_dir=tmp_path)
    found = _problems(exc)
    assert {(name, "m_inf", f"customFields.{key}") for key in ("k", "j", "n")} <= found, found
    assert "must be a finite number" in str(exc.value)
