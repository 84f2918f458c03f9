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


def test_a_rerun_of_a_loaded_day_next_to_another_dags_rerun(airflow_env, m3ter_emulator):
    """Issue 11, item 3, as the deployment test met it: a manual run of example_m3ter_ingest_events
    for a day already loaded, while another DAG reruns its own load of the same meter and accounts.

    m3ter's events are the organization's: before ``other_loads="ignore"`` the check counted the
    other DAG's ``DuplicateUid`` resends (not derived in this DAG's namespace) as this run's
    failures (``DuplicateUid: 144`` in the deployment). Now it passes, recognising exactly its own
    12 resends, and leaves the other load's events out.
    """
    import threading

    from airflow_provider_m3ter.client.core import M3terClient
    from airflow_provider_m3ter.client.ingest import IngestRun
    from airflow_provider_m3ter.client.settings import ClientSettings

    m3ter_emulator.set_job_mode("time", 0.5)
    _create_api_calls_meter(m3ter_emulator)
    env = {**m3ter_emulator.airflow_env(), **FAST}
    first = airflow_env.dags_test(
        "example_m3ter_ingest_events", dags_folder=EXAMPLE_DAGS, env=env, logical_date="2024-05-02"
    )
    assert first.succeeded, first.output[-5000:]
    stored = {m["uid"]: m for m in m3ter_emulator.measurements()}
    assert len(stored) == 12

    other_rows = [
        {"meter": "api_calls", "account": m["account"], "ts": m["ts"], "measure": {"requests": 1}}
        for m in stored.values()
    ]
    settings = ClientSettings(
        org_id=m3ter_emulator.org_id,
        access_key_id=m3ter_emulator.access_key_id,
        api_secret=m3ter_emulator.api_secret,
        config_url=m3ter_emulator.config_url,
        ingest_url=m3ter_emulator.ingest_url,
    )
    stop = threading.Event()
    resent = []

    def other_dag_reruns() -> None:  # example_m3ter_ingest's namespace, rerun again and again
        with M3terClient(settings) as client:
            while not stop.is_set():
                IngestRun(client, namespace="example_m3ter_ingest.ingest_api_usage").run_measurements(
                    [dict(row) for row in other_rows]
                )
                resent.append(len(other_rows))
                stop.wait(0.3)

    other = threading.Thread(target=other_dag_reruns, daemon=True)
    other.start()
    try:
        # another manual run whose interval is the same day (a rerun of it, as a new DAG run)
        rerun = airflow_env.dags_test(
            "example_m3ter_ingest_events",
            dags_folder=EXAMPLE_DAGS,
            env=env,
            logical_date="2024-05-02T00:30:00+00:00",
        )
    finally:
        stop.set()
        other.join(30)
    assert rerun.succeeded, rerun.output[-5000:]
    assert len(resent) >= 3  # the other load really ran through the rerun's window
    run_id = run_id_of(rerun.output, "example_m3ter_ingest_events")
    report = xcoms(airflow_env.home, "example_m3ter_ingest_events", run_id)["check_ingest_events"]
    assert report["failures"] == 0, report
    assert report["resends"] == 12, report  # exactly this run's resends of the day
    assert report["other_loads"] > 0, report  # the other DAG's resends seen and left out
    # m3ter holds the day once: the rerun stored nothing new under this DAG's uids
    ours = {uid for uid in stored}
    assert {m["uid"] for m in m3ter_emulator.measurements()} >= ours
    assert sum(1 for m in m3ter_emulator.measurements() if m["uid"] in ours) == 12
