"""Config API calls: token and HTTP request counts and wall time, this client vs the official SDK.

Starts one local emulator (limits off), creates a meter, then for each client and operation makes
``--calls`` Config calls from a fresh client object, ``--runs`` times. Token and HTTP request counts
come from the emulator's ``/_emulator/stats`` deltas, so they count what reached the server.

Run from the repository root::

    .venv/bin/python benchmarks/config_calls.py --calls 1000 --runs 5

Prints a Markdown table (the one recorded in ``benchmarks/RESULTS.md``). "client CPU s" is the CPU
time of the benchmark process (the client side only; the emulator runs in its own process), which
is steadier than wall time on a busy machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_m3ter.client import ClientSettings, M3terClient
from airflow_provider_m3ter.emulator.process import Emulator, EmulatorProcess

Operation = Callable[[], Any]


def _total_requests(stats: dict[str, Any]) -> int:
    """Every request the emulator answered (all routes, all statuses, the token route included)."""
    return sum(sum(by_status.values()) for by_status in stats["requests"].values())


def _our_client(emulator: Emulator) -> M3terClient:
    """This provider's client with pacing off (pacing is a policy, measured separately)."""
    settings = ClientSettings(
        org_id=emulator.org_id,
        access_key_id=emulator.access_key_id,
        api_secret=emulator.api_secret,
        config_url=emulator.config_url,
        ingest_url=emulator.ingest_url,
        config_requests_per_second=None,
        config_requests_per_window=None,
    )
    return M3terClient(settings)


def _sdk_client(emulator: Emulator) -> Any:
    """The official ``m3ter`` SDK (0.9.0), configured for the emulator."""
    from m3ter import M3ter

    return M3ter(
        api_key=emulator.access_key_id,
        api_secret=emulator.api_secret,
        org_id=emulator.org_id,
        base_url=emulator.config_url,
    )


def _operations(kind: str, client: Any, meter_id: str) -> dict[str, Operation]:
    """The calls to measure for one client object."""
    if kind == "provider":
        return {
            "retrieve meter": lambda: client.request("GET", f"meters/{meter_id}"),
            "list meters (1 page)": lambda: client.request("GET", "meters", params={"pageSize": 10}),
        }
    return {
        "retrieve meter": lambda: client.meters.retrieve(meter_id),
        "list meters (1 page)": lambda: client.meters.list(page_size=10),
    }


def _measure(emulator: Emulator, kind: str, operation: str, calls: int, meter_id: str) -> dict[str, float]:
    """One run: a fresh client object makes ``calls`` calls; returns counts and seconds."""
    client = _our_client(emulator) if kind == "provider" else _sdk_client(emulator)
    call = _operations(kind, client, meter_id)[operation]
    before = emulator.stats()
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    after = emulator.stats()
    client.close()
    return {
        "seconds": elapsed,
        "cpu": cpu,
        "tokens": after["tokens_issued"] - before["tokens_issued"],
        "http": _total_requests(after) - _total_requests(before),
    }


def _paced_run(emulator: Emulator, calls: int, meter_id: str) -> float:
    """Seconds for ``calls`` retrieves with the client's default pacing (50 requests/s, 5 % headroom)."""
    settings = ClientSettings(
        org_id=emulator.org_id,
        access_key_id=emulator.access_key_id,
        api_secret=emulator.api_secret,
        config_url=emulator.config_url,
        ingest_url=emulator.ingest_url,
    )
    with M3terClient(settings) as client:
        started = time.perf_counter()
        for _ in range(calls):
            client.request("GET", f"meters/{meter_id}")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="Config calls per run (default 1000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per client and operation (default 5)")
    parser.add_argument("--paced-calls", type=int, default=200, help="calls for the paced row (0 to skip)")
    args = parser.parse_args(argv)

    import m3ter

    with EmulatorProcess(limits=False) as emulator:
        with _our_client(emulator) as setup:
            meter = setup.request(
                "POST",
                "meters",
                json={
                    "code": "bench_meter",
                    "name": "Benchmark meter",
                    "dataFields": [{"category": "MEASURE", "code": "value", "name": "Value", "unit": "1"}],
                    "derivedFields": [],
                },
            )
        rows = []
        for operation in ("retrieve meter", "list meters (1 page)"):
            for kind, label in (
                ("provider", "airflow-provider-m3ter client"),
                ("sdk", f"m3ter SDK {m3ter.__version__}"),
            ):
                runs = [
                    _measure(emulator, kind, operation, args.calls, meter["id"]) for _ in range(args.runs)
                ]
                seconds = statistics.median(run["seconds"] for run in runs)
                tokens = statistics.median(run["tokens"] for run in runs)
                http = statistics.median(run["http"] for run in runs)
                cpu = statistics.median(run["cpu"] for run in runs)
                rows.append(
                    f"| {operation} | {label} | {args.calls:,} | {tokens:,.0f} | {http:,.0f} "
                    f"| {seconds:.2f} | {args.calls / seconds:,.0f} | {cpu:.2f} |"
                )
        paced = _paced_run(emulator, args.paced_calls, meter["id"]) if args.paced_calls else None

    print(
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"median of {args.runs} runs, emulator limits off\n"
    )
    print("| operation | client | calls | token requests | HTTP requests | wall s | calls/s | client CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if paced is not None:
        rate = args.paced_calls / paced
        print(f"\nWith its default pacing (Config: 50 requests/s less 5 % headroom) the client made "
              f"{args.paced_calls} retrieves in {paced:.2f} s = {rate:.1f} calls/s.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
