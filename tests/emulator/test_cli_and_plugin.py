"""Command line, start-up options, the subprocess handle, the Airflow connection it describes,
and the emulator's independence from the rest of the package."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from airflow_provider_m3ter.emulator import EmulatorOptions, EmulatorProcess
from airflow_provider_m3ter.emulator.options import build_parser, parse_options
from tests.emulator.api import Api

EMULATOR_DIR = Path(__file__).resolve().parents[2] / "airflow_provider_m3ter" / "emulator"
DOCUMENTED_FLAGS = {
    "--host", "--port", "--ingest-port", "--org-id", "--access-key-id", "--api-secret", "--token-ttl",
    "--limits", "--org-rps", "--ingest-window-requests", "--config-window-requests", "--window-seconds",
    "--job-mode", "--job-step-seconds", "--fault-rate", "--fault-kinds", "--fault-seed", "--latency-ms",
    "--snapshot",
}  # fmt: skip


def test_every_documented_option_parses_and_round_trips():
    known = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert known >= DOCUMENTED_FLAGS
    options = parse_options(
        ["--port", "0", "--limits", "on", "--org-rps", "7", "--fault-kinds", "500,drop_after",
         "--job-mode", "manual", "--window-seconds", "10", "--api-secret", "s3", "--retry-after", "2"]
    )  # fmt: skip
    assert options.limits is True
    assert options.org_rps == 7
    assert options.fault_kinds == ["500", "drop_after"]
    assert parse_options(options.to_argv()) == options
    defaults = parse_options([])
    assert (defaults.port, defaults.ingest_port, defaults.limits, defaults.job_mode) == (
        8080,
        8081,
        False,
        "time",
    )
    assert defaults.org_id == "00000000-0000-4000-8000-000000000001"
    assert "s3" not in repr(options)  # the secret stays out of reprs
    for bad in (["--fault-kinds", "418"], ["--limits", "maybe"], ["--job-mode", "fast"]):
        with pytest.raises(SystemExit):
            parse_options(bad)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fixed_ports_and_start_up_limits():
    config_port, ingest_port = free_port(), free_port()
    options = EmulatorOptions(
        port=config_port, ingest_port=ingest_port, limits=True, org_rps=2, org_id="org-x"
    )
    with EmulatorProcess(options) as emu:
        assert emu.config_url == f"http://127.0.0.1:{config_port}"
        assert emu.ingest_url == f"http://127.0.0.1:{ingest_port}"
        api = Api(emu)
        api.token()
        statuses = [api.get("meters").status_code for _ in range(8)]
        assert statuses.count(429) >= 2
        assert emu.stats()["rate_limited"]["org"] == statuses.count(429)


def test_ready_line_is_one_json_object_and_access_log_is_quiet():
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_m3ter.emulator", "--port", "0", "--ingest-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(process.stdout.readline())
        assert set(ready) == {"config_url", "ingest_url", "org_id"}
        assert requests.get(ready["config_url"] + "/_emulator/health", timeout=5).json()["status"] == "ok"
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out == ""
    assert "GET /_emulator/health" not in err


def test_connection_for_airflow(m3ter_emulator):
    from airflow.sdk.definitions.connection import Connection

    from_json = Connection.from_json(m3ter_emulator.connection_json(), conn_id="m3ter_default")
    from_uri = Connection(conn_id="m3ter_default", uri=m3ter_emulator.connection_uri())
    for conn in (from_json, from_uri):
        assert conn.conn_type == "m3ter"
        assert conn.host == m3ter_emulator.config_url
        assert conn.login == m3ter_emulator.access_key_id
        assert conn.password == m3ter_emulator.api_secret
        assert conn.extra_dejson == {"org_id": m3ter_emulator.org_id, "ingest_url": m3ter_emulator.ingest_url}
    assert m3ter_emulator.airflow_env() == {"AIRFLOW_CONN_M3TER_DEFAULT": m3ter_emulator.connection_json()}


def test_emulator_imports_nothing_from_the_rest_of_the_package():
    for source in EMULATOR_DIR.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith("airflow."), f"{source.name} imports {name}"
                assert name != "airflow", f"{source.name} imports airflow"
                if name.startswith("airflow_provider_m3ter"):
                    assert name.startswith("airflow_provider_m3ter.emulator"), f"{source.name} imports {name}"
    probe = (
        "import sys, airflow_provider_m3ter.emulator.server, airflow_provider_m3ter.emulator.pytest_plugin;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'airflow_provider_m3ter')"
        " and not m.startswith('airflow_provider_m3ter.emulator')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['airflow_provider_m3ter']"


def test_access_log_on_prints_one_line_per_request_on_stderr_without_upload_tokens():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_m3ter.emulator",
            "--port",
            "0",
            "--ingest-port",
            "0",
            "--access-log",
            "on",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = json.loads(process.stdout.readline())
        base = ready["config_url"]
        assert requests.get(base + "/_emulator/health", timeout=5).status_code == 200
        assert requests.get(base + "/organizations/x/meters", timeout=5).status_code == 403
        upload = requests.put(base + "/_upload/SECRET-UPLOAD-TOKEN-123", data=b"[]", timeout=5)
        assert upload.status_code == 403
        # misrouted (a doubled slash, an encoded one): the token is still not printed
        for odd in ("//_upload/SECRET-UPLOAD-TOKEN-456", "/x/_upload/SECRET-UPLOAD-TOKEN-789"):
            assert requests.put(base + odd, data=b"[]", timeout=5).status_code in (403, 404)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert out == ""  # stdout carries only the ready line
    assert '"GET /_emulator/health HTTP/1.1" 200' in err, err
    assert '"GET /organizations/x/meters HTTP/1.1" 403' in err, err
    assert '"PUT /_upload/*** HTTP/1.1" 403' in err, err
    assert "SECRET-UPLOAD-TOKEN" not in err, err
