"""A small validator for the part of JSON Schema (OpenAPI 3.0 dialect) used by ``openapi_subset.json``.

The provider has no runtime dependency on ``jsonschema``, so the emulator checks request bodies with
this validator. It supports ``$ref``, ``allOf``/``anyOf``/``oneOf`` (with ``discriminator``),
``type``, ``nullable``, ``required``, ``properties``, ``additionalProperties``, ``enum``, string
lengths, ``pattern``, ``format`` (date, date-time, email), array sizes and numeric bounds.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

SUBSET_PATH = Path(__file__).with_name("openapi_subset.json")

# m3ter's patterns are Java regexes; these are their Python equivalents (same language accepted).
_NOT_SPACE_OR_CONTROL = r"[^\x00-\x1f\x7f\s]"
JAVA_PATTERNS: dict[str, str] = {
    r"^([^[\p{Cntrl}\s]])|([^[\p{Cntrl}\s]][[^[\p{Cntrl}\s]] ]*[^[\p{Cntrl}\s]])$": (
        rf"\A{_NOT_SPACE_OR_CONTROL}(?:(?:{_NOT_SPACE_OR_CONTROL}| )*{_NOT_SPACE_OR_CONTROL})?\Z"
    ),
    r"^[\p{L}_$][\p{L}_$0-9]*$": r"\A(?:[^\W\d]|\$)(?:[^\W]|\$)*\Z",
}
_EMAIL = re.compile(r"\A[^@\s]+@[^@\s]+\Z")


def java_pattern_to_python(pattern: str) -> str:
    """Translate one of m3ter's Java patterns into a Python ``re`` pattern with the same meaning.

    :param pattern: the ``pattern`` value from the spec; unknown patterns are returned unchanged.
    """
    return JAVA_PATTERNS.get(pattern, pattern)


@cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(java_pattern_to_python(pattern))
    except re.error:
        # A Java-only construct we have no translation for: skip the check rather than guess.
        return None


def parse_datetime(value: str) -> datetime | None:
    """Parse an ISO-8601 date-time (``Z`` or an offset allowed); None when it is not one.

    :param value: the text to parse.
    """
    if "T" not in value and "t" not in value:
        return None
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def loads_strict(raw: str | bytes) -> Any:
    """Decode JSON as m3ter does: ``NaN``, ``Infinity`` and ``-Infinity`` are refused (``ValueError``).

    :param raw: the request body or file.
    """
    return json.loads(raw, parse_constant=_refuse_constant)


@lru_cache(maxsize=1)
def load_subset() -> dict[str, Any]:
    """Load (once) the OpenAPI subset shipped with the emulator."""
    return json.loads(SUBSET_PATH.read_text(encoding="utf-8"))


def schema_ref(name: str) -> dict[str, Any]:
    """Return ``{"$ref": ...}`` pointing at the component schema ``name``.

    :param name: a key of ``components.schemas``.
    """
    return {"$ref": f"#/components/schemas/{name}"}


class SchemaValidator:
    """Validates JSON values against schemas of one OpenAPI document.

    :param document: the OpenAPI document whose ``components`` resolve ``$ref`` values.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` until a concrete schema is reached.

        :param schema: a schema that may be a reference.
        """
        while "$ref" in schema:
            node: Any = self.document
            for part in schema["$ref"][2:].split("/"):
                node = node[part]
            schema = node
        return schema

    def property_names(self, schema: dict[str, Any]) -> set[str]:
        """Every property name a schema declares, through ``allOf`` and references.

        :param schema: the schema to inspect.
        """
        schema = self.resolve(schema)
        names = set(schema.get("properties", {}))
        for sub in schema.get("allOf", []):
            names |= self.property_names(sub)
        return names

    def errors(self, value: Any, schema: dict[str, Any], where: str = "body") -> list[str]:
        """Return every problem of ``value`` against ``schema`` as ``"<where>: <reason>"`` strings.

        :param value: the decoded JSON value.
        :param schema: the schema (or reference) to check against.
        :param where: the location of ``value`` used in messages, for example ``dataFields[0]``.
        """
        schema = self.resolve(schema)
        if value is None:
            if schema.get("nullable"):
                return []
            if "type" in schema:
                return [f"{where}: must not be null"]
        problems: list[str] = []
        for sub in schema.get("allOf", []):
            problems += self.errors(value, sub, where)
        choices = schema.get("anyOf") or schema.get("oneOf")
        if choices:
            problems += self._choice_errors(value, schema, choices, where)
        expected = schema.get("type")
        if expected and not _is_type(value, expected):
            return [*problems, f"{where}: must be of type {expected}"]
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(str(v) for v in schema["enum"])
            problems.append(f"{where}: must be one of {allowed}")
        if isinstance(value, str):
            problems += _string_errors(value, schema, where)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            problems += _number_errors(value, schema, where)
        elif isinstance(value, list):
            problems += self._array_errors(value, schema, where)
        elif isinstance(value, dict):
            problems += self._object_errors(value, schema, where)
        return problems

    def _choice_errors(
        self, value: Any, schema: dict[str, Any], choices: list[dict[str, Any]], where: str
    ) -> list[str]:
        discriminator = schema.get("discriminator")
        if discriminator and isinstance(value, dict):
            key = discriminator["propertyName"]
            target = discriminator.get("mapping", {}).get(value.get(key))
            if target is None:
                allowed = ", ".join(discriminator.get("mapping", {}))
                return [f"{where}.{key}: must be one of {allowed}"]
            return self.errors(value, {"$ref": target}, where)
        attempts = [self.errors(value, choice, where) for choice in choices]
        if any(not found for found in attempts):
            return []
        return min(attempts, key=len)

    def _array_errors(self, value: list[Any], schema: dict[str, Any], where: str) -> list[str]:
        problems = []
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{where}: must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{where}: must have at most {schema['maxItems']} items")
        items = schema.get("items")
        if items:
            for index, item in enumerate(value):
                problems += self.errors(item, items, f"{where}[{index}]")
        return problems

    def _object_errors(self, value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
        problems = [
            f"{where}.{name}: is required" for name in schema.get("required", []) if name not in value
        ]
        properties = schema.get("properties", {})
        required = schema.get("required", ())
        for name, sub in properties.items():
            if name not in value:
                continue
            if value[name] is None and name not in required:
                continue  # like m3ter's JSON binding, an optional field sent as null is absent
            problems += self.errors(value[name], sub, f"{where}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                if name not in properties:
                    problems += self.errors(item, extra, f"{where}.{name}")
        elif extra is False:
            problems += [f"{where}.{name}: is not a known field" for name in value if name not in properties]
        return problems


def _is_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _string_errors(value: str, schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f"{where}: must be at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{where}: must be at most {schema['maxLength']} characters")
    pattern = schema.get("pattern")
    if pattern:
        compiled = _compiled(pattern)
        if compiled is not None and not compiled.search(value):
            problems.append(f"{where}: has characters or spacing that are not allowed")
    fmt = schema.get("format")
    if fmt == "date-time" and parse_datetime(value) is None:
        problems.append(f"{where}: must be an ISO-8601 date-time")
    elif fmt == "date":
        try:
            date.fromisoformat(value)
        except ValueError:
            problems.append(f"{where}: must be an ISO-8601 date (YYYY-MM-DD)")
    elif fmt == "email" and not _EMAIL.match(value):
        problems.append(f"{where}: must be an email address")
    return problems


def _number_errors(value: float, schema: dict[str, Any], where: str) -> list[str]:
    problems = []
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum") is True and value <= low:
            problems.append(f"{where}: must be greater than {low}")
        elif value < low:
            problems.append(f"{where}: must be at least {low}")
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum") is True and value >= high:
            problems.append(f"{where}: must be less than {high}")
        elif value > high:
            problems.append(f"{where}: must be at most {high}")
    return problems
