"""The plain-Python checks and upload helpers over the real HTTP path, against the emulator."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
import requests

from airflow_provider_m3ter.client.core import M3terClient
from airflow_provider_m3ter.client.errors import M3terFinalError
from airflow_provider_m3ter.client.events import check_ingest_events
from airflow_provider_m3ter.client.file_upload import JsonArrayBody, put_upload, request_upload_url
from airflow_provider_m3ter.client.jobs import check_entity, check_job
from airflow_provider_m3ter.client.settings import ClientSettings


def _client(emulator) -> M3terClient:
    settings = ClientSettings(
        org_id=emulator.org_id,
        access_key_id=emulator.access_key_id,
        api_secret=emulator.api_secret,
        config_url=emulator.config_url,
        ingest_url=emulator.ingest_url,
    )
    return M3terClient(settings)


@pytest.fixture
def client(m3ter_emulator):
    with _client(m3ter_emulator) as client:
        yield client


def _meter(code: str, *fields: str) -> dict:
    data_fields = [{"category": "MEASURE", "code": f, "name": f, "unit": "1"} for f in fields]
    return {"code": code, "name": code, "dataFields": data_fields, "derivedFields": []}


def test_job_checks_follow_each_kind_through_its_states(m3ter_emulator, client):
    m3ter_emulator.set_job_mode("manual")
    bill = client.request("POST", "billjobs", json={"accountIds": ["a1"]})["id"]
    export = client.request(
        "POST", "dataexports/adhoc", json={"sourceType": "OPERATIONAL", "operationalDataTypes": ["METERS"]}
    )["jobId"]
    seen = []
    for kind, job_id, final in (("billjob", bill, "COMPLETE"), ("dataexport", export, "FAILED")):
        states = [check_job(client, kind, job_id).state]
        m3ter_emulator.advance_job(job_id)
        states.append(check_job(client, kind, job_id).state)
        m3ter_emulator.advance_job(job_id, status=final)
        result = check_job(client, kind, job_id)
        states.append(result.state)
        assert result.detail["status"] == final
        seen.append(states)
    assert seen == [["pending", "pending", "succeeded"], ["pending", "pending", "failed"]]


def test_entity_check_waits_for_code_then_conditions(client):
    assert check_entity(client, "meter", "api_calls").state == "pending"
    meter = client.request("POST", "meters", json=_meter("api_calls", "requests"))
    client.request("POST", "meters", json=_meter("api_calls_2", "requests", "bytes"))  # a near namesake
    found = check_entity(client, "meter", "api_calls", required_fields=["measure.requests"])
    assert found.state == "succeeded"
    assert found.detail == {"kind": "meter", "code": "api_calls", "id": meter["id"], "version": 1}
    waiting = check_entity(client, "meter", "api_calls", required_fields=["measure.bytes"], min_version=2)
    assert waiting.state == "pending"
    assert "no data or derived field 'measure.bytes'; version is 1, waiting for at least 2" in waiting.message
    update = {**_meter("api_calls", "requests", "bytes"), "version": meter["version"]}
    client.request("PUT", f"meters/{meter['id']}", json=update)
    assert check_entity(client, "meter", "api_calls", required_fields=["measure.bytes"], min_version=2).done


def test_products_have_no_codes_filter_so_the_list_is_scanned(client):
    for code in ("alpha", "beta", "gamma"):
        client.request("POST", "products", json={"code": code, "name": code.title()})
    result = check_entity(client, "product", "beta", where={"name": "Beta"})
    assert result.state == "succeeded"
    assert check_entity(client, "product", "delta").state == "pending"
    assert check_entity(client, "product", "beta", where={"name": "Other"}).state == "pending"


def test_ingest_events_respect_the_window_and_the_uids(m3ter_emulator, client):
    bad = {"meter": "nope", "account": "acme", "ts": "2024-05-01T00:00:00Z", "measure": {"x": 1}}
    client.submit_measurements([{**bad, "uid": "old-1"}])
    m3ter_emulator.validate_now()
    time.sleep(0.05)
    since = datetime.now(timezone.utc)
    time.sleep(0.05)
    client.submit_measurements([{**bad, "uid": "new-1"}, {**bad, "uid": "new-2"}])
    m3ter_emulator.validate_now()
    everything = check_ingest_events(client, since="2000-01-01T00:00:00Z", settle_until=0)
    assert everything.detail["failures"] == 3
    recent = check_ingest_events(client, since=since, settle_until=0, on_failure="warn")
    assert recent.state == "succeeded"
    assert sorted(e["uid"] for e in recent.detail["examples"]) == ["new-1", "new-2"]
    mine = check_ingest_events(client, since=since, settle_until=0, uids=["new-2", "other"])
    assert mine.state == "failed"
    assert mine.detail["by_type"] == {"UndefinedMeter": 1}
    none_of_mine = check_ingest_events(client, since=since, settle_until=time.time() + 60, uids=["zzz"])
    assert none_of_mine.state == "pending"


def test_upload_goes_to_the_signed_url_without_the_bearer_token(m3ter_emulator, client):
    records = [
        json.dumps({"uid": f"u{i}", "meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z"}).encode()
        for i in range(3)
    ]
    length = 2 + sum(map(len, records)) + 2
    ticket = request_upload_url(client, file_name="backfill.json", content_length=length)
    assert ticket.url not in repr(ticket)
    sent_headers = []
    with requests.Session() as session:
        session.hooks["response"].append(
            lambda response, **_: sent_headers.append(dict(response.request.headers))
        )
        put_upload(ticket, JsonArrayBody(records, length), session=session)
    assert "Authorization" not in sent_headers[0]
    assert sent_headers[0]["Content-Length"] == str(length)
    assert "Transfer-Encoding" not in sent_headers[0]
    job = client.request("GET", f"fileuploads/measurements/jobs/{ticket.job_id}")
    assert job["status"] in ("running", "succeeded")
    assert job["contentLength"] == length


def test_an_expired_upload_url_fails_naming_the_job_not_the_url(m3ter_emulator_factory):
    emulator = m3ter_emulator_factory(upload_url_ttl=0.2)
    with _client(emulator) as client:
        ticket = request_upload_url(client, file_name="late.json", content_length=2)
        time.sleep(0.4)
        with pytest.raises(M3terFinalError) as caught:
            put_upload(ticket, b"[]")
    assert caught.value.status == 403
    assert ticket.job_id in str(caught.value)
    assert ticket.url not in str(caught.value)
    assert ticket.url.split("/")[-1] not in str(caught.value)


def test_upload_arguments_are_checked_before_any_call(client):
    with pytest.raises(ValueError, match="file_name must be 1-100 characters"):
        request_upload_url(client, file_name="x" * 101, content_length=10)
    with pytest.raises(ValueError, match="content_length must be 1 to"):
        request_upload_url(client, file_name="x.json", content_length=0)
    assert client.stats.requests == 0
