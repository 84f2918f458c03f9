"""Pre-flight and reconciliation: what they cost on the 1,000,000-row ingest benchmark.

Uses the file and emulator set-up of ``benchmarks/ingest_cpu.py`` (JSON Lines, meter ``api_calls``,
997 accounts ``customer-0000`` ...). Before each run the emulator is reset and given the meter and
the 997 accounts, so pre-flight finds every code. Each run is a fresh child process sending the
file through ``FileSource`` -> ``IngestRun`` -> ``M3terClient``, in three variants:

* ``no-ledger``: the ingest path with the run-totals ledger switched off (its ``observe``/``observe_many``
  made a no-op): the path as it was before run totals and pre-flight existed;
* ``totals``: run totals on (the default), pre-flight off (``preflight=False``);
* ``preflight``: run totals and pre-flight on (the operator's default).

Reported: the child's CPU seconds (``time.process_time``, imports excluded), CPU µs per
measurement, the Config list calls pre-flight made (emulator ``/_emulator/stats`` deltas of
``GET /meters`` and ``GET /accounts``), and for ``preflight`` runs one reconciliation check
(``check_reconciliation`` over the file's period): the usage queries it made and its wall time.
Medians of ``--runs`` runs, variants interleaved.

Run from the repository root::

    .venv/bin/python benchmarks/preflight_cost.py --size 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.ingest_cpu import OUT, write_usage  # noqa: E402

VARIANTS = ("no-ledger", "totals", "preflight")
ACCOUNTS = [f"customer-{i:04d}" for i in range(997)]
METER = {
    "code": "api_calls",
    "name": "API calls",
    "dataFields": [
        {"category": "WHO", "code": "user", "name": "User"},
        {"category": "WHERE", "code": "region", "name": "Region"},
        {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "1"},
        {"category": "MEASURE", "code": "gb", "name": "GB", "unit": "GBy"},
    ],
    "derivedFields": [],
}


def child(variant: str, path: Path, emu: dict[str, str]) -> dict[str, Any]:
    """One run in this process: CPU and wall seconds of the ingest, and its summary."""
    from airflow_provider_m3ter.client import ClientSettings, M3terClient
    from airflow_provider_m3ter.client.ingest import IngestRun
    from airflow_provider_m3ter.client.preflight import Preflight
    from airflow_provider_m3ter.client.run_totals import RunLedger
    from airflow_provider_m3ter.operators.sources import FileSource

    if variant == "no-ledger":
        RunLedger.observe = lambda self, m, row, line: None  # type: ignore[method-assign]
        RunLedger.observe_many = lambda self, rows, columns=None: None  # type: ignore[method-assign]
    settings = ClientSettings(
        org_id=emu["org_id"],
        access_key_id=emu["access_key_id"],
        api_secret=emu["api_secret"],
        config_url=emu["config_url"],
        ingest_url=emu["ingest_url"],
        ingest_requests_per_second=None,
        ingest_requests_per_window=None,
    )
    source = FileSource(path)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with M3terClient(settings) as client:
        preflight = Preflight(client) if variant == "preflight" else None
        run = IngestRun(client, namespace="benchmark", spill_dir=str(OUT), preflight=preflight)
        summary = run.run(source.rows(), source.name)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu": cpu, "wall": wall, "sent": summary.sent, "invalid": summary.invalid,
            "summary": {k: summary.as_dict()[k] for k in ("totals", "ts_min", "ts_max")}}  # fmt: skip


def _run_child(variant: str, path: Path, emu: Any) -> dict[str, Any]:
    handle = {
        k: getattr(emu, k) for k in ("org_id", "access_key_id", "api_secret", "config_url", "ingest_url")
    }
    code = (
        f"import json, sys; from pathlib import Path; sys.path.insert(0, {str(REPO)!r});"
        "import requests, airflow_provider_m3ter.client.ingest, airflow_provider_m3ter.client.preflight, "
        "airflow_provider_m3ter.operators.sources;"
        "from benchmarks.preflight_cost import child;"
        f"print(json.dumps(child({variant!r}, Path({str(path)!r}), json.loads({json.dumps(handle)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _config_calls(stats: dict[str, Any]) -> int:
    routes = ("GET /organizations/{orgId}/meters", "GET /organizations/{orgId}/accounts")
    return sum(sum(stats["requests"].get(route, {}).values()) for route in routes)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import requests

    from airflow_provider_m3ter.client import ClientSettings, M3terClient
    from airflow_provider_m3ter.client.reconcile import check_reconciliation
    from airflow_provider_m3ter.emulator.process import EmulatorProcess

    path = OUT / f"usage-{args.size}.jsonl"
    write_usage(path, args.size)
    results: dict[str, list[dict[str, Any]]] = {}
    with EmulatorProcess() as emu:
        session = requests.Session()
        for run in range(args.runs):
            for variant in VARIANTS:
                emu.reset()
                token = emu.token()
                base = f"{emu.config_url}/organizations/{emu.org_id}"
                auth = {"Authorization": f"Bearer {token}"}
                session.post(f"{base}/meters", json=METER, headers=auth, timeout=30).raise_for_status()
                for code in ACCOUNTS:
                    body = {"code": code, "name": code, "emailAddress": "b@example.com"}
                    session.post(f"{base}/accounts", json=body, headers=auth, timeout=30).raise_for_status()
                before = _config_calls(emu.stats())
                result = _run_child(variant, path, emu)
                stats = emu.stats()
                result["config_calls"] = _config_calls(stats) - before
                result["stored"] = stats["measurements_stored"]
                if variant == "preflight":
                    emu.validate_now()
                    settings = ClientSettings(
                        org_id=emu.org_id, access_key_id=emu.access_key_id, api_secret=emu.api_secret,
                        config_url=emu.config_url, ingest_url=emu.ingest_url,
                    )  # fmt: skip
                    emu.set_limits(enabled=True)  # m3ter's limits, Data Explorer's 1/s with bursts of 10
                    started = time.perf_counter()
                    with M3terClient(settings) as client:
                        end = result["summary"]["ts_max"].replace("Z", ".000001Z")
                        check = check_reconciliation(
                            client, result["summary"], result["summary"]["ts_min"], end, settle_until=0.0
                        )
                    result["reconcile_state"] = check.state
                    result["reconcile_queries"] = check.detail.get("queries")
                    result["reconcile_rows"] = check.detail.get("compared")
                    result["reconcile_wall"] = time.perf_counter() - started
                result.pop("summary")
                results.setdefault(variant, []).append(result)
                print(f"# {variant:<9} run {run + 1}: {json.dumps(result)}", flush=True)

    print(
        f"\nResult (Python {platform.python_version()}, {platform.machine()}, {args.size:,} measurements):\n"
    )
    print("| variant | runs | client CPU s | CPU µs / measurement | vs no-ledger | Config list calls |")
    print("|---|---:|---:|---:|---:|---:|")
    base_cpu = statistics.median(r["cpu"] for r in results["no-ledger"])
    for variant in VARIANTS:
        runs = results[variant]
        cpu = statistics.median(r["cpu"] for r in runs)
        calls = statistics.median(r["config_calls"] for r in runs)
        print(f"| {variant} | {len(runs)} | {cpu:.2f} | {cpu / args.size * 1e6:.2f} | "
              f"{(cpu / base_cpu - 1) * 100:+.1f} % | {calls:.0f} |")  # fmt: skip
    totals_cpu = statistics.median(r["cpu"] for r in results["totals"])
    pre_cpu = statistics.median(r["cpu"] for r in results["preflight"])
    print(f"\n- pre-flight alone (preflight vs totals): {(pre_cpu / totals_cpu - 1) * 100:+.1f} % CPU")
    reconcile = results["preflight"]
    print(
        f"- reconciliation: states {sorted({r['reconcile_state'] for r in reconcile})}, usage queries per "
        f"check {sorted({r['reconcile_queries'] for r in reconcile})}, "
        f"compared {reconcile[0]['reconcile_rows']} "
        f"meter/account/fields, wall {statistics.median(r['reconcile_wall'] for r in reconcile):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
