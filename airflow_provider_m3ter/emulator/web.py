"""Helpers the route modules share: the state, JSON bodies, schema checks, JSON responses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.errors import ApiError, bad_request
from airflow_provider_m3ter.emulator.schema import SchemaValidator, load_subset, loads_strict, schema_ref
from airflow_provider_m3ter.emulator.state import EmulatorState

_validator: SchemaValidator | None = None


def validator() -> SchemaValidator:
    """The validator for the shipped OpenAPI subset (built once)."""
    global _validator
    if _validator is None:
        _validator = SchemaValidator(load_subset())
    return _validator


def state_of(request: Request) -> EmulatorState:
    """The shared emulator state behind a request.

    :param request: the incoming request.
    """
    state: EmulatorState = request.app.state.emulator
    return state


def json_response(body: Any, status: int = 200) -> Response:
    """A compact JSON response.

    :param body: any JSON value.
    :param status: the HTTP status.
    """
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json",
    )


async def read_json(request: Request) -> Any:
    """The decoded JSON body, or a 400 naming the parse problem.

    :param request: the incoming request.
    """
    raw = await request.body()
    if not raw.strip():
        raise bad_request("Request body is required")
    try:
        return loads_strict(raw)
    except ValueError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from None


def check_body(body: Any, schema_name: str) -> dict[str, Any]:
    """Validate a create/update body against a request schema of the subset.

    Returns only the fields the schema declares (unknown fields are ignored, as m3ter does).

    :param body: the decoded JSON body.
    :param schema_name: the component schema, for example ``MeterRequest``.
    """
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    ref = schema_ref(schema_name)
    problems = validator().errors(body, ref)
    if problems:
        raise ApiError(400, "Invalid request: " + "; ".join(problems))
    known = validator().property_names(ref)
    return {key: value for key, value in body.items() if key in known and value is not None}


def require_version(body: dict[str, Any], stored: dict[str, Any], kind: str) -> None:
    """Optimistic locking: ``version`` must be given and equal the stored one (else 400 / 409).

    :param body: the update body.
    :param stored: the stored entity.
    :param kind: the entity name for the message.
    """
    version = body.get("version")
    if version is None:
        raise bad_request(f"version: is required when updating a {kind}")
    if version != stored["version"]:
        raise ApiError(
            409,
            f"Version conflict: {kind} {stored['id']} is at version {stored['version']}, "
            f"the request was based on version {version}",
        )
