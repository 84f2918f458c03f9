"""Meter definitions (meters as code): load them from YAML/JSON or Python and validate them locally.

Plain Python (no Airflow). Every definition is checked against m3ter's documented rules before any
API call, and all problems are reported together, each naming its file, meter code and field.
Planning and applying a sync live in :mod:`airflow_provider_m3ter.client.meter_sync`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from airflow_provider_m3ter.client.paths import shown

FIELD_CATEGORIES = ("WHO", "WHERE", "WHAT", "OTHER", "METADATA", "MEASURE", "INCOME", "COST")
#: Categories whose values are numbers and therefore need a UCUM ``unit``.
NUMERIC_CATEGORIES = frozenset({"MEASURE", "INCOME", "COST"})
MAX_DATA_FIELDS = 15
MAX_DERIVED_FIELDS = 15
MAX_CUSTOM_FIELDS = 100
DEFINITION_SUFFIXES = (".yaml", ".yml", ".json")
#: Largest definition file read (bytes); a file of 1,000 meters is about 1 MB.
MAX_FILE_BYTES = 4 * 1024 * 1024
#: Most problems listed in one error message (the rest are counted).
MAX_PROBLEMS_SHOWN = 50
_MAX_PART = 200  # characters of one problem part (meter, field, reason) in messages

_METER_KEYS = frozenset(
    {"code", "name", "product", "productId", "groupId", "dataFields", "derivedFields", "customFields"}
)
_FIELD_KEYS = frozenset({"category", "code", "name", "unit"})
_DERIVED_KEYS = _FIELD_KEYS | {"calculation"}
_GLOB_CHARS = frozenset("*?[")

#: What ``definitions`` may be: a path, glob or directory, or a list of those and/or meter mappings.
DefinitionsSource = Union[
    str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]", Mapping[str, Any]]]
]


@dataclass(frozen=True)
class DefinitionProblem:
    """One thing wrong with the meter definitions.

    :param source: the file (or ``definitions[i]`` for a Python list) the meter came from.
    :param meter: the meter's code, or ``#n`` (its position in the source) when it has no usable code.
    :param field: the attribute at fault, e.g. ``dataFields[requests].unit``; None for the whole meter.
    :param reason: what is wrong, in words.
    """

    source: str
    meter: str | None
    field: str | None
    reason: str

    def __str__(self) -> str:
        where = [_cut(self.source)]
        if self.meter is not None:
            meter = _cut(self.meter)
            where.append(f"meter {meter}" if meter.startswith("#") else f"meter '{meter}'")
        if self.field:
            where.append(_cut(self.field))
        return f"{': '.join(where)}: {_cut(self.reason)}"


def _cut(text: str, limit: int = _MAX_PART) -> str:
    """``text`` shortened to ``limit`` characters (messages stay bounded whatever the input)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MeterDefinitionError(ValueError):
    """The meter definitions are invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[DefinitionProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        if more > 0:
            lines += f"\n  ... and {more} more"
        super().__init__(f"{len(self.problems)} problem(s) in the meter definitions:\n{lines}")

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling replays the constructor; give it the problems, not the rendered message.
        return (type(self), (self.problems,))


@dataclass(frozen=True)
class MeterDefinition:
    """The desired state of one meter, validated.

    :param code: the meter's unique code (the key of the sync).
    :param name: the meter's display name.
    :param data_fields: data fields in m3ter's shape (``category``, ``code``, ``name``, ``unit``).
    :param derived_fields: derived fields: data-field shape plus ``calculation``.
    :param product: a product *code*, resolved to its id when planning; None with ``product_id``
        None means a global meter.
    :param product_id: a product id given directly.
    :param group_id: the meter group id; only applied when ``manages_group`` is true.
    :param manages_group: the definition has a ``groupId`` key (else the current group is kept).
    :param custom_fields: the meter's custom fields; None means the definition has no
        ``customFields`` key and the current custom fields are preserved.
    :param source: where the definition came from, for messages.
    """

    code: str
    name: str
    data_fields: tuple[dict[str, Any], ...]
    derived_fields: tuple[dict[str, Any], ...] = ()
    product: str | None = None
    product_id: str | None = None
    group_id: str | None = None
    manages_group: bool = False
    custom_fields: dict[str, Any] | None = None
    source: str = "definitions"


# --------------------------------------------------------------------------- validation


def _code_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid meter code (1-80 chars, no control chars, no edge whitespace)."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > 80:
        return f"must be at most 80 characters (has {len(value)})"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "must not contain control characters"
    if value[0].isspace() or value[-1].isspace():
        return "must not start or end with whitespace"
    if any(ch.isspace() and ch != " " for ch in value):
        return "may contain plain spaces but no other whitespace"
    return None


def _field_code_problem(value: Any) -> str | None:
    """Why ``value`` does not match m3ter's field-code pattern ``^[\\p{L}_$][\\p{L}_$0-9]*$`` (1-80)."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > 80:
        return f"must be at most 80 characters (has {len(value)})"
    # str.isalpha() is exactly Unicode's letter categories, i.e. \p{L}; digits are ASCII only.
    if not (value[0].isalpha() or value[0] in "_$"):
        return f"{shown(value)} must start with a letter, '_' or '$'"
    if not all(ch.isalpha() or ch in "_$0123456789" for ch in value):
        return f"{shown(value)} may contain only letters, digits, '_' and '$'"
    return None


def _key(key: object) -> str:
    """A mapping key as messages show it (bounded; non-strings as their repr)."""
    return _cut(key, 80) if isinstance(key, str) else shown(key)


def _text_problem(value: Any, max_len: int) -> str | None:
    """Why ``value`` is not a string of 1..max_len characters."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    return None if len(value) <= max_len else f"must be at most {max_len} characters (has {len(value)})"


def _validate_field(raw: Any, kind: str, index: int, report: Any) -> dict[str, Any] | None:
    """Check one data/derived field; report problems via ``report(field, reason)``."""
    if not isinstance(raw, Mapping):
        report(f"{kind}[{index}]", "must be a mapping with category, code and name")
        return None
    code = raw.get("code")
    label = f"{kind}[{_cut(code, 80)}]" if isinstance(code, str) and code else f"{kind}[{index}]"
    allowed = _DERIVED_KEYS if kind == "derivedFields" else _FIELD_KEYS
    for key in sorted(set(raw) - allowed, key=str):
        report(f"{label}.{_key(key)}", f"unknown attribute (allowed: {', '.join(sorted(allowed))})")
    for attr, problem in (("code", _field_code_problem(code)), ("name", _text_problem(raw.get("name"), 200))):
        if problem:
            report(f"{label}.{attr}", problem)
    category = raw.get("category")
    if category not in FIELD_CATEGORIES:
        report(f"{label}.category", f"{shown(category)} is not one of {', '.join(FIELD_CATEGORIES)}")
    unit = raw.get("unit")
    if unit is None or unit == "":
        if category in NUMERIC_CATEGORIES:
            report(f"{label}.unit", f"is required for category {category} (a UCUM unit, e.g. '{{request}}')")
        unit = None
    elif problem := _text_problem(unit, 50):
        report(f"{label}.unit", problem)
    out = {"category": category, "code": code, "name": raw.get("name")}
    if unit is not None:
        out["unit"] = unit
    if kind == "derivedFields":
        calculation = raw.get("calculation")
        # Leading/trailing whitespace (e.g. a YAML block scalar's newline) is never meaningful.
        calculation = calculation.strip() if isinstance(calculation, str) else calculation
        if problem := _text_problem(calculation, 5000):
            report(f"{label}.calculation", f"{problem} (every derived field needs a calculation)")
        out["calculation"] = calculation
    return out


FieldList = list[dict[str, Any]]


def _validate_fields(raw: Mapping[str, Any], report: Any) -> tuple[FieldList, FieldList]:
    """Check dataFields/derivedFields: counts, each field, and code uniqueness across both lists."""
    result: dict[str, FieldList] = {}
    seen: dict[str, str] = {}
    for kind, low, high in (("dataFields", 1, MAX_DATA_FIELDS), ("derivedFields", 0, MAX_DERIVED_FIELDS)):
        items = raw.get(kind, [] if kind == "derivedFields" else None)
        items = [] if items is None and kind == "derivedFields" else items
        if not isinstance(items, list):
            report(kind, f"must be a list of {low} to {high} fields")
            result[kind] = []
            continue
        if not low <= len(items) <= high:
            report(kind, f"must have {low} to {high} fields (has {len(items)})")
        fields = [_validate_field(item, kind, i, report) for i, item in enumerate(items)]
        result[kind] = [f for f in fields if f is not None]
        for f in result[kind]:
            code = f["code"]
            if isinstance(code, str) and code in seen:
                report(f"{kind}[{code}].code", f"duplicates the field code of {seen[code]}[{code}]")
            elif isinstance(code, str):
                seen[code] = kind
    return result["dataFields"], result["derivedFields"]


def _meter_label(raw: Any, index: int) -> str:
    """How messages name a meter: its code if usable, else ``#n`` (its 1-based position)."""
    code = raw.get("code") if isinstance(raw, Mapping) else None
    return str(code) if _code_problem(code) is None else f"#{index + 1}"


def validate_meter(
    raw: Any, source: str, index: int
) -> tuple[MeterDefinition | None, list[DefinitionProblem]]:
    """Validate one raw meter mapping; return the definition (None if invalid) and all its problems.

    :param raw: the meter as read from YAML/JSON or given in Python.
    :param source: where it came from, used in messages.
    :param index: its position in the source (named as ``#n`` when the code is unusable).
    """
    problems: list[DefinitionProblem] = []
    code = raw.get("code") if isinstance(raw, Mapping) else None
    meter_label = _meter_label(raw, index)

    def report(attr: str | None, reason: str) -> None:
        problems.append(DefinitionProblem(source, meter_label, attr, reason))

    if not isinstance(raw, Mapping):
        report(None, "must be a mapping with at least code, name and dataFields")
        return None, problems
    for key in sorted(set(raw) - _METER_KEYS, key=str):
        report(_key(key), f"unknown attribute (allowed: {', '.join(sorted(_METER_KEYS))})")
    if problem := _code_problem(code):
        report("code", problem)
    if problem := _text_problem(raw.get("name"), 200):
        report("name", problem)
    product, product_id, group_id = raw.get("product"), raw.get("productId"), raw.get("groupId")
    if product is not None and product_id is not None:
        report("product", "give either product (a product code) or productId, not both")
    if product is not None and _code_problem(product):
        report("product", f"must be a product code: {_code_problem(product)}")
    for attr, value in (("productId", product_id), ("groupId", group_id)):
        if value is not None and not (isinstance(value, str) and len(value) == 36):
            report(attr, "must be a 36-character id (UUID)")
    custom = raw.get("customFields")
    if "customFields" in raw and not isinstance(custom, Mapping):
        report("customFields", "must be a mapping of name to string or number")
    elif isinstance(custom, Mapping):
        if len(custom) > MAX_CUSTOM_FIELDS:
            report("customFields", f"at most {MAX_CUSTOM_FIELDS} entries (has {len(custom)})")
        for key, value in custom.items():
            if not isinstance(key, str) or not key:
                report(f"customFields.{_key(key)}", "names must be non-empty strings")
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                report(
                    f"customFields.{_key(key)}", f"must be a string or a number, not {type(value).__name__}"
                )
            elif isinstance(value, float) and not math.isfinite(value):
                # YAML's .inf/.nan, JSON's 1e400: a request body cannot carry them
                report(f"customFields.{_key(key)}", f"must be a finite number (JSON has no {value!r})")
    data_fields, derived_fields = _validate_fields(raw, report)
    if problems:
        return None, problems
    return (
        MeterDefinition(
            code=str(code),
            name=raw["name"],
            data_fields=tuple(data_fields),
            derived_fields=tuple(derived_fields),
            product=product,
            product_id=product_id,
            group_id=group_id,
            manages_group="groupId" in raw,
            custom_fields=dict(custom) if isinstance(custom, Mapping) else None,
            source=source,
        ),
        [],
    )


# --------------------------------------------------------------------------- loading


class _Mapping(dict):  # type: ignore[type-arg]
    """A parsed mapping that remembers keys the file gave more than once (refused, with their path)."""

    duplicates: tuple[str, ...] = ()


class _DefinitionError(Exception):
    """A structural problem found while parsing (alias, anchor, merge key); the message is bounded."""


def _mapping_from_pairs(pairs: Iterable[tuple[Any, Any]]) -> _Mapping:
    result = _Mapping()
    duplicates: list[str] = []
    for key, value in pairs:
        if key in result:
            duplicates.append(_key(key))
        result[key] = value
    result.duplicates = tuple(duplicates)
    return result


def _yaml_load(text: str) -> Any:
    """Parse YAML with the safe loader, refusing aliases, anchors and merge keys.

    Aliases are how a few lines become gigabytes (a "billion laughs" document); definitions never
    need them. Mappings come back as :class:`_Mapping`, so a key given twice is reported, not
    silently dropped.
    """
    import yaml  # PyYAML ships with Airflow; imported only when a YAML file is read

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                mark = event.start_mark
                raise _DefinitionError(
                    f"YAML anchors and aliases (&, *) are not allowed in meter definitions "
                    f"(line {mark.line + 1}, column {mark.column + 1})"
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if not isinstance(node, yaml.MappingNode):
                return super().construct_mapping(node, deep=deep)
            pairs = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    mark = key_node.start_mark
                    raise _DefinitionError(
                        f"YAML merge keys (<<) are not allowed in meter definitions (line {mark.line + 1})"
                    )
                key = self.construct_object(key_node, deep=deep)
                try:
                    hash(key)
                except TypeError:
                    mark = key_node.start_mark
                    raise _DefinitionError(
                        f"a mapping key must be a plain value (line {mark.line + 1})"
                    ) from None
                pairs.append((key, self.construct_object(value_node, deep=deep)))
            return _mapping_from_pairs(pairs)

    # mappings are built in one step (not the default two-step generator), so duplicates are seen
    def mapping(loader: Any, node: Any) -> Any:
        return loader.construct_mapping(node, deep=True)

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def _read_file(path: Path, label: str) -> tuple[list[Any], list[DefinitionProblem]]:
    """Parse one YAML/JSON file into its list of raw meters (bounded in size, depth and message)."""
    suffix = path.suffix.lower()
    if suffix not in DEFINITION_SUFFIXES:
        reason = f"unsupported file type (use {', '.join(DEFINITION_SUFFIXES)})"
        return [], [DefinitionProblem(label, None, None, reason)]
    problem: str | None = None
    content: Any = None
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            problem = f"larger than {MAX_FILE_BYTES:,} bytes; split the definitions into several files"
        else:
            text = data.decode("utf-8")
            if suffix == ".json":
                content = json.loads(text, object_pairs_hook=_mapping_from_pairs)
            else:
                content = _yaml_load(text)
    except RecursionError:
        problem = "nested too deeply"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problem = f"cannot read: {_cut(str(exc), 300)}"
    except _DefinitionError as exc:
        problem = str(exc)
    except Exception as exc:  # yaml.YAMLError and its subclasses carry the line and column
        problem = f"invalid YAML: {_cut(str(exc), 500)}"
    if problem is not None:
        return [], [DefinitionProblem(label, None, None, problem)]
    if isinstance(content, Mapping) and set(content) == {"meters"}:
        for key in getattr(content, "duplicates", ()):
            return [], [DefinitionProblem(label, None, key, "key given more than once")]
        content = content["meters"]
    if not isinstance(content, list):
        reason = "expected a list of meters or a mapping with a single 'meters' list"
        return [], [DefinitionProblem(label, None, None, reason)]
    return content, []


def _duplicate_keys(value: Any, where: str, depth: int = 0) -> Iterator[str]:
    """Paths (``dataFields[1].unit``) of keys given more than once anywhere inside ``value``."""
    if depth > 50:
        return
    if isinstance(value, Mapping):
        for key in getattr(value, "duplicates", ()):
            yield f"{where}.{key}" if where else key
        for key, item in value.items():
            yield from _duplicate_keys(item, f"{where}.{_key(key)}" if where else _key(key), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _duplicate_keys(item, f"{where}[{index}]", depth + 1)


def _expand(entry: str | os.PathLike[str], base_dir: Path) -> tuple[list[Path], str | None]:
    """Turn one path, glob or directory (relative to ``base_dir``) into files, or say why not."""
    text = os.fspath(entry)
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if _GLOB_CHARS & set(text):
        # Like a directory, a pattern only picks definition files (a README beside them is fine).
        matches = (Path(p) for p in glob.glob(str(path), recursive=True))
        files = sorted(p for p in matches if p.is_file() and p.suffix.lower() in DEFINITION_SUFFIXES)
        return files, None if files else f"the pattern matches no definition file (searched {path})"
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DEFINITION_SUFFIXES)
        return files, None if files else f"the directory has no {'/'.join(DEFINITION_SUFFIXES)} file"
    if path.is_file():
        return [path], None
    return [], f"no such file or directory ({path})"


def _label(path: Path, base_dir: Path) -> str:
    """Name a file in messages: relative to ``base_dir`` when below it."""
    try:
        return str(path.relative_to(base_dir))
    except ValueError:
        return str(path)


def load_meter_definitions(
    definitions: DefinitionsSource, *, base_dir: str | os.PathLike[str] | None = None
) -> list[MeterDefinition]:
    """Read and validate meter definitions; raise :class:`MeterDefinitionError` listing every problem.

    :param definitions: a YAML/JSON file, a glob (``meters/*.yaml``) or a directory, or a list of
        those and/or meter mappings. A file holds a list of meters or ``{"meters": [...]}``.
    :param base_dir: folder that relative paths are resolved against (default: the working directory).
    :return: the definitions in source order; meter codes are unique across all sources.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    entries: Iterable[Any] = [definitions] if isinstance(definitions, (str, os.PathLike)) else definitions
    raw_meters: list[tuple[Any, str, int]] = []
    problems: list[DefinitionProblem] = []
    for position, entry in enumerate(entries):
        if isinstance(entry, Mapping):
            raw_meters.append((entry, f"definitions[{position}]", 0))
            continue
        if not isinstance(entry, (str, os.PathLike)):
            reason = f"must be a path, a glob, a directory or a meter mapping, not {type(entry).__name__}"
            problems.append(DefinitionProblem(f"definitions[{position}]", None, None, reason))
            continue
        files, why_not = _expand(entry, base)
        if why_not:
            problems.append(DefinitionProblem(os.fspath(entry), None, None, why_not))
        for path in files:
            label = _label(path, base)
            content, file_problems = _read_file(path, label)
            problems += file_problems
            raw_meters += [(raw, label, i) for i, raw in enumerate(content)]
    result: list[MeterDefinition] = []
    first_seen: dict[str, str] = {}
    for raw, source, index in raw_meters:
        meter, meter_problems = validate_meter(raw, source, index)
        duplicates = [
            DefinitionProblem(
                source, _meter_label(raw, index), path, "key given more than once (which value?)"
            )
            for path in _duplicate_keys(raw, "")
        ]
        if duplicates:
            meter = None
        problems += duplicates + meter_problems
        code = raw.get("code") if isinstance(raw, Mapping) else None
        # Checked even for otherwise invalid meters, so fixing them reveals no new problem.
        if isinstance(code, str) and code in first_seen:
            reason = f"duplicate meter code, already defined in {first_seen[code]}"
            problems.append(DefinitionProblem(source, code, "code", reason))
            continue
        if isinstance(code, str):
            first_seen[code] = source
        if meter is not None:
            result.append(meter)
    if not problems and not result:
        problems.append(DefinitionProblem(str(definitions), None, None, "no meter definitions found"))
    if problems:
        raise MeterDefinitionError(problems)
    return result
