"""File-upload ingest: signed upload URL, PUT, job progression, row counts, expiry."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.emulator.api import Api, measurement


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def start_upload(api: Api, body: bytes, name: str = "usage.json") -> dict:
    request = {"fileName": name, "contentType": "application/json", "contentLength": len(body)}
    return api.ok(api.post("fileuploads/measurements/generateUploadUrl", json=request))


def wait_status(api: Api, job_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.ok(api.get(f"fileuploads/measurements/jobs/{job_id}"))
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"upload job {job_id} did not finish")


def test_upload_processes_rows_with_the_same_deduplication(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("time", step_seconds=0.2)
    api.ingest([measurement("r-0")])  # already ingested: the file's copy is a duplicate
    rows = [measurement(f"r-{i}") for i in range(4)] + [{"meter": "api_calls"}, measurement("r-9", ts="bad")]
    body = json.dumps(rows).encode()
    grant = start_upload(api, body)
    assert set(grant) == {"jobId", "url", "headers"}
    assert grant["url"].startswith(m3ter_emulator.config_url + "/_upload/")
    job = api.ok(api.get(f"fileuploads/measurements/jobs/{grant['jobId']}"))
    assert job["status"] == "notUploaded"
    time.sleep(0.3)  # time does not move a job whose file has not arrived
    assert api.ok(api.get(f"fileuploads/measurements/jobs/{grant['jobId']}"))["status"] == "notUploaded"
    put = requests.put(grant["url"], data=body, headers=grant["headers"], timeout=10)  # no bearer token
    assert put.status_code == 200
    assert api.ok(api.get(f"fileuploads/measurements/jobs/{grant['jobId']}"))["status"] == "running"
    done = wait_status(api, grant["jobId"])
    assert done["status"] == "succeeded"
    assert (done["totalRows"], done["processedRows"], done["failedRows"]) == (6, 6, 2)
    assert done["fileName"] == "usage.json"
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["r-0", "r-1", "r-2", "r-3"]
    assert m3ter_emulator.stats()["duplicates_received"] == 1
    errors = m3ter_emulator.job(grant["jobId"])["errors"]
    assert any("row 4" in e and "account" in e for e in errors)
    assert any("row 5" in e and "ts" in e for e in errors)
    listed = api.ok(api.get("fileuploads/measurements/jobs"))["data"]
    assert [j["id"] for j in listed] == [grant["jobId"]]


def test_upload_that_is_not_a_json_array_fails(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("manual")
    not_an_array = json.dumps({"measurements": [measurement()]}).encode()
    not_json = json.dumps([measurement(measure={"calls": float("nan")})]).encode()  # NaN is no JSON
    for body in (not_an_array, not_json):
        grant = start_upload(api, body)
        assert requests.put(grant["url"], data=body, headers=grant["headers"], timeout=10).status_code == 200
        assert m3ter_emulator.advance_job(grant["jobId"])["status"] == "failed", body
    assert m3ter_emulator.measurements() == []


def test_upload_url_checks_headers_length_and_reuse(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("manual")
    body = json.dumps([measurement("h-1")]).encode()
    grant = start_upload(api, body)
    no_headers = requests.put(grant["url"], data=body, timeout=10)
    assert no_headers.status_code == 403
    wrong_length = requests.put(grant["url"], data=body + b" ", headers=grant["headers"], timeout=10)
    assert wrong_length.status_code == 403
    assert "message" in wrong_length.json()
    unknown = requests.put(
        m3ter_emulator.config_url + "/_upload/forged", data=body, headers=grant["headers"], timeout=10
    )
    assert unknown.status_code == 403
    assert requests.put(grant["url"], data=body, headers=grant["headers"], timeout=10).status_code == 200
    assert requests.put(grant["url"], data=body, headers=grant["headers"], timeout=10).status_code == 403
    with pytest.raises(Exception, match="no uploaded file"):
        m3ter_emulator.advance_job(start_upload(api, body)["jobId"])
    m3ter_emulator.set_job_outcome("fileupload", "failed")
    failing = start_upload(api, body)
    requests.put(failing["url"], data=body, headers=failing["headers"], timeout=10)
    assert m3ter_emulator.advance_job(failing["jobId"])["status"] == "failed"
    assert m3ter_emulator.advance_job(grant["jobId"])["status"] == "succeeded"
    assert [m["uid"] for m in m3ter_emulator.measurements()] == ["h-1"]


def test_generate_upload_url_validates_its_body(api):
    bad = api.post(
        "fileuploads/measurements/generateUploadUrl",
        json={"fileName": "x.csv", "contentType": "text/csv", "contentLength": 0},
    )
    assert bad.status_code == 400
    message = bad.json()["message"]
    assert "contentType" in message
    assert "contentLength" in message


def test_upload_url_expires(m3ter_emulator_factory):
    emu = m3ter_emulator_factory(upload_url_ttl=0.5, job_mode="manual")
    api = Api(emu)
    body = json.dumps([measurement("late")]).encode()
    grant = start_upload(api, body)
    time.sleep(0.7)
    expired = requests.put(grant["url"], data=body, headers=grant["headers"], timeout=10)
    assert expired.status_code == 403
    assert "expired" in expired.json()["message"]
    assert api.ok(api.get(f"fileuploads/measurements/jobs/{grant['jobId']}"))["status"] == "notUploaded"
