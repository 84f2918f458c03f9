"""Pre-flight and reconciliation in real ``airflow dags test`` runs, in every sensor mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.emulator.api import Api
from tests.preflight.conftest import setup_config
from tests.sensors.dagruns import run_id_of, task_logs, task_states, xcoms

pytestmark = pytest.mark.dags

DAGS = Path(__file__).parent / "dags"
DAG_ID = "m3ter_reconcile_checks"
INGEST = "POST /organizations/{orgId}/measurements"


def _run(airflow_env, emulator, mode: str, tamper: bool = False):
    setup_config(Api(emulator))
    env = {
        "AIRFLOW_CONN_M3TER_DEFAULT": json.dumps(emulator.connection()),
        "M3TER_TEST_SENSOR_MODE": mode,
        "M3TER_TEST_TAMPER": emulator.config_url if tamper else "",
    }
    result = airflow_env.dags_test(DAG_ID, dags_folder=DAGS, env=env, logical_date="2024-05-02")
    run_id = run_id_of(result.output, DAG_ID)
    return result, task_states(airflow_env.home, DAG_ID, run_id), xcoms(airflow_env.home, DAG_ID, run_id)


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_clean_run_reconciles_in_every_mode(airflow_env, m3ter_emulator, mode):
    result, states, values = _run(airflow_env, m3ter_emulator, mode)
    assert states == {"ingest": "success", "tamper": "success", "reconcile": "success"}, result.output[-5000:]
    summary = values["ingest"]
    assert (summary["read"], summary["sent"], summary["invalid"]) == (9, 8, 1)
    assert summary["totals"]["api_calls"]["acme"]["measure.requests"] == [160, 4]
    # the bad row was reported before anything was sent, then the rest went in one request
    assert m3ter_emulator.stats()["requests"][INGEST] == {"200": 1}
    assert "row-99" not in {m["uid"] for m in m3ter_emulator.measurements()}
    report = values["reconcile"]
    assert (report["compared"], report["different"]) == (4, 0)
    logs = task_logs(result.output)
    assert "api_calls  acme     measure.requests  160" in logs["reconcile"]
    if mode == "deferrable":
        assert "Pausing task as DEFERRED" in logs["reconcile"] or report["queries"] == 1


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_tampered_storage_fails_naming_each_difference(airflow_env, m3ter_emulator, mode):
    result, states, _values = _run(airflow_env, m3ter_emulator, mode, tamper=True)
    assert states["reconcile"] == "failed", result.output[-5000:]
    logs = task_logs(result.output)["reconcile"]
    assert "differs from what the run sent in 3 of 4" in logs
    assert (
        "api_calls/acme/measure.requests: sent sum 160 over 4, m3ter has 150 over 3 (difference -10, -1)"
        in logs
    )
    assert "api_calls/acme/measure.errors: sent sum 4 over 4, m3ter has 3 over 3 (difference -1, -1)" in logs
    assert (
        "api_calls/beta/measure.requests: sent sum 200 over 4, m3ter has 201 over 4 (difference +1, +0)"
        in logs
    )


def test_example_dag_reports_the_bad_row_sends_the_rest_and_reconciles(airflow_env, m3ter_emulator):
    dag_id = "example_m3ter_reconcile"
    env = {
        **m3ter_emulator.airflow_env(),
        "M3TER_EXAMPLE_POLL_SECONDS": "1",
        "M3TER_EXAMPLE_SETTLE_SECONDS": "3",
    }
    result = airflow_env.dags_test(dag_id, env=env, logical_date="2026-03-02")  # after its start_date
    assert result.succeeded, result.output[-5000:]
    run_id = run_id_of(result.output, dag_id)
    assert set(task_states(airflow_env.home, dag_id, run_id).values()) == {"success"}
    values = xcoms(airflow_env.home, dag_id, run_id)
    summary = values["ingest_usage"]
    logs = task_logs(result.output)
    assert (summary["read"], summary["sent"], summary["invalid"]) == (5, 4, 1), logs["ingest_usage"][-3000:]
    logs = task_logs(result.output)
    assert "measure.errors" in logs["ingest_usage"]  # the bad row, named before sending
    assert sorted((m["meter"], m["account"]) for m in m3ter_emulator.measurements()) == [
        ("api_calls", "northwind"),
        ("api_calls", "northwind"),
        ("api_calls", "umbrella"),
        ("data_transfer", "northwind"),
    ]
    assert values["reconcile"]["different"] == 0
    printed = logs["print_reconciliation"]
    report = values["reconcile"]
    assert f"Reconciliation {report['start']} .. {report['end']}: 0 differences" in printed
    assert "api_calls      northwind  measure.requests  1240" in printed
