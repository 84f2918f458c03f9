"""In-process companions of ``test_wait_bounds`` (fast, no DAG run): a sensor's poke and a trigger
end at their wait's limit whatever m3ter answers, because each check's retries are bounded by the
time the wait has left; and one sensor try uses one client and one token.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_m3ter.compat import AirflowSensorTimeout
from airflow_provider_m3ter.sensors.jobs import M3terBillJobSensor
from airflow_provider_m3ter.triggers.jobs import M3terJobTrigger

WAIT = 3.0
FAULTS = {
    "errors": {"rate": 1.0, "kinds": ["500", "502", "504"]},
    "throttled": {"rate": 1.0, "kinds": ["429"]},
    "retry_after": {"rate": 1.0, "kinds": ["429"], "retry_after": "3600"},
    "silence": {"latency_ms": 600_000},
}


@pytest.fixture
def bill_job(m3ter_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A bill job that never finishes, with a connection that allows very long calls."""
    conn = m3ter_emulator.connection()
    conn["extra"].update({"timeout": 60, "max_attempts": 10, "deadline": 300, "max_wait": 60})
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    m3ter_emulator.set_job_mode("manual")
    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    hook = M3terHook()
    try:
        return str(hook.request("POST", "billjobs", json={"accountIds": ["acct-1"]})["id"])
    finally:
        hook.close()


def _fault(emulator: Any, kind: str) -> None:
    emulator.set_faults(**FAULTS[kind], path_regex=r"/billjobs/[^/]+$")


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_poking_sensor_ends_at_its_timeout_whatever_m3ter_answers(
    m3ter_emulator: Any, bill_job: str, kind: str
) -> None:
    _fault(m3ter_emulator, kind)
    sensor = M3terBillJobSensor(task_id=f"wait_{kind}", job_id=bill_job, timeout=WAIT, poke_interval=1)
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout, match="timed out"):
        sensor.execute({})
    elapsed = time.monotonic() - started
    assert WAIT - 0.2 <= elapsed <= WAIT + 1.5, elapsed
    assert sensor._m3ter_hook is None  # the try's client was closed


@pytest.mark.parametrize("kind", list(FAULTS))
def test_a_trigger_ends_at_its_deadline_whatever_m3ter_answers(
    m3ter_emulator: Any, bill_job: str, kind: str
) -> None:
    _fault(m3ter_emulator, kind)
    trigger = M3terJobTrigger(
        job_kind="billjob", job_id=bill_job, m3ter_conn_id="m3ter_default", deadline=time.time() + WAIT
    )

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload
        return None

    started = time.monotonic()
    event = asyncio.run(asyncio.wait_for(first_event(), timeout=30))
    elapsed = time.monotonic() - started
    assert event["status"] == "timeout", event
    assert elapsed <= WAIT + 1.5, elapsed


def test_every_poke_of_a_try_shares_one_client_and_one_token(m3ter_emulator: Any, bill_job: str) -> None:
    before = m3ter_emulator.stats()["tokens_issued"]
    sensor = M3terBillJobSensor(task_id="wait", job_id=bill_job, timeout=2.5, poke_interval=0.5)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})
    stats = m3ter_emulator.stats()
    polls = sum(stats["requests"]["GET /organizations/{orgId}/billjobs/{id}"].values())
    assert polls >= 3
    # the fixture's own client fetched the process's token: the sensor's pokes fetched none
    assert stats["tokens_issued"] - before == 0
    assert stats["tokens_issued"] == 1


def test_a_long_poke_interval_does_not_sleep_past_the_timeout(m3ter_emulator: Any, bill_job: str) -> None:
    # Airflow's own loop would sleep the whole 60 s interval before noticing the 2 s timeout
    sensor = M3terBillJobSensor(task_id="wait", job_id=bill_job, timeout=2, poke_interval=60)
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})
    assert time.monotonic() - started <= 3.5


def test_a_token_refresh_into_a_silent_token_endpoint_ends_at_the_timeout(
    m3ter_emulator: Any, bill_job: str
) -> None:
    # the process's token expires; the refresh meets a token endpoint that never answers
    m3ter_emulator.expire_tokens()
    m3ter_emulator.set_faults(latency_ms=600_000, target="token")
    sensor = M3terBillJobSensor(task_id="wait", job_id=bill_job, timeout=WAIT, poke_interval=1)
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute({})
    assert WAIT - 0.2 <= time.monotonic() - started <= WAIT + 1.5


def test_a_trigger_recreated_after_its_deadline_ends_at_once_without_calling_m3ter(
    m3ter_emulator: Any, bill_job: str
) -> None:
    before = m3ter_emulator.stats()["requests"].get("GET /organizations/{orgId}/billjobs/{id}", {})
    trigger = M3terJobTrigger(
        job_kind="billjob", job_id=bill_job, m3ter_conn_id="m3ter_default", deadline=time.time() - 60
    )

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload
        return None

    started = time.monotonic()
    event = asyncio.run(asyncio.wait_for(first_event(), timeout=30))
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 1.0
    after = m3ter_emulator.stats()["requests"].get("GET /organizations/{orgId}/billjobs/{id}", {})
    assert after == before


def test_execution_timeout_bounds_each_check_when_it_ends_first(m3ter_emulator: Any, bill_job: str) -> None:
    from datetime import timedelta

    _fault(m3ter_emulator, "retry_after")
    sensor = M3terBillJobSensor(
        task_id="wait",
        job_id=bill_job,
        timeout=600,
        poke_interval=30,
        execution_timeout=timedelta(seconds=2),
    )
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout, match="2 s execution_timeout"):
        sensor.execute({})
    assert time.monotonic() - started <= 3.5
