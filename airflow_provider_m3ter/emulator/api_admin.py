"""The admin API under ``/_emulator/`` (Config listener, no authentication, never faulted or limited)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.errors import bad_request, not_found
from airflow_provider_m3ter.emulator.faults import FaultPlan
from airflow_provider_m3ter.emulator.jobs import FLOWS, parse_outcome
from airflow_provider_m3ter.emulator.limits import RateLimits
from airflow_provider_m3ter.emulator.web import json_response, state_of

router = APIRouter(prefix="/_emulator")


async def optional_json(request: Request) -> dict[str, Any]:
    """The JSON object body, or ``{}`` when there is none.

    :param request: the admin request.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    return body


@router.get("/health")
async def health(request: Request) -> Response:
    """Liveness check.

    :param request: the incoming request.
    """
    return json_response({"status": "ok", "org_id": state_of(request).options.org_id})


@router.get("/stats")
async def stats(request: Request) -> Response:
    """Counters: stored/received/duplicate measurements, requests by route and status, faults, 429s.

    :param request: the incoming request.
    """
    state = state_of(request)
    return json_response(state.stats.view(state.measurements_stored))


@router.get("/measurements")
async def measurements(request: Request) -> Response:
    """Stored measurements in arrival order; optional ``offset``/``limit``, ``meter``, ``account``.

    :param request: the incoming request.
    """
    state = state_of(request)
    query = request.query_params
    meter, account = query.get("meter"), query.get("account")
    offset = int(query.get("offset") or 0)
    limit = None if query.get("limit") is None else int(query["limit"])
    if meter or account:
        rows = [
            m
            for m in state.stored_measurements()
            if (not meter or m["meter"] == meter) and (not account or m["account"] == account)
        ]
        rows = rows[offset : None if limit is None else offset + limit]
    else:
        rows = state.stored_measurements(offset, limit)
    return json_response({"data": rows})


@router.post("/measurements/tamper")
async def tamper_measurements(request: Request) -> Response:
    """Drop or alter stored measurements, to test that reconciliation notices.

    Body: ``{"match": {"uid": "u-1"}, "drop": true}`` or ``{"match": {...}, "set": {"measure": {...}}}``;
    ``match`` compares top-level fields (``{}`` matches every measurement).

    :param request: the incoming request.
    """
    body = await optional_json(request)
    match, changes = body.get("match", {}), body.get("set", {})
    if not isinstance(match, dict) or not isinstance(changes, dict):
        raise bad_request("match and set: must be JSON objects")
    drop = bool(body.get("drop"))
    if drop == bool(changes):
        raise bad_request("give either drop: true or set: {...}")
    return json_response({"matched": state_of(request).tamper(match, drop, changes)})


@router.post("/reset")
async def reset(request: Request) -> Response:
    """Clear all state (start-up options kept; faults, limits and job mode back to start-up values).

    :param request: the incoming request.
    """
    body = await optional_json(request)
    state_of(request).reset(keep_tokens=bool(body.get("keep_tokens")))
    return json_response({"reset": True})


@router.get("/faults")
async def get_faults(request: Request) -> Response:
    """The active fault plan.

    :param request: the incoming request.
    """
    return json_response(state_of(request).faults.describe())


@router.post("/faults")
async def set_faults(request: Request) -> Response:
    """Replace the fault plan (``{}`` clears it).

    :param request: the incoming request.
    """
    state = state_of(request)
    state.faults = FaultPlan.from_body(await optional_json(request))
    return json_response(state.faults.describe())


@router.get("/secrets")
async def issued_secrets(request: Request) -> Response:
    """Every credential this emulator handed out: access tokens, upload URL tokens and signing headers.

    For secret-scanning tests: what must never appear in a client's logs, errors or XComs.

    :param request: the incoming request.
    """
    state = state_of(request)
    uploads = list(state.uploads.items())
    return json_response(
        {
            "access_tokens": list(state.tokens),
            "upload_tokens": [token for token, _ in uploads],
            "upload_headers": [
                value
                for _, upload in uploads
                for name, value in upload["headers"].items()
                if name.lower() != "content-type"
            ],
        }
    )


@router.get("/limits")
async def get_limits(request: Request) -> Response:
    """The active rate limits.

    :param request: the incoming request.
    """
    return json_response(state_of(request).limits.describe())


@router.post("/limits")
async def set_limits(request: Request) -> Response:
    """Replace the rate limits (counters restart).

    :param request: the incoming request.
    """
    state = state_of(request)
    state.limits = RateLimits.from_body(await optional_json(request), base=RateLimits())
    return json_response(state.limits.describe())


@router.post("/tokens/expire")
async def expire_tokens(request: Request) -> Response:
    """Make every issued token expired.

    :param request: the incoming request.
    """
    return json_response({"expired": state_of(request).expire_tokens()})


@router.post("/validate")
async def validate_now(request: Request) -> Response:
    """Run the asynchronous validation of every queued measurement now.

    :param request: the incoming request.
    """
    return json_response({"validated": state_of(request).validate_pending(force=True)})


@router.post("/jobs/outcome")
async def job_outcome(request: Request) -> Response:
    """Set how jobs of one kind created from now on end (``succeeded`` or ``failed``).

    :param request: the incoming request.
    """
    state = state_of(request)
    body = await optional_json(request)
    kind = body.get("kind")
    if kind not in FLOWS:
        raise bad_request(f"kind: must be one of {', '.join(FLOWS)}")
    state.job_outcomes[kind] = parse_outcome(kind, body.get("outcome", "succeeded"))
    return json_response(dict(state.job_outcomes))


@router.post("/jobs/mode")
async def job_mode(request: Request) -> Response:
    """Switch job progression between ``time`` and ``manual`` (and set the step length).

    :param request: the incoming request.
    """
    state = state_of(request)
    body = await optional_json(request)
    mode = body.get("mode", state.job_mode)
    if mode not in ("time", "manual"):
        raise bad_request("mode: must be time or manual")
    state.job_mode = mode
    if body.get("step_seconds") is not None:
        state.job_step_seconds = float(body["step_seconds"])
    return json_response({"mode": state.job_mode, "step_seconds": state.job_step_seconds})


@router.get("/jobs/{id}")
async def job_detail(request: Request, id: str) -> Response:
    """Any job with its kind, outcome and (for uploads) the row problems found.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    job = state_of(request).jobs.get(id)
    if job is None:
        raise not_found("Job", id)
    return json_response({"kind": job.kind, "outcome": job.outcome, "errors": job.errors, **job.view()})


@router.post("/jobs/{id}/advance")
async def advance_job(request: Request, id: str) -> Response:
    """Step a job one state, or to ``status``; ``outcome`` decides how it ends.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    state = state_of(request)
    job = state.jobs.get(id)
    if job is None:
        raise not_found("Job", id)
    body = await optional_json(request)
    target = body.get("status")
    if target is not None and target not in job.all_statuses():
        raise bad_request(f"status: {target!r} is not a {job.kind} status ({', '.join(job.all_statuses())})")
    outcome = parse_outcome(job.kind, body["outcome"]) if body.get("outcome") else None
    if job.waiting_for_upload and job.payload is None:
        raise bad_request(f"job {id} has no uploaded file yet; PUT the file to its upload URL first")
    state.step_job(job, to_status=target, outcome=outcome)
    return json_response({"kind": job.kind, **job.view()})


@router.post("/snapshot")
async def snapshot(request: Request) -> Response:
    """Write the state to ``path`` (default: the ``--snapshot`` file).

    :param request: the incoming request.
    """
    state = state_of(request)
    body = await optional_json(request)
    path = body.get("path") or state.options.snapshot
    if not path:
        raise bad_request("path: no snapshot file given and the emulator was started without --snapshot")
    size = save_snapshot(state.dump(), Path(path))
    return json_response({"path": str(path), "bytes": size})


def save_snapshot(data: dict[str, Any], path: Path) -> int:
    """Write snapshot data atomically; returns the file size.

    :param data: what :meth:`EmulatorState.dump` returned.
    :param path: the snapshot file.
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return len(text.encode("utf-8"))


@router.get("/console/org/{org_id}")
@router.get("/console/org/{org_id}/{section:path}")
async def console_page(request: Request, org_id: str, section: str = "") -> Response:
    """The emulator's stand-in for an m3ter Console page: what it holds for a Console path.

    The provider's "m3ter Console" extra link points here for an emulator connection (m3ter's
    Console knows nothing of an emulator's entities). The page names the organization and shows
    the entity or job whose id ends the path as JSON, or the section's counts.

    :param request: the incoming request.
    :param org_id: the organization in the path (a page for another organization is a 404).
    :param section: the Console section path, e.g. ``metering/meters/<id>``.
    """
    from html import escape

    state = state_of(request)
    if org_id != state.options.org_id:
        raise not_found("Organization", org_id)
    last = section.rstrip("/").rpartition("/")[2]
    found: Any = None
    if last in state.jobs:
        job = state.jobs[last]
        found = {"kind": job.kind, "outcome": job.outcome, **job.view()}
    else:
        for store in state.stores.values():
            if last in store.items:
                found = store.items[last]
                break
    counts = {name: len(store.items) for name, store in state.stores.items()}
    counts["jobs"] = len(state.jobs)
    counts["measurements"] = state.measurements_stored
    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>m3ter emulator console</title></head>"
        f"<body><h1>m3ter emulator console</h1><p>Organization <code>{escape(org_id)}</code></p>"
        f"<p id='section'>Section <code>{escape(section or '/')}</code></p>"
        + (
            f"<h2>Entity {escape(last)}</h2><pre id='entity'>{escape(json.dumps(found, indent=2))}</pre>"
            if found is not None
            else ""
        )
        + f"<h2>Held</h2><pre id='counts'>{escape(json.dumps(counts, indent=2))}</pre></body></html>"
    )
    return Response(body, media_type="text/html")
