"""Triggers: JSON-only serialization, absolute deadlines, and their polling loop against the emulator."""

from __future__ import annotations

import asyncio
import importlib
import json
import time

import pytest

from airflow_provider_m3ter.client import errors as client_errors
from airflow_provider_m3ter.client.core import M3terClient
from airflow_provider_m3ter.compat import AirflowSensorTimeout
from airflow_provider_m3ter.exceptions import M3terCheckFailure, M3terFinalFailure, to_airflow_failure
from airflow_provider_m3ter.sensors.jobs import M3terBillJobSensor
from airflow_provider_m3ter.triggers.base import error_from_dict, error_to_dict
from airflow_provider_m3ter.triggers.entity import M3terEntityTrigger
from airflow_provider_m3ter.triggers.events import M3terIngestEventsTrigger
from airflow_provider_m3ter.triggers.jobs import M3terFileUploadJobTrigger, M3terJobTrigger


def import_string(classpath: str):
    """The class a serialized trigger names, as the triggerer loads it."""
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)


COMMON = {"m3ter_conn_id": "m3ter_default", "poll_interval": 0.05}


def _all_triggers(deadline: float) -> list:
    return [
        M3terJobTrigger(job_kind="billjob", job_id="j1", deadline=deadline, **COMMON),
        M3terFileUploadJobTrigger(job_id="f1", fail_on_failed_rows=True, deadline=deadline, **COMMON),
        M3terFileUploadJobTrigger(
            job_id="f2", deadline=deadline, carry={"summary": {"job_id": "f2", "measurements": 3}}, **COMMON
        ),
        M3terJobTrigger(job_kind="dataexport", job_id="d1", deadline=deadline, **COMMON),
        M3terEntityTrigger(
            entity_kind="meter",
            code="api_calls",
            required_fields=["measure.requests"],
            min_version=2,
            where={"customFields.region": "eu", "customFields.tier": [1, 2]},
            deadline=deadline,
            **COMMON,
        ),
        M3terIngestEventsTrigger(
            since="2024-05-01T00:00:00+00:00",
            settle_until=deadline - 10,
            uids=["u1", "u2"],
            on_failure="warn",
            deadline=deadline,
            **COMMON,
        ),
    ]


@pytest.mark.parametrize("index", range(6))
def test_serialize_round_trips_through_json(index):
    trigger = _all_triggers(time.time() + 60)[index]
    classpath, kwargs = trigger.serialize()
    # what the triggerer stores is JSON; rebuilding from it gives the same trigger
    kwargs = json.loads(json.dumps(kwargs))
    rebuilt = import_string(classpath)(**kwargs)
    assert type(rebuilt) is type(trigger)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_the_deadline_is_absolute_so_recreating_does_not_extend_it():
    first = M3terJobTrigger(job_kind="billjob", job_id="b1", deadline=time.time() + 30, **COMMON)
    classpath, kwargs = first.serialize()
    before = first.remaining()
    time.sleep(0.3)
    again = import_string(classpath)(**json.loads(json.dumps(kwargs)))
    assert again.deadline == first.deadline
    assert again.remaining() <= before - 0.3
    assert again.remaining() > 25


@pytest.mark.parametrize(
    "error",
    [
        client_errors.M3terFinalError(404, "GET", "/organizations/o/billjobs/x", "not found", 1),
        client_errors.M3terBreaksConfigurationError(400, "PUT", "/p", "request breaks configuration", 1),
        client_errors.M3terTransientError(503, "GET", "/p", "busy", 6, 2.0),
        client_errors.M3terPayloadTooLargeError(413, "GET", "/p", "too large", 1),
        client_errors.M3terConfigurationError("m3ter connection 'x' is missing extra 'org_id'"),
    ],
)
def test_client_errors_survive_the_trip_through_an_event(error):
    data = json.loads(json.dumps(error_to_dict(error)))
    rebuilt = error_from_dict(data)
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert type(to_airflow_failure(rebuilt)) is type(to_airflow_failure(error))


def _run(trigger):
    async def first_event():
        return await anext(trigger.run())

    return asyncio.run(first_event()).payload


@pytest.fixture
def connection(m3ter_emulator, monkeypatch):
    """The emulator as ``m3ter_default``, with one attempt per call so transient errors surface."""

    def use(**extra):
        conn = m3ter_emulator.connection()
        conn["extra"].update(extra)
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))

    use(max_attempts=1)
    return use


def _bill_job(emulator) -> str:
    from airflow_provider_m3ter.client.settings import ClientSettings

    settings = ClientSettings(
        org_id=emulator.org_id,
        access_key_id=emulator.access_key_id,
        api_secret=emulator.api_secret,
        config_url=emulator.config_url,
        ingest_url=emulator.ingest_url,
    )
    with M3terClient(settings) as client:
        return client.request("POST", "billjobs", json={"accountIds": ["a1"]})["id"]


def test_trigger_polls_until_the_job_finishes(m3ter_emulator, connection):
    m3ter_emulator.set_job_mode("time", 0.2)
    job_id = _bill_job(m3ter_emulator)
    event = _run(M3terJobTrigger(job_kind="billjob", job_id=job_id, deadline=time.time() + 20, **COMMON))
    assert event["status"] == "done"
    assert event["result"]["state"] == "succeeded"
    assert event["result"]["detail"]["status"] == "COMPLETE"
    gets = m3ter_emulator.stats()["requests"]["GET /organizations/{orgId}/billjobs/{id}"]["200"]
    assert gets >= 2  # it saw the job pending at least once before it completed


def test_transient_errors_are_logged_and_polled_again(m3ter_emulator, connection, caplog):
    m3ter_emulator.set_job_mode("manual")
    job_id = _bill_job(m3ter_emulator)
    m3ter_emulator.advance_job(job_id, status="CANCELLED")
    m3ter_emulator.set_faults(sequence=["500", "502", "429"], path_regex=r"/billjobs/[^/]+$", retry_after="0")
    event = _run(M3terJobTrigger(job_kind="billjob", job_id=job_id, deadline=time.time() + 20, **COMMON))
    assert event["status"] == "done"
    assert event["result"]["state"] == "failed"
    assert "ended with status CANCELLED" in event["result"]["message"]
    assert m3ter_emulator.stats()["faults_injected"] == {"500": 1, "502": 1, "429": 1}


def test_the_deadline_ends_the_wait_with_the_last_answer(m3ter_emulator, connection):
    m3ter_emulator.set_job_mode("manual")
    job_id = _bill_job(m3ter_emulator)
    started = time.monotonic()
    event = _run(M3terJobTrigger(job_kind="billjob", job_id=job_id, deadline=time.time() + 0.3, **COMMON))
    assert time.monotonic() - started < 5
    assert event["status"] == "timeout"
    assert event["last"]["state"] == "pending"
    assert "is PENDING" in event["message"]


def test_transient_errors_until_the_deadline_still_end_in_timeout(m3ter_emulator, connection):
    m3ter_emulator.set_job_mode("manual")
    job_id = _bill_job(m3ter_emulator)
    m3ter_emulator.set_faults(rate=1.0, kinds=["500"], path_regex=r"/billjobs/[^/]+$")
    event = _run(M3terJobTrigger(job_kind="billjob", job_id=job_id, deadline=time.time() + 0.4, **COMMON))
    assert event == {
        "status": "timeout",
        "message": "gave up waiting at the deadline (no answer yet)",
        "last": None,
    }


def test_every_event_carries_what_the_task_resumes_with(m3ter_emulator, connection):
    """``airflow dags test`` resumes a task with the event alone (no deferral kwargs): the event
    itself brings back what the task needs, whatever way the wait ended."""
    carry = {"summary": {"job_id": "x", "measurements": 3, "file_name": "f.json"}}
    m3ter_emulator.set_job_mode("manual")
    pending = _bill_job(m3ter_emulator)
    finishing = _bill_job(m3ter_emulator)
    m3ter_emulator.advance_job(finishing, status="COMPLETE")
    events = [
        _run(
            M3terJobTrigger(
                job_kind="billjob", job_id=job_id, deadline=time.time() + seconds, carry=carry, **COMMON
            )
        )
        for job_id, seconds in [(finishing, 20), (pending, 0.3), ("00000000-0000-0000-0000-000000000bad", 20)]
    ]
    assert [event["status"] for event in events] == ["done", "timeout", "error"]
    assert all(event["carry"] == carry for event in events)
    # without a carry, the events are as before
    assert "carry" not in _run(
        M3terJobTrigger(job_kind="billjob", job_id=finishing, deadline=time.time() + 20, **COMMON)
    )


def test_final_errors_end_the_trigger_with_an_error_event(m3ter_emulator, connection):
    event = _run(
        M3terJobTrigger(
            job_kind="billjob",
            job_id="00000000-0000-0000-0000-000000000bad",
            deadline=time.time() + 20,
            **COMMON,
        )
    )
    assert event["status"] == "error"
    assert (event["error"]["type"], event["error"]["status"]) == ("M3terFinalError", 404)
    assert m3ter_emulator.api_secret not in json.dumps(event)


def test_a_broken_connection_is_an_error_event(m3ter_emulator, monkeypatch):
    conn = m3ter_emulator.connection()
    del conn["extra"]["org_id"]
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    event = _run(M3terJobTrigger(job_kind="billjob", job_id="b1", deadline=time.time() + 20, **COMMON))
    assert event["status"] == "error"
    assert event["error"]["type"] == "M3terConfigurationError"
    assert "org_id" in event["error"]["message"]


def test_cancelling_a_trigger_closes_its_client_and_touches_nothing_else(
    m3ter_emulator, connection, monkeypatch
):
    m3ter_emulator.set_job_mode("manual")
    job_id = _bill_job(m3ter_emulator)
    closed = []
    original_close = M3terClient.close
    monkeypatch.setattr(M3terClient, "close", lambda self: (closed.append(True), original_close(self)))

    async def run_then_cancel():
        trigger = M3terJobTrigger(
            job_kind="billjob", job_id=job_id, deadline=time.time() + 60, **{**COMMON, "poll_interval": 5}
        )
        task = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_then_cancel())
    assert closed == [True]
    requests = m3ter_emulator.stats()["requests"]
    assert not any("cancel" in route for route in requests)
    assert m3ter_emulator.job(job_id)["status"] == "PENDING"


def test_execute_complete_raises_what_poke_would(connection):
    sensor = M3terBillJobSensor(task_id="wait", job_id="b1")
    detail = {"kind": "billjob", "id": "b1", "status": "COMPLETE"}
    done = {"status": "done", "result": {"state": "succeeded", "message": "ok", "detail": detail}}
    assert sensor.execute_complete({}, done) == detail
    failed = {
        "status": "done",
        "result": {"state": "failed", "message": "ended with status CANCELLED", "detail": {}},
    }
    with pytest.raises(M3terCheckFailure, match="CANCELLED"):
        sensor.execute_complete({}, failed)
    with pytest.raises(AirflowSensorTimeout, match="gave up"):
        sensor.execute_complete({}, {"status": "timeout", "message": "gave up", "last": None})
    error = error_to_dict(client_errors.M3terFinalError(404, "GET", "/p", "Bill job not found", 1))
    with pytest.raises(M3terFinalFailure, match="Bill job not found") as caught:
        sensor.execute_complete({}, {"status": "error", "error": error})
    assert isinstance(caught.value.error, client_errors.M3terFinalError)
