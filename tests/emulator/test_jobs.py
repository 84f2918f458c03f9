"""Bill jobs and data exports: time-driven and manual progression, outcomes, cancel, the 10-job cap."""

from __future__ import annotations

import time

import pytest

from airflow_provider_m3ter.emulator import EmulatorError
from tests.emulator.api import Api

USAGE_EXPORT = {"sourceType": "USAGE", "meterIds": [], "accountIds": []}


@pytest.fixture
def api(m3ter_emulator):
    return Api(m3ter_emulator)


def poll(api: Api, path: str, terminal: set[str], timeout: float = 5.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.ok(api.get(path))["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in terminal:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"{path} stuck at {seen}")


def test_bill_job_moves_with_time(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("time", step_seconds=0.2)
    job = api.ok(api.post("billjobs", json={"billDate": "2024-05-31", "accountIds": ["a1"]}))
    assert job["status"] == "PENDING"
    assert poll(api, f"billjobs/{job['id']}", {"COMPLETE", "CANCELLED"}) == ["PENDING", "RUNNING", "COMPLETE"]
    listed = api.ok(api.get("billjobs"))["data"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert api.ok(api.get("billjobs", params={"status": "PENDING"}))["data"] == []


def test_data_export_moves_with_time_and_can_fail(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("time", step_seconds=0.2)
    ok = api.ok(api.post("dataexports/adhoc", json=USAGE_EXPORT))["jobId"]
    m3ter_emulator.set_job_outcome("dataexport", "failed")
    bad = api.ok(
        api.post("dataexports/adhoc", json={"sourceType": "OPERATIONAL", "operationalDataTypes": ["METERS"]})
    )
    terminal = {"SUCCEEDED", "FAILED"}
    assert poll(api, f"dataexports/jobs/{ok}", terminal) == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert poll(api, f"dataexports/jobs/{bad['jobId']}", terminal)[-1] == "FAILED"
    invalid = api.post("dataexports/adhoc", json={"sourceType": "OPERATIONAL"})
    assert invalid.status_code == 400
    assert "operationalDataTypes" in invalid.json()["message"]
    assert api.post("dataexports/adhoc", json={"sourceType": "BOTH"}).status_code == 400
    assert api.get("dataexports/jobs/nope").status_code == 404


def test_manual_mode_steps_only_on_request(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("manual")
    job = api.ok(api.post("billjobs", json={}))
    export = api.ok(api.post("dataexports/adhoc", json=USAGE_EXPORT))["jobId"]
    time.sleep(0.3)
    assert api.ok(api.get(f"billjobs/{job['id']}"))["status"] == "PENDING"
    assert m3ter_emulator.advance_job(job["id"])["status"] == "RUNNING"
    assert api.ok(api.get(f"billjobs/{job['id']}"))["status"] == "RUNNING"
    assert m3ter_emulator.advance_job(job["id"])["status"] == "COMPLETE"
    assert m3ter_emulator.advance_job(export, status="FAILED")["status"] == "FAILED"
    assert api.ok(api.get(f"dataexports/jobs/{export}"))["status"] == "FAILED"
    another = api.ok(api.post("billjobs", json={}))
    assert m3ter_emulator.advance_job(another["id"], outcome="failed")["status"] == "RUNNING"
    assert m3ter_emulator.advance_job(another["id"])["status"] == "CANCELLED"
    with pytest.raises(EmulatorError, match="404"):
        m3ter_emulator.advance_job("nope")
    with pytest.raises(EmulatorError, match="not a billjob status"):
        m3ter_emulator.advance_job(another["id"], status="SUCCEEDED")


def test_cancel_and_the_eleventh_running_bill_job(api, m3ter_emulator):
    m3ter_emulator.set_job_mode("manual")
    jobs = [api.ok(api.post("billjobs", json={}))["id"] for _ in range(10)]
    eleventh = api.post("billjobs", json={})
    assert eleventh.status_code == 429
    assert "10" in eleventh.json()["message"]
    cancelled = api.ok(api.post(f"billjobs/{jobs[0]}/cancel"))
    assert cancelled["status"] == "CANCELLED"
    assert api.post(f"billjobs/{jobs[0]}/cancel").status_code == 400
    assert api.post("billjobs", json={}).status_code == 200
    first_page = api.ok(api.get("billjobs", params={"pageSize": 6}))
    second_page = api.ok(api.get("billjobs", params={"pageSize": 6, "nextToken": first_page["nextToken"]}))
    assert len(first_page["data"]) == 6
    assert len(second_page["data"]) == 5
    assert "nextToken" not in second_page
