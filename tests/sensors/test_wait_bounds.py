"""Every wait ends near its own limit with its own timeout message, whatever m3ter answers meanwhile
(5XX, 429 with and without ``Retry-After``, silence), in poke, reschedule and deferrable mode; and
one DAG run's pokes share one access token.

The connection allows long calls (60 s per read, 10 attempts, 300 s per call): without the wait's
bound on each check, one check alone would outlive the 5 s wait many times over.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sensors.dagruns import run_id_of, task_logs, task_states, xcoms

pytestmark = pytest.mark.dags

DAGS = Path(__file__).parent / "dags"
WAIT = 5.0
KINDS = ["errors", "throttled", "retry_after", "silence"]
UPLOADS = ["retry_after", "silence"]
# the end is marked by the next task, so scheduling between tasks is included
SLACK = 4.0


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_every_wait_ends_near_its_limit_whatever_m3ter_answers(
    airflow_env, m3ter_emulator, tmp_path: Path, mode: str
) -> None:
    m3ter_emulator.set_job_mode("manual")  # jobs never finish: only the limit can end a wait
    upload_file = tmp_path / "rows.jsonl"
    upload_file.write_text(
        json.dumps({"uid": "b-1", "meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z"}) + "\n"
    )
    connection = m3ter_emulator.connection()
    connection["extra"].update({"timeout": 60, "max_attempts": 10, "deadline": 300, "max_wait": 60})
    env = {
        "AIRFLOW_CONN_M3TER_DEFAULT": json.dumps(connection),
        "M3TER_TEST_SENSOR_MODE": mode,
        "M3TER_TEST_ADMIN_URL": m3ter_emulator.config_url + "/_emulator/",
        "M3TER_TEST_UPLOAD_FILE": str(upload_file),
    }
    result = airflow_env.dags_test("m3ter_wait_bounds", dags_folder=DAGS, env=env)
    run_id = run_id_of(result.output, "m3ter_wait_bounds")
    states = task_states(airflow_env.home, "m3ter_wait_bounds", run_id)
    marks = xcoms(airflow_env.home, "m3ter_wait_bounds", run_id)
    logs = task_logs(result.output)
    order = [f"fault_{k}" for k in KINDS] + [f"fault_upload_{k}" for k in UPLOADS] + ["fault_end"]
    waits = [f"wait_{k}" for k in KINDS] + [f"upload_{k}" for k in UPLOADS]
    for wait, start, end in zip(waits, order, order[1:], strict=False):
        assert states[wait] == "failed", (wait, states[wait], logs.get(wait, "")[-3000:])
        elapsed = marks[end] - marks[start]
        # reschedule mode: Airflow 3 counts the timeout from its first reschedule record, written when
        # the first poke ends; that poke's check is itself bounded by the timeout
        bound = 2 * WAIT if mode == "reschedule" and wait.startswith("wait_") else WAIT
        assert WAIT - 0.5 <= elapsed <= bound + SLACK, (wait, elapsed, logs.get(wait, "")[-4000:])
        if wait.startswith("wait_"):
            assert "Sensor has timed out" in logs[wait], logs[wait][-3000:]
        else:
            assert "did not finish within the 5 s wait_timeout" in logs[wait], logs[wait][-3000:]
    stats = m3ter_emulator.stats()
    # every check of every wait in this one process used the same token
    assert stats["tokens_issued"] == 1, stats["tokens_issued"]
    polls = sum(stats["requests"].get("GET /organizations/{orgId}/billjobs/{id}", {}).values())
    assert polls >= 2 * len(KINDS), stats["requests"]
