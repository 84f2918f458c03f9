"""The two example DAGs of this part run end to end against the emulator with ``airflow dags test``."""

from __future__ import annotations

import pytest

from tests.dagrun import EXAMPLE_DAGS
from tests.sensors.dagruns import run_id_of, task_states, xcoms

pytestmark = pytest.mark.dags

FAST = {"M3TER_EXAMPLE_POLL_SECONDS": "0.5", "M3TER_EXAMPLE_SETTLE_SECONDS": "2"}


def _create_api_calls_meter(emulator) -> None:
    """The meter example_m3ter_meters creates, made here so these DAGs can run on their own."""
    from airflow_provider_m3ter.client.core import M3terClient
    from airflow_provider_m3ter.client.settings import ClientSettings

    fields = [
        ("WHO", "api_key"),
        ("WHAT", "endpoint"),
        ("WHERE", "region"),
        ("MEASURE", "requests"),
        ("MEASURE", "errors"),
    ]
    data_fields = [
        {
            "category": category,
            "code": code,
            "name": code,
            **({"unit": "{request}"} if category == "MEASURE" else {}),
        }
        for category, code in fields
    ]
    settings = ClientSettings(
        org_id=emulator.org_id,
        access_key_id=emulator.access_key_id,
        api_secret=emulator.api_secret,
        config_url=emulator.config_url,
        ingest_url=emulator.ingest_url,
    )
    with M3terClient(settings) as client:
        client.request(
            "POST",
            "meters",
            json={"code": "api_calls", "name": "API calls", "dataFields": data_fields, "derivedFields": []},
        )


@pytest.mark.parametrize(
    ("dag_id", "tasks"),
    [
        (
            "example_m3ter_ingest_events",
            {"api_usage", "api_calls_meter_ready", "ingest_api_calls", "check_ingest_events"},
        ),
        (
            "example_m3ter_backfill",
            {"export_month", "api_calls_meter_ready", "upload_month", "check_ingest_events"},
        ),
    ],
)
def test_example_dag_runs_against_the_emulator(airflow_env, m3ter_emulator, dag_id, tasks):
    m3ter_emulator.set_job_mode("time", 0.5)
    _create_api_calls_meter(m3ter_emulator)
    result = airflow_env.dags_test(
        dag_id,
        dags_folder=EXAMPLE_DAGS,
        env={**m3ter_emulator.airflow_env(), **FAST},
        logical_date="2024-05-02",
    )
    assert result.succeeded, result.output[-5000:]
    run_id = run_id_of(result.output, dag_id)
    assert task_states(airflow_env.home, dag_id, run_id) == dict.fromkeys(tasks, "success")
    values = xcoms(airflow_env.home, dag_id, run_id)
    # the measurements m3ter stored carry every field the meter defines: no validation failures
    assert values["check_ingest_events"]["failures"] == 0
    stored = m3ter_emulator.measurements()
    if dag_id == "example_m3ter_backfill":
        assert values["upload_month"]["status"] == "succeeded"
        assert values["upload_month"]["measurements"] == len(stored) == 31 * 24 * 3
        assert "Pausing task as DEFERRED" in result.output
    else:
        assert len(stored) == 4 * 3
        # a manual run on 2024-05-02 covers the daily (01:00 UTC) interval that ended before it
        assert sorted({m["ts"] for m in stored}) == [f"2024-04-30T{h:02d}:00:00Z" for h in (1, 7, 13, 19)]
