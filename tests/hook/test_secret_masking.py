"""A real DAG run against an emulator with a known secret: no secret or token escapes unmasked.

The DAG logs, prints and raises the API secret and every token the hook used, renders the secret
into a template field and returns the hook's and client's reprs. The test then scans the run's
console output, the task log files, the run's XComs and rendered fields. A control token fetched
behind the hook's back must show up, proving the scan can see a leak.

Tasks run under Airflow's real supervisor (``tests/supervised.py``): plain
``airflow dags test`` prints task logs through the CLI's logging, which applies no masking at all
(not even to connection passwords), so it cannot show what a worker's task log contains.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_db import latest_run_id, rendered_fields, task_instances, xcoms
from tests.dagrun import AirflowEnv
from tests.supervised import supervised_command

pytestmark = pytest.mark.dags

DAGS = Path(__file__).parent / "dags"
DAG_ID = "m3ter_hook_secret_masking"
SECRET = "Known-m3ter-Secret-5f2b9c1e"


def test_secret_and_tokens_never_appear_unmasked(
    airflow_env: AirflowEnv, m3ter_emulator_factory: Callable[..., Any], tmp_path: Path
) -> None:
    emu = m3ter_emulator_factory(api_secret=SECRET, access_key_id="masking-key")
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.touch()

    log_dir = tmp_path / "task-logs"
    env = {
        **airflow_env.base_env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        **emu.airflow_env(),
        "M3TER_TEST_TOKENS_FILE": str(tokens_file),
    }
    proc = subprocess.run(
        supervised_command(DAG_ID, log_dir=log_dir),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    console = proc.stdout + proc.stderr

    recorded = [line.split(" ", 1) for line in tokens_file.read_text().splitlines()]
    hook_tokens = {token for kind, token in recorded if kind == "hook"}
    control = [token for kind, token in recorded if kind == "control"]
    run_id = latest_run_id(airflow_env.home, DAG_ID)
    tis = task_instances(airflow_env.home, DAG_ID, run_id)
    context = f"task instances: {tis}\nconsole tail:\n{console[-5000:]}"

    # the DAG did what it should: two tokens in the first task (a refresh), one in the second
    assert tis["leak_in_logs"]["state"] == "success", context
    assert tis["leak_in_exception"]["state"] == "failed", context
    assert tis["leak_in_template"]["state"] == "success", context
    assert tis["console_link"]["state"] == "success", context
    assert len(hook_tokens) == 3, recorded
    assert len(control) == 1
    assert emu.stats()["tokens_issued"] == 4  # every token issued is one the test knows about

    log_files = sorted(log_dir.glob("*.log"))
    assert [p.name for p in log_files] == [
        "console_link.try1.log",
        "leak_in_exception.try1.log",
        "leak_in_logs.try1.log",
        "leak_in_template.try1.log",
    ], context
    logs = "\n".join(p.read_text(errors="replace") for p in log_files)
    stored = xcoms(airflow_env.home, DAG_ID, run_id)
    rendered = rendered_fields(airflow_env.home, DAG_ID, run_id)
    haystacks = {
        "console output": console,
        "task log files": logs,
        "xcom": json.dumps(stored),
        "rendered fields": json.dumps(rendered),
    }
    for name, text in haystacks.items():
        assert SECRET not in text, f"API secret leaked in {name}"
        for token in hook_tokens:
            assert token not in text, f"access token leaked in {name}"

    # the leak attempts were really made, and came out masked
    assert logs.count('"LEAK-CHECK logger token=*** secret=***"') == 2, logs
    assert logs.count('"LEAK-CHECK print token=*** secret=***"') == 2, logs
    assert '"exc_value":"LEAK-CHECK exception token=*** secret=***"' in logs, logs
    assert '"LEAK-CHECK template secret=***"' in logs, logs
    # the scan would have caught a leak: the unregistered control token is visible
    assert f"LEAK-CHECK control token={control[0]}" in logs, logs

    # XComs hold the reprs (masked by construction) and the Console link
    by_key = {(x["task_id"], x["key"]): x["value"] for x in stored}
    reprs = json.loads(by_key[("leak_in_logs", "return_value")])
    assert reprs["hook"] == "M3terHook(m3ter_conn_id='m3ter_default')"
    assert emu.config_url in reprs["client"]
    assert "api_secret" not in reprs["settings"]
    assert json.loads(by_key[("console_link", "m3ter_console_url")]) == (
        f"https://console.m3ter.com/org/{emu.org_id}/metering/meters/meter-1"
    )
    assert "Failed to push an xcom for task operator extra link" not in logs
    assert "***" in json.dumps(rendered)
