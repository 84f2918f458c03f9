"""``POST /organizations/{orgId}/usage/query``: Data Explorer's usage query (Config listener)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.errors import ApiError
from airflow_provider_m3ter.emulator.usage import run_query
from airflow_provider_m3ter.emulator.web import json_response, read_json, state_of

router = APIRouter(prefix="/organizations/{orgId}")


@router.post("/usage/query")
async def usage_query(request: Request) -> Response:
    """Totals or rows of the validated measurements in a period (see :mod:`.usage`).

    With limits on, Data Explorer's own limit applies on top of the Config API's: 1 request/s
    sustained, bursts of 10 (429 above it).

    :param request: the query request.
    """
    state = state_of(request)
    if state.limits.enabled and not state.usage_bucket.take(time.monotonic()):
        state.stats.rate_limited["data_explorer"] += 1
        raise ApiError(429, "Too Many Requests: Data Explorer allows 1 request/s (bursts of 10)")
    body = await read_json(request)
    state.validate_pending()
    meters = dict(state.stores["meters"].items)
    result = run_query(body, state.visible_measurements(), meters, state.account_ids_by_code)
    return json_response(result)
