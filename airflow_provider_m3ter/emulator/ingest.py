"""Measurement checks: the synchronous schema check of an ingest call, and the later check
against the meter that produces ``ingest.validation.failure`` events."""

from __future__ import annotations

import re
from typing import Any

from airflow_provider_m3ter.emulator.errors import ApiError, bad_request
from airflow_provider_m3ter.emulator.schema import JAVA_PATTERNS, loads_strict, parse_datetime

MAX_BODY_BYTES = 512_000
MAX_MEASUREMENTS = 1000
MAX_UID = 50
MAX_CODE = 80
MAX_METADATA_VALUE = 256
STRING_MAPS = ("who", "where", "what", "other", "metadata")
NUMBER_MAPS = ("measure", "cost", "income")
CATEGORY_OF_MAP = {name: name.upper() for name in (*STRING_MAPS, *NUMBER_MAPS)}
NUMERIC_CATEGORIES = frozenset({"MEASURE", "COST", "INCOME"})
_CODE = re.compile(next(v for k, v in JAVA_PATTERNS.items() if "Cntrl" in k))

EVENT_NAME = "ingest.validation.failure"
_EMPTY: frozenset[str] = frozenset()


_OPTIONAL_KINDS = {
    "uid": "uid",
    "ets": "ets",
    **{name: "strings" for name in STRING_MAPS},
    **{name: "numbers" for name in NUMBER_MAPS},
}
_REQUIRED = ("meter", "account", "ts")
# Codes and timestamps repeat a lot in real traffic: remember the valid ones (bounded).
_known_good: set[str] = set()
_KNOWN_GOOD_LIMIT = 200_000


def _code_problem(value: Any) -> str | None:
    if type(value) is not str:
        return "must be a string"
    if value in _known_good:
        return None
    if not 1 <= len(value) <= MAX_CODE:
        return f"must be 1 to {MAX_CODE} characters"
    if not _CODE.match(value):
        return "must have no control characters and no leading or trailing whitespace"
    _remember(value)
    return None


def _timestamp_problem(value: Any) -> str | None:
    if type(value) is not str:
        return "must be an ISO-8601 date-time string"
    if value in _known_good:
        return None
    if parse_datetime(value) is None:
        return "must be an ISO-8601 date-time string"
    _remember(value)
    return None


def _remember(value: str) -> None:
    if len(_known_good) >= _KNOWN_GOOD_LIMIT:
        _known_good.clear()
    _known_good.add(value)


def measurement_problem(m: Any) -> tuple[str, str] | None:
    """The first schema problem of one measurement as ``(field, reason)``, or None when valid.

    Optional fields may be ``null`` (treated as absent); required ones may not.

    :param m: one decoded measurement.
    """
    if type(m) is not dict:
        return "", "must be a JSON object"
    for key in _REQUIRED:
        value = m.get(key)
        if value is None:
            return key, "is required"
        problem = _timestamp_problem(value) if key == "ts" else _code_problem(value)
        if problem is not None:
            return key, problem
    for key, value in m.items():
        kind = _OPTIONAL_KINDS.get(key)
        if kind is None:
            if key in _REQUIRED:
                continue
            return key, "is not a measurement field"
        if value is None:
            continue
        if kind == "strings":
            if type(value) is not dict:
                return key, "must be an object of string values"
            for name, text in value.items():
                if type(text) is not str:
                    return f"{key}.{name}", "must be a string"
                if key == "metadata" and len(text) > MAX_METADATA_VALUE:
                    return f"{key}.{name}", f"must be at most {MAX_METADATA_VALUE} characters"
        elif kind == "numbers":
            if type(value) is not dict:
                return key, "must be an object of numeric values"
            for name, number in value.items():
                if type(number) is not int and type(number) is not float:
                    return f"{key}.{name}", "must be a number"
        elif kind == "uid":
            if type(value) is not str:
                return key, "must be a string"
            if len(value) > MAX_UID:
                return key, f"must be at most {MAX_UID} characters (got {len(value)})"
        else:
            problem = _timestamp_problem(value)
            if problem is not None:
                return key, problem
    return None


def check_submission(raw: bytes) -> list[dict[str, Any]]:
    """Check a ``POST /measurements`` body and return its measurements.

    The size is checked before parsing (over 512,000 bytes: 403, as m3ter does).

    :param raw: the raw request body.
    """
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(403, f"Request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES} bytes")
    try:
        doc = loads_strict(raw)
    except ValueError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise bad_request('Request body must be a JSON object {"measurements": [...]}')
    extra = sorted(key for key in doc if key != "measurements")
    if extra:
        raise bad_request(f"{extra[0]}: is not a field of the request (only 'measurements' is)")
    measurements = doc.get("measurements")
    if type(measurements) is not list:
        raise bad_request("measurements: is required and must be an array")
    if not 1 <= len(measurements) <= MAX_MEASUREMENTS:
        raise bad_request(f"measurements: must hold 1 to {MAX_MEASUREMENTS} items, got {len(measurements)}")
    for index, m in enumerate(measurements):
        problem = measurement_problem(m)
        if problem is not None:
            field, reason = problem
            where = f"measurements[{index}].{field}" if field else f"measurements[{index}]"
            raise bad_request(f"{where}: {reason}")
    return measurements


_IDENTIFIER = re.compile(r"(?:[^\W\d]|\$)(?:\w|\$)*")
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def calculation_references(calculation: str) -> set[str]:
    """The identifiers a derived field's calculation mentions (string literals left out).

    :param calculation: the derived field's ``calculation``.
    """
    return set(_IDENTIFIER.findall(_STRING_LITERAL.sub(" ", calculation)))


def meter_field_codes(meter: dict[str, Any]) -> dict[str, Any]:
    """What the asynchronous check needs of a meter, worked out once per validation round.

    ``{category: data field codes}``, plus ``"#derived"`` (derived field codes by category) and
    ``"#calculations"`` (derived field code -> the data field codes its calculation references).

    :param meter: the stored meter.
    """
    codes: dict[str, Any] = {}
    data_codes: set[str] = set()
    for item in meter.get("dataFields", []):
        codes.setdefault(item["category"], set()).add(item["code"])
        data_codes.add(item["code"])
    derived: dict[str, set[str]] = {}
    calculations: dict[str, set[str]] = {}
    for item in meter.get("derivedFields", []):
        derived.setdefault(item["category"], set()).add(item["code"])
        calculations[item["code"]] = calculation_references(item.get("calculation", "")) & data_codes
    codes["#derived"] = derived
    codes["#calculations"] = calculations
    return codes


def meter_failures(
    m: dict[str, Any], meter: dict[str, Any] | None, codes: dict[str, Any], duplicate: bool
) -> list[tuple[str, str]]:
    """Problems found when a stored measurement is checked against its meter.

    Failure types: ``DuplicateUid`` (uid already ingested), ``UndefinedMeter`` (no meter with that
    code), ``UndefinedField`` (a key that is not one of the meter's data fields of that category,
    including a derived field's code: the spec says raw data is not submitted for derived fields; the
    type name is an emulator choice, m3ter does not document this case), ``DuplicateField`` (the same
    field code in two categories of one measurement), ``MissingField`` (a numeric data field of the
    meter absent from the measurement) and ``CalculationError`` (a derived field's calculation
    references a data field the measurement does not carry; an emulator assumption).

    :param m: the measurement.
    :param meter: the meter its ``meter`` code names (None when there is none).
    :param codes: what :func:`meter_field_codes` worked out for the meter.
    :param duplicate: whether its uid had been ingested before.
    """
    if duplicate:
        return [("DuplicateUid", f"uid {m.get('uid')!r} was already ingested")]
    if meter is None:
        return [("UndefinedMeter", f"no meter has the code {m['meter']!r}")]
    failures: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    derived = codes.get("#derived", {})
    for name, category in CATEGORY_OF_MAP.items():
        values = m.get(name)
        if not values:
            continue
        allowed = codes.get(category, _EMPTY)
        for key in values:
            if key in seen:
                failures.append(("DuplicateField", f"field {key!r} appears in both {seen[key]} and {name}"))
            seen[key] = name
            if key in derived.get(category, _EMPTY):
                failures.append(
                    (
                        "UndefinedField",
                        f"{name}.{key} is a derived field: m3ter calculates it, raw data is not sent",
                    )
                )
            elif key not in allowed:
                failures.append(("UndefinedField", f"{name}.{key} is not a {category} field of the meter"))
    present = {key for name in CATEGORY_OF_MAP if m.get(name) for key in m[name]}
    for item in meter.get("dataFields", []):
        category = item["category"]
        if category in NUMERIC_CATEGORIES and item["code"] not in (m.get(category.lower()) or {}):
            failures.append(("MissingField", f"{category.lower()}.{item['code']} is missing"))
    for code, references in codes.get("#calculations", {}).items():
        missing = sorted(references - present)
        if missing:
            failures.append(
                (
                    "CalculationError",
                    f"derived field {code!r} needs {', '.join(missing)}, absent from the measurement",
                )
            )
    return failures


def failure_event_detail(
    m: dict[str, Any], failure_type: str, reason: str, meter: dict[str, Any] | None, account_id: str | None
) -> dict[str, Any]:
    """The ``m3terEvent`` body of one ``ingest.validation.failure`` event.

    :param m: the measurement that failed.
    :param failure_type: for example ``UndefinedMeter``.
    :param reason: a sentence saying what is wrong.
    :param meter: the meter, when one exists.
    :param account_id: the id of the measurement's account, when known.
    """
    return {
        "eventType": EVENT_NAME,
        "failureType": failure_type,
        "message": reason,
        "uid": m.get("uid"),
        "meter": m.get("meter"),
        "account": m.get("account"),
        "ts": m.get("ts"),
        "resourceId": meter["id"] if meter else None,
        "accountId": account_id,
        # the measurement as received, so a reader can tell a resend of the same content apart
        "measurement": m,
    }
