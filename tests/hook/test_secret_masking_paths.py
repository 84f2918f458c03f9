"""Real Airflow task runs with DEBUG logging: no credential and no piece of a signed URL escapes.

Every path that holds a secret runs under the real supervisor (``tests/supervised.py``, so task
logs pass through Airflow's masker as on a worker) with ``logging_level = DEBUG``: the file-upload
operator waiting in the task and deferred, the job sensor poking and deferred (triggers run inline,
their logs on the console), the hook's connection test, and an upload with a forged signature.
The console, every task log file, every XCom and every rendered field are scanned for the API secret
(non-ASCII, so UTF-8 credentials are exercised too), its Basic-header form, every access token, and
every upload token and signature header the emulator issued. urllib3's request lines for the PUTs
must be in the logs, redacted, so the scan provably covered them.
"""

from __future__ import annotations

import base64
import json
import re
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
DAG_ID = "m3ter_secret_paths"
DEFERRED_DAG_ID = "m3ter_secret_paths_deferred"
SECRET = "Päth-Scan-Sécret-€-4c1d9b7e"
KEY = "päth-key"
# urllib3's DEBUG request line; task log files hold it JSON-escaped (\")
REQUEST_LINE = r'\\?"{method} (\S*) HTTP/1\.1\\?" (\d{{3}})'


def _forbidden(emu: Any) -> dict[str, str]:
    issued = emu.secrets()
    return {
        "api secret": SECRET,
        "basic credentials": base64.b64encode(f"{KEY}:{SECRET}".encode()).decode(),
        **{f"access token {i}": t for i, t in enumerate(issued["access_tokens"])},
        **{f"upload token {i}": t for i, t in enumerate(issued["upload_tokens"])},
        **{f"upload signature {i}": v for i, v in enumerate(issued["upload_headers"])},
    }


def _scan(forbidden: dict[str, str], haystacks: dict[str, str]) -> None:
    for where, text in haystacks.items():
        for what, value in forbidden.items():
            assert value not in text, f"{what} leaked in {where}"


@pytest.fixture
def scan_setup(airflow_env: AirflowEnv, m3ter_emulator_factory: Callable[..., Any], tmp_path: Path):
    emu = m3ter_emulator_factory(api_secret=SECRET, access_key_id=KEY, job_mode="time", job_step_seconds=0.2)
    source = tmp_path / "usage.jsonl"
    rows = [
        {
            "meter": "api_calls",
            "account": "acme",
            "ts": f"2024-05-01T00:{i:02d}:00Z",
            "measure": {"requests": i},
        }
        for i in range(20)
    ]
    source.write_text("\n".join(json.dumps(row) for row in rows))
    env = {
        **airflow_env.base_env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
        **emu.airflow_env(),
        "M3TER_TEST_UPLOAD_FILE": str(source),
    }
    return emu, env


def test_supervised_task_paths_keep_secrets_and_signed_url_pieces_out(
    airflow_env: AirflowEnv, scan_setup: Any, tmp_path: Path
) -> None:
    emu, env = scan_setup
    log_dir = tmp_path / "task-logs"
    proc = subprocess.run(
        supervised_command(DAG_ID, log_dir=log_dir),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    console = proc.stdout + proc.stderr
    run_id = latest_run_id(airflow_env.home, DAG_ID)
    tis = task_instances(airflow_env.home, DAG_ID, run_id)
    context = f"task instances: {tis}\nconsole tail:\n{console[-5000:]}"
    for task_id in ("upload", "sensor_poke", "hook_test"):
        assert tis[task_id]["state"] == "success", context
    assert tis["forged_upload"]["state"] == "failed", context

    logs = "\n".join(p.read_text(errors="replace") for p in sorted(log_dir.glob("*.log")))
    issued = emu.secrets()
    assert len(issued["upload_tokens"]) == 2  # the upload and the forged one
    stored = xcoms(airflow_env.home, DAG_ID, run_id)
    _scan(
        _forbidden(emu),
        {
            "console output": console,
            "task log files": logs,
            "xcom": json.dumps(stored),
            "rendered fields": json.dumps(rendered_fields(airflow_env.home, DAG_ID, run_id)),
        },
    )
    # DEBUG was really on: urllib3's request line of every PUT is in the task logs, its path redacted
    puts = re.findall(REQUEST_LINE.format(method="PUT"), logs)
    assert sorted(status for _, status in puts) == ["200", "403"], puts
    assert all("***" in path for path, _ in puts), puts
    assert ("/oauth/token", "200") in re.findall(REQUEST_LINE.format(method="POST"), logs)
    by_key = {(x["task_id"], x["key"]): x["value"] for x in stored}
    ok, message = json.loads(by_key[("hook_test", "return_value")])
    assert ok is True, message
    assert "Signature does not match" in logs  # the forged upload's error reached the task log


def test_deferred_paths_keep_secrets_and_signed_url_pieces_out(
    airflow_env: AirflowEnv, scan_setup: Any, tmp_path: Path
) -> None:
    emu, env = scan_setup
    result = airflow_env.dags_test(DEFERRED_DAG_ID, dags_folder=DAGS, env=env, timeout=300)
    assert result.returncode == 0, result.output[-5000:]
    # Airflow's own DEBUG logging under ``airflow dags test`` prints every message the task sends its
    # in-process supervisor, MaskSecret(value=<the secret>) included (a worker's supervisor logs
    # "body omitted", as the supervised test above shows): those lines of Airflow's test harness are
    # the only ones left out of the scan
    lines = result.output.splitlines(keepends=True)
    harness = [line for line in lines if "Sending request" in line and "msg=MaskSecret(" in line]
    assert harness, "expected Airflow's in-process comms lines at DEBUG"
    console = "".join(line for line in lines if line not in harness)
    run_id = latest_run_id(airflow_env.home, DEFERRED_DAG_ID)
    tis = task_instances(airflow_env.home, DEFERRED_DAG_ID, run_id)
    assert {t: v["state"] for t, v in tis.items()} == {"upload": "success", "sensor_deferred": "success"}, tis
    assert len(emu.secrets()["upload_tokens"]) == 1
    stored = xcoms(airflow_env.home, DEFERRED_DAG_ID, run_id)
    _scan(_forbidden(emu), {"console output": console, "xcom": json.dumps(stored)})
    puts = re.findall(REQUEST_LINE.format(method="PUT"), console)
    assert [status for _, status in puts] == ["200"], puts
    assert "***" in puts[0][0]
