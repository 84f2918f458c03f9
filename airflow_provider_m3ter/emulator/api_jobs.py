"""Jobs and events: file-upload ingest, bill jobs, ad-hoc data exports, ingest events."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.errors import ApiError, bad_request, not_found
from airflow_provider_m3ter.emulator.jobs import Job
from airflow_provider_m3ter.emulator.state import EmulatorState
from airflow_provider_m3ter.emulator.store import new_id, now_iso, parse_page_size
from airflow_provider_m3ter.emulator.web import check_body, json_response, read_json, state_of, validator

router = APIRouter(prefix="/organizations/{orgId}")
upload_router = APIRouter()
MAX_RUNNING_BILL_JOBS = 10


def find_job(state: EmulatorState, kind: str, job_id: str, name: str) -> Job:
    """A job of ``kind`` or a 404.

    :param state: the emulator state.
    :param kind: the job kind.
    :param job_id: the id asked for.
    :param name: the entity name for the message.
    """
    job = state.jobs.get(job_id)
    if job is None or job.kind != kind:
        raise not_found(name, job_id)
    return job


def job_page(request: Request, kind: str, status_filter: str | None = None) -> Response:
    """A newest-first page of jobs of one kind.

    :param request: the list request.
    :param kind: the job kind.
    :param status_filter: only jobs in this status.
    """
    state = state_of(request)
    size = parse_page_size(request.query_params.get("pageSize"))
    jobs = [job for job in reversed(state.jobs.values()) if job.kind == kind]
    if status_filter:
        jobs = [job for job in jobs if job.status == status_filter]
    start = 0
    token = request.query_params.get("nextToken")
    if token:
        ids = [job.id for job in jobs]
        if token not in ids:
            raise bad_request(f"nextToken: {token!r} is not a valid token for this list")
        start = ids.index(token) + 1
    chosen = jobs[start : start + size]
    page: dict[str, Any] = {"data": [job.view() for job in chosen]}
    if start + size < len(jobs):
        page["nextToken"] = chosen[-1].id
    return json_response(page)


# ---- file uploads ---------------------------------------------------------------------------
@router.post("/fileuploads/measurements/generateUploadUrl")
async def generate_upload_url(request: Request) -> Response:
    """Create a file-upload job and a signed URL (served by this emulator) to PUT the file to.

    :param request: the incoming request.
    """
    state = state_of(request)
    body = check_body(await read_json(request), "GetUploadUrlRequest")
    job = state.create_job(
        "fileupload",
        {
            "id": new_id(),
            "version": 1,
            "fileName": body["fileName"],
            "contentLength": body["contentLength"],
            "totalRows": 0,
            "processedRows": 0,
            "failedRows": 0,
        },
    )
    token = secrets.token_urlsafe(24)
    headers = {"Content-Type": body["contentType"], "x-emulator-upload-signature": secrets.token_hex(16)}
    state.uploads[token] = {
        "job_id": job.id,
        "expires": time.time() + state.options.upload_url_ttl,
        "headers": headers,
        "content_length": body["contentLength"],
    }
    url = str(request.base_url).rstrip("/") + f"/_upload/{token}"
    return json_response({"jobId": job.id, "url": url, "headers": headers})


@upload_router.put("/_upload/{token}")
async def put_upload(request: Request, token: str) -> Response:
    """Receive an uploaded file (no bearer token: the URL and headers are the credentials).

    :param request: the incoming request.
    :param token: the signed token in the upload URL.
    """
    state = state_of(request)
    upload = state.uploads.get(token)
    if upload is None:
        raise ApiError(403, "Access denied: unknown upload URL")
    if time.time() > upload["expires"]:
        raise ApiError(403, "Request has expired: upload URLs are valid for a limited time")
    for name, value in upload["headers"].items():
        if request.headers.get(name) != value:
            raise ApiError(403, f"Signature does not match: header {name} is missing or differs")
    job = state.jobs[upload["job_id"]]
    if job.status != "notUploaded":
        raise ApiError(403, "Access denied: a file was already uploaded with this URL")
    payload = await request.body()
    if len(payload) != upload["content_length"]:
        raise ApiError(
            403,
            f"Signature does not match: body is {len(payload)} bytes, the URL was signed for "
            f"{upload['content_length']}",
        )
    job.payload = payload
    job.record["uploadDate"] = now_iso()
    state.step_job(job)
    return Response(status_code=200)


@router.get("/fileuploads/measurements/jobs")
async def list_upload_jobs(request: Request) -> Response:
    """List file-upload jobs, newest first.

    :param request: the incoming request.
    """
    return job_page(request, "fileupload")


@router.get("/fileuploads/measurements/jobs/{id}")
async def get_upload_job(request: Request, id: str) -> Response:
    """The status and row counts of a file-upload job.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(find_job(state_of(request), "fileupload", id, "File upload job").view())


# ---- bill jobs ------------------------------------------------------------------------------
@router.post("/billjobs")
async def create_bill_job(request: Request) -> Response:
    """Start a bill job; the 11th job running at once gets 429.

    :param request: the incoming request.
    """
    state = state_of(request)
    body = check_body(await read_json(request), "BillJobRequest")
    if state.running_bill_jobs() >= MAX_RUNNING_BILL_JOBS:
        raise ApiError(429, f"Too many bill jobs: at most {MAX_RUNNING_BILL_JOBS} may run at once")
    body.pop("version", None)
    record = state.stamp_new(body)
    record.update(type="CREATE", total=len(body.get("accountIds", [])) or 1, billIds=[])
    record["pending"] = record["total"]
    return json_response(state.create_job("billjob", record).view())


@router.get("/billjobs")
async def list_bill_jobs(request: Request) -> Response:
    """List bill jobs, newest first; filter ``status``.

    :param request: the incoming request.
    """
    return job_page(request, "billjob", request.query_params.get("status"))


@router.get("/billjobs/{id}")
async def get_bill_job(request: Request, id: str) -> Response:
    """Retrieve a bill job.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(find_job(state_of(request), "billjob", id, "Bill job").view())


@router.post("/billjobs/{id}/cancel")
async def cancel_bill_job(request: Request, id: str) -> Response:
    """Cancel a bill job that has not finished.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    state = state_of(request)
    job = find_job(state, "billjob", id, "Bill job")
    if job.terminal:
        raise bad_request(f"Bill job {id} is already {job.status} and cannot be cancelled")
    state.step_job(job, to_status="CANCELLED")
    return json_response(job.view())


# ---- data exports ---------------------------------------------------------------------------
@router.post("/dataexports/adhoc")
async def trigger_data_export(request: Request) -> Response:
    """Start an ad-hoc data export job.

    :param request: the incoming request.
    """
    state = state_of(request)
    body = await read_json(request)
    adhoc = validator().document["paths"]["/organizations/{orgId}/dataexports/adhoc"]["post"]
    problems = validator().errors(body, adhoc["requestBody"]["content"]["application/json"]["schema"])
    if problems:
        raise ApiError(400, "Invalid request: " + "; ".join(problems))
    record = {"id": new_id(), "version": 1, "dateCreated": now_iso(), "sourceType": body["sourceType"]}
    job = state.create_job("dataexport", record)
    return json_response({"jobId": job.id})


@router.get("/dataexports/jobs/{id}")
async def get_data_export_job(request: Request, id: str) -> Response:
    """Retrieve a data export job.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(find_job(state_of(request), "dataexport", id, "Data export job").view())


# ---- events ---------------------------------------------------------------------------------
@router.get("/events")
async def list_events(request: Request) -> Response:
    """List events, newest first.

    Filters: ``eventName``, ``eventType`` (first part of the name), ``resourceId``, ``accountId``, ``ids``.
    """
    state = state_of(request)
    query = request.query_params
    size = parse_page_size(query.get("pageSize"))
    name = query.get("eventName")
    event_type = query.get("eventType")
    resource_id = query.get("resourceId")
    account_id = query.get("accountId")
    ids = {part for value in query.getlist("ids") for part in value.split(",") if part}

    def wanted(event: dict[str, Any]) -> bool:
        detail = event["m3terEvent"]
        return (
            (not name or event["eventName"] == name)
            and (not event_type or event["eventName"].split(".")[0] == event_type)
            and (not resource_id or detail.get("resourceId") == resource_id)
            and (not account_id or detail.get("accountId") == account_id)
            and (not ids or event["id"] in ids)
        )

    return json_response(state.stores["events"].page(size, query.get("nextToken"), wanted))


@router.get("/events/{id}")
async def get_event(request: Request, id: str) -> Response:
    """Retrieve an event.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["events"].get(id))
