"""``POST /organizations/{orgId}/measurements``: the only route of the Ingest listener."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.ingest import check_submission
from airflow_provider_m3ter.emulator.web import state_of

router = APIRouter()
_ACCEPTED = b'{"result":"accepted"}'


@router.post("/organizations/{orgId}/measurements")
async def submit_measurements(request: Request) -> Response:
    """Check the body synchronously, store once per uid, validate against meters later.

    :param request: the ingest request.
    """
    state = state_of(request)
    state.stats.ingest_requests += 1
    raw = await request.body()
    state.ingest(check_submission(raw), raw)
    return Response(_ACCEPTED, media_type="application/json")
