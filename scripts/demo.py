"""The main job: the example DAGs end to end against the local m3ter emulator.

``make run`` calls this. It starts the emulator, proves it answers an authenticated request,
creates a fresh Airflow home, runs every DAG listed in ``example_dags/demo_order.txt`` with
``airflow dags test``, and prints what the emulator stored. Full task logs land in
``demo-output/logs/``. Exits non-zero if any DAG run fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from airflow_provider_m3ter.emulator import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "example_dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def _say(text: str) -> None:
    print(text, flush=True)


def _token(emu: EmulatorProcess) -> str:
    reply = requests.post(
        f"{emu.config_url}/oauth/token",
        auth=(emu.access_key_id, emu.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    reply.raise_for_status()
    return str(reply.json()["access_token"])


def authenticated_request(emu: EmulatorProcess) -> None:
    """Fetch an OAuth token with the client-credentials grant and list meters with it."""
    token = requests.post(
        f"{emu.config_url}/oauth/token",
        auth=(emu.access_key_id, emu.api_secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    token.raise_for_status()
    body = token.json()
    meters = requests.get(
        f"{emu.config_url}/organizations/{emu.org_id}/meters",
        headers={"Authorization": f"Bearer {body['access_token']}"},
        params={"pageSize": 10},
        timeout=10,
    )
    meters.raise_for_status()
    _say(
        f"  POST /oauth/token -> {token.status_code} (token_type={body['token_type']}, "
        f"expires_in={body['expires_in']} s)"
    )
    _say(
        f"  GET /organizations/{emu.org_id}/meters -> {meters.status_code}, "
        f"{len(meters.json()['data'])} meters"
    )
    unauth = requests.get(f"{emu.config_url}/organizations/{emu.org_id}/meters", timeout=10)
    _say(f"  the same call without a token -> {unauth.status_code} {unauth.json()}")


def demo_dag_ids() -> list[str]:
    """DAG ids to run, in order, from ``example_dags/demo_order.txt`` (blank lines and # ignored)."""
    listing = DAGS / "demo_order.txt"
    if not listing.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in listing.read_text().splitlines())
    return [line for line in lines if line]


def run_dags(emu: EmulatorProcess, out: Path, dag_ids: list[str]) -> dict[str, bool]:
    """Run each DAG with ``airflow dags test`` in a fresh Airflow home; return success per DAG id."""
    home = out / "airflow-home"
    logs = out / "logs"
    shutil.rmtree(home, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_M3TER_DEFAULT": emu.connection_json(),
        # The example DAGs wait like production (30 s polls, 2 min for validation to settle);
        # against the emulator a second is plenty.
        "M3TER_EXAMPLE_POLL_SECONDS": "1",
        "M3TER_EXAMPLE_SETTLE_SECONDS": "3",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
    }
    _say(f"\nCreating a fresh Airflow home in {home} (airflow db migrate) ...")
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    results: dict[str, bool] = {}
    for dag_id in dag_ids:
        started = time.monotonic()
        proc = subprocess.run(
            [AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, cwd=str(REPO)
        )
        output = proc.stdout + proc.stderr
        (logs / f"{dag_id}.log").write_text(output)
        ok = proc.returncode == 0 and "state=success" in output
        results[dag_id] = ok
        _say(
            f"  {dag_id:<40} {'success' if ok else 'FAILED':<8} {time.monotonic() - started:5.1f} s"
            f"   (log: {logs / f'{dag_id}.log'})"
        )
        if not ok:
            tail = "\n".join(output.splitlines()[-25:])
            _say(f"--- last lines of {dag_id} ---\n{tail}\n---")
    return results


def show_stored(emu: EmulatorProcess) -> None:
    """Print what the emulator holds now: counts, measurements by meter and account, meters."""
    stats = emu.stats()
    measurements = emu.measurements()
    _say("\nWhat the emulator stored:")
    _say(
        f"  measurements stored: {stats['measurements_stored']}   received: "
        f"{stats['measurements_received']}   duplicates received: {stats['duplicates_received']}"
    )
    _say(f"  ingest requests: {stats['ingest_requests']}   tokens issued: {stats['tokens_issued']}")
    by_meter = collections.Counter((m.get("meter"), m.get("account")) for m in measurements)
    for (meter, account), count in sorted(by_meter.items()):
        _say(f"    {meter:<24} {account:<24} {count:>7}")
    bearer = {"Authorization": f"Bearer {_token(emu)}"}
    meters = requests.get(
        f"{emu.config_url}/organizations/{emu.org_id}/meters",
        headers=bearer,
        params={"pageSize": 100},
        timeout=10,
    ).json()["data"]
    failures = requests.get(
        f"{emu.config_url}/organizations/{emu.org_id}/events",
        headers=bearer,
        params={"eventName": "ingest.validation.failure", "pageSize": 100},
        timeout=10,
    ).json()["data"]
    _say(f"  ingest validation failures (m3ter's asynchronous check): {len(failures)}")
    if meters:
        _say(f"  meters: {', '.join(sorted(m['code'] for m in meters))}")
    if measurements:
        _say(f"  first measurement: {json.dumps(measurements[0], sort_keys=True)}")


def main() -> int:
    """Entry point of ``make run``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "demo-output", help="where logs and the Airflow home go"
    )
    parser.add_argument("--dag", action="append", help="run only this DAG id (repeatable)")
    args = parser.parse_args()

    _say("Starting the local m3ter emulator ...")
    with EmulatorProcess(job_step_seconds=1.0) as emu:
        _say(f"  Config API {emu.config_url}   Ingest API {emu.ingest_url}   org {emu.org_id}")
        authenticated_request(emu)
        dag_ids = args.dag or demo_dag_ids()
        if not dag_ids:
            _say("\nNo example DAGs listed in example_dags/demo_order.txt yet.")
            return 0
        results = run_dags(emu, args.out, dag_ids)
        show_stored(emu)
    failed = [dag for dag, ok in results.items() if not ok]
    _say(f"\n{len(results) - len(failed)} of {len(results)} example DAGs succeeded.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
