"""Hostile meter definitions: bounded in time and memory, every message bounded, duplicates refused.

Each case runs in a subprocess with a memory cap (``RLIMIT_AS``) and a wall-clock timeout, so an
alias bomb that expands cannot take the test run down with it; the subprocess prints the error's
length, its first lines and whether it named file, meter and field.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_m3ter.client.meter_definitions import (
    MAX_FILE_BYTES,
    MeterDefinitionError,
    load_meter_definitions,
)

FIELD = {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "{request}"}

RUNNER = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (1024 * 1024 * 1024, 1024 * 1024 * 1024))
    from airflow_provider_m3ter.client.meter_definitions import MeterDefinitionError, load_meter_definitions
    try:
        load_meter_definitions(sys.argv[1])
    except MeterDefinitionError as error:
        text = str(error)
        print(json.dumps({"ok": False, "length": len(text), "text": text[:4000],
                          "problems": [[p.source, p.meter, p.field, p.reason[:300]]
                                       for p in error.problems]}))
    else:
        print(json.dumps({"ok": True}))
    """
)


def _load_isolated(path: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_a_yaml_alias_bomb_in_a_category_is_refused_quickly_with_a_short_message(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    anchors = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        anchors.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    bomb.write_text(
        "- code: bomb\n  name: Bomb\n  anchors:\n"
        + textwrap.indent("\n".join(anchors), "    ")
        + "\n  dataFields:\n    - code: requests\n      name: Requests\n      unit: '{request}'\n"
        "      category: *a9\n"
    )
    result = _load_isolated(bomb)
    assert result["ok"] is False
    assert result["length"] < 2000, result["text"][:500]
    assert "bomb.yaml" in result["text"]
    assert "anchors and aliases" in result["text"]


@pytest.mark.parametrize(
    "text",
    [
        "- &m {code: a, name: A, dataFields: []}\n- *m\n",
        "- code: a\n  name: A\n  dataFields:\n    - &f {category: WHO, code: x, name: X}\n    - *f\n",
        "- code: a\n  name: &n A\n  dataFields: [{category: WHO, code: x, name: X}]\n",
        "- code: a\n  name: A\n  dataFields:\n    - <<: {category: WHO}\n      code: x\n      name: X\n",
    ],
    ids=["alias-meter", "alias-field", "anchor-only", "merge-key"],
)
def test_anchors_aliases_and_merge_keys_are_refused_naming_the_file_and_line(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "defs.yaml"
    path.write_text(text)
    with pytest.raises(MeterDefinitionError) as info:
        load_meter_definitions(path)
    [problem] = info.value.problems
    assert problem.source.endswith("defs.yaml")
    assert "line " in problem.reason


def test_a_huge_value_is_not_echoed_in_full(tmp_path: Path) -> None:
    big = "X" * 200_000
    meters = [
        {"code": "m1", "name": "M", "dataFields": [{**FIELD, "category": big}]},
        {"code": "m2", "name": "M", "dataFields": [{**FIELD, "code": "9" + big}], big: 1},
        {"code": "m3", "name": "M", "dataFields": [FIELD], "customFields": {big: [1]}},
        {"code": big, "name": big, "dataFields": [{**FIELD, "category": [big] * 5}]},
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(meters))
    result = _load_isolated(path)
    assert result["ok"] is False
    assert result["length"] < 5000, result["text"][:1000]
    fields = {(p[1], (p[2] or "")[:22]) for p in result["problems"]}
    assert ("m1", "dataFields[requests].c") in fields
    assert ("m2", "X" * 22) in fields  # the unknown attribute, its name cut short
    assert ("m2", "dataFields[9XXXXXXXXXX") in fields
    assert ("m3", "customFields.XXXXXXXXX") in fields
    assert ("#4", "code") in fields


def test_thousands_of_problems_make_a_bounded_message(tmp_path: Path) -> None:
    meters = [{"code": f"m{i}", "name": "", "dataFields": [{**FIELD, "unit": ""}]} for i in range(3000)]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(meters))
    with pytest.raises(MeterDefinitionError) as info:
        load_meter_definitions(path)
    assert len(info.value.problems) == 6000
    assert len(str(info.value)) < 20_000
    assert "... and 5950 more" in str(info.value)


def test_a_file_over_the_size_cap_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as handle:
        handle.write("- code: a\n  name: A\n  dataFields: []\n")
        handle.write("#" * (MAX_FILE_BYTES + 10))
    with pytest.raises(MeterDefinitionError, match="larger than"):
        load_meter_definitions(path)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_deep_nesting_is_a_clear_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 200_000 + "]" * 200_000)
    result = _load_isolated(path)
    assert result["ok"] is False
    assert result["length"] < 2000


DUPLICATES = {
    "meter-key": (
        "- code: a\n  name: A\n  name: B\n  dataFields: [{category: WHO, code: x, name: X}]\n",
        "a",
        "name",
    ),
    "field-key": (
        "- code: a\n  name: A\n  dataFields:\n    - {category: WHO, code: x, name: X, code: y}\n",
        "a",
        "dataFields[0].code",
    ),
    "custom-field": (
        "- code: a\n  name: A\n  customFields: {k: 1, k: 2}\n"
        "  dataFields: [{category: WHO, code: x, name: X}]\n",
        "a",
        "customFields.k",
    ),
    "code-itself": (
        "- code: a\n  code: b\n  name: A\n  dataFields: [{category: WHO, code: x, name: X}]\n",
        "b",
        "code",
    ),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_duplicate_keys_at_any_depth_are_refused_naming_file_meter_and_key(
    tmp_path: Path, case, suffix
) -> None:
    text, meter, field = DUPLICATES[case]
    if suffix == ".json":
        text = _yaml_flow_to_json_with_duplicates(text)
    path = tmp_path / f"defs{suffix}"
    path.write_text(text)
    with pytest.raises(MeterDefinitionError) as info:
        load_meter_definitions(path.name, base_dir=tmp_path)
    found = [p for p in info.value.problems if "more than once" in p.reason]
    assert [(p.source, p.meter, p.field) for p in found] == [(f"defs{suffix}", meter, field)], info.value
    assert f"defs{suffix}: meter '{meter}': {field}: key given more than once" in str(info.value)


def test_a_duplicate_meters_key_at_the_top_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "top.json"
    one = {"code": "a", "name": "A", "dataFields": [FIELD]}
    path.write_text(f'{{"meters": [{json.dumps(one)}], "meters": []}}')
    with pytest.raises(MeterDefinitionError, match=r"top\.json: meters: key given more than once"):
        load_meter_definitions(path.name, base_dir=tmp_path)


def _yaml_flow_to_json_with_duplicates(text: str) -> str:
    """The same document as JSON text, keeping duplicate keys (json.dumps cannot express them)."""
    import yaml

    class Pairs(yaml.SafeLoader):
        pass

    def pairs(loader, node):
        items = [
            (loader.construct_object(k, deep=True), loader.construct_object(v, deep=True))
            for k, v in node.value
        ]
        return ("__pairs__", items)

    Pairs.add_constructor("tag:yaml.org,2002:map", pairs)

    def dump(value) -> str:
        if isinstance(value, tuple) and value and value[0] == "__pairs__":
            return "{" + ", ".join(f"{json.dumps(k)}: {dump(v)}" for k, v in value[1]) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(dump(v) for v in value) + "]"
        return json.dumps(value)

    return dump(yaml.load(text, Loader=Pairs))  # noqa: S506 - test helper on a fixed text


def test_a_normal_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "meters:\n  - code: api_calls\n    name: API calls\n    dataFields:\n"
        "      - {category: MEASURE, code: requests, name: Requests, unit: '{request}'}\n"
        "    customFields: {team: core}\n"
    )
    [meter] = load_meter_definitions(path)
    assert meter.code == "api_calls"
    assert meter.custom_fields == {"team": "core"}
    assert type(meter.custom_fields) is dict
