"""Every sensor, in poke and in deferrable mode, through real ``airflow dags test`` runs.

Each test runs one DAG twice (poke, then deferrable) against emulator jobs that move through their
states (1 s per state) and checks that both modes reach the same outcome for every task.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sensors.dagruns import run_id_of, task_logs, task_states, xcoms

pytestmark = pytest.mark.dags

DAGS = Path(__file__).parent / "dags"
SENSORS_PASS = ["meter_ready", "bill_job", "data_export", "file_upload", "events_clean_uids", "events_warn"]
DEFERRED = "Pausing task as DEFERRED"


def _run(airflow_env, emulator, dag_id: str, mode: str):
    connection = emulator.connection()
    # two attempts per call: three injected 500s outlast one check and are absorbed by the next
    connection["extra"]["max_attempts"] = 2
    env = {"AIRFLOW_CONN_M3TER_DEFAULT": json.dumps(connection), "M3TER_TEST_SENSOR_MODE": mode}
    result = airflow_env.dags_test(dag_id, dags_folder=DAGS, env=env)
    run_id = run_id_of(result.output, dag_id)
    assert emulator.api_secret not in result.output
    return (
        result,
        task_states(airflow_env.home, dag_id, run_id),
        xcoms(airflow_env.home, dag_id, run_id),
        run_id,
    )


def _comparable(value: dict) -> dict:
    """An XCom without what differs between runs (ids, times)."""
    dropped = {"id", "since", "eventTime", "dateCreated", "startedAt", "uploadDate", "events_scanned"}
    out = {}
    for key, item in value.items():
        if key in dropped:
            continue
        if key == "examples":
            item = [_comparable(example) for example in item]
        out[key] = item
    return out


def test_every_sensor_succeeds_the_same_way_in_poke_and_deferrable_mode(airflow_env, m3ter_emulator):
    outcomes = {}
    for mode in ("poke", "deferrable"):
        m3ter_emulator.reset()
        m3ter_emulator.set_job_mode("time", 1.0)
        # transient faults while polling the bill job: 3 x 500 on its GET
        m3ter_emulator.set_faults(sequence=["500", "500", "500"], path_regex=r"/billjobs/[^/]+$")
        result, states, values, run_id = _run(airflow_env, m3ter_emulator, "m3ter_sensors_pass", mode)
        assert result.returncode == 0, result.output[-5000:]
        assert set(states.values()) == {"success"}, states
        assert len(states) == 11
        logs = task_logs(result.output)
        assert "m3ter stayed unavailable for this check" in logs["bill_job"]
        assert m3ter_emulator.stats()["faults_injected"] == {"500": 3}
        if mode == "deferrable":
            # every sensor found its wait pending at the first check and finished in its trigger
            assert all(DEFERRED in logs[task] for task in SENSORS_PASS), {
                t: DEFERRED in logs[t] for t in SENSORS_PASS
            }
        else:
            assert DEFERRED not in result.output
            assert "Rescheduling task, marking task as UP_FOR_RESCHEDULE" in logs["events_warn"]
        # the meter update arrived while the entity sensor waited
        assert "exists but version is 1, waiting for at least 2" in logs["meter_ready"]
        assert (
            "m3ter ingest validation: 1 measurement(s) failed m3ter validation (UndefinedMeter: 1"
            in logs["events_warn"]
        )

        assert values["bill_job"]["status"] == "COMPLETE"
        assert values["data_export"]["status"] == "SUCCEEDED"
        assert (values["file_upload"]["status"], values["file_upload"]["failedRows"]) == ("succeeded", 0)
        assert (values["meter_ready"]["code"], values["meter_ready"]["version"]) == ("sensor_meter", 2)
        assert values["events_clean_uids"]["failures"] == 0
        assert values["events_warn"]["by_type"] == {"UndefinedMeter": 1}
        assert values["events_warn"]["examples"][0]["uid"] == "bad-1"
        links = xcoms(airflow_env.home, "m3ter_sensors_pass", run_id, key="m3ter_console_url")
        assert links["bill_job"].endswith(f"/billing/bill-jobs/{values['bill_job']['id']}")
        assert links["meter_ready"].endswith(f"/metering/meters/{values['meter_ready']['id']}")
        outcomes[mode] = {task: _comparable(values[task]) for task in SENSORS_PASS}
    assert outcomes["poke"] == outcomes["deferrable"]


EXPECTED_FAILURES = {
    "bill_cancelled": "M3terCheckFailure: m3ter bill job",
    "export_failed": "ended with status FAILED",
    "upload_failed_rows": "finished with status succeeded but 1 of 2 rows failed",
    "meter_never": "AirflowSensorTimeout: Sensor has timed out",
    "events_fail": "M3terCheckFailure: 1 measurement(s) failed m3ter validation (UndefinedMeter: 1; first: "
    "UndefinedMeter (uid bad-2, meter no_such_meter, account acme)",
    "job_unknown": "M3terFinalFailure: m3ter returned 404 Not Found for GET",
}


def test_every_sensor_fails_the_same_way_in_poke_and_deferrable_mode(airflow_env, m3ter_emulator):
    for mode in ("poke", "deferrable"):
        m3ter_emulator.reset()
        m3ter_emulator.set_job_mode("time", 1.0)
        m3ter_emulator.set_job_outcome("billjob", "failed")
        m3ter_emulator.set_job_outcome("dataexport", "failed")
        result, states, _values, _run_id = _run(airflow_env, m3ter_emulator, "m3ter_sensors_fail", mode)
        assert result.returncode != 0
        assert {task: states[task] for task in EXPECTED_FAILURES} == dict.fromkeys(
            EXPECTED_FAILURES, "failed"
        )
        assert {state for task, state in states.items() if task not in EXPECTED_FAILURES} == {"success"}
        logs = task_logs(result.output)
        for task, message in EXPECTED_FAILURES.items():
            assert message in logs[task], f"{mode}: {task} lacks {message!r}"
        assert "ended with status CANCELLED" in logs["bill_cancelled"]
        deferred = {task for task in EXPECTED_FAILURES if DEFERRED in logs[task]}
        if mode == "deferrable":
            # the 404 is final at the first check; every other failure arrived through a trigger
            assert deferred == set(EXPECTED_FAILURES) - {"job_unknown"}
            assert (
                "gave up waiting at the deadline (no m3ter meter with code 'never_there' yet)"
                in logs["meter_never"]
            )
        else:
            assert deferred == set()
