"""Measurement ingest at m3ter's rate limits: achieved throughput as a share of the limit, and 429s.

Starts one local emulator enforcing m3ter's ingest limits on a scaled window (default: 30 s
windows with 500 ingest requests per window per IP, the same 16.7 requests/s as m3ter's
5,000 per 5 minutes, and 50 requests/s per organization), then sends a JSON Lines file of N
measurements through this provider's path (``FileSource`` -> ``IngestRun`` ->
``M3terClient``) with the client's pacing set to the same limits, as a connection's extras
would set them (``ingest_requests_per_second``, ``ingest_requests_per_window``,
``window_seconds``).

Reported per variant: HTTP requests per second as they leave the client (after its pacing, retries
included; first to last), that rate as a share of the window limit, measurements per second (first
batch handed to the client to last acknowledgement), the 429s the emulator answered, and the whole
run's wall time (preparation included). A contrast run with client pacing switched off shows what
the limits do to an unpaced client.

Run from the repository root::

    .venv/bin/python benchmarks/ingest_limits.py --measurements 1000000

Prints a Markdown table (recorded in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_provider_m3ter.client import ClientSettings, M3terClient  # noqa: E402
from airflow_provider_m3ter.client.ingest import IngestRun  # noqa: E402
from airflow_provider_m3ter.emulator.process import Emulator, EmulatorProcess  # noqa: E402
from airflow_provider_m3ter.operators.sources import FileSource  # noqa: E402
from benchmarks.ingest_cpu import OUT, write_usage  # noqa: E402


def run_once(
    emu: Emulator, path: Path, *, paced: bool, in_flight: int, window: float, per_window: int
) -> dict:
    """One load through the provider's path; returns rates, 429s and times."""
    emu.reset()
    emu.set_limits(enabled=True, window_seconds=window, ingest_window_requests=per_window, org_rps=50)
    settings = ClientSettings(
        org_id=emu.org_id,
        access_key_id=emu.access_key_id,
        api_secret=emu.api_secret,
        config_url=emu.config_url,
        ingest_url=emu.ingest_url,
        ingest_requests_per_second=50 if paced else None,
        ingest_requests_per_window=per_window if paced else None,
        window_seconds=window,
        max_attempts=12,
        deadline=600,
    )
    sends: list[float] = []
    times: list[tuple[float, float]] = []
    lock = threading.Lock()
    with M3terClient(settings) as client:
        real_submit = client.submit_measurements
        session = client.session
        real_request = session.request

        def timed_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            # the moment an ingest request really leaves (after the client's pacing), retries included
            if method == "POST" and url.endswith("/measurements"):
                with lock:
                    sends.append(time.monotonic())
            return real_request(method, url, *args, **kwargs)

        def timed_submit(body: bytes) -> Any:
            started = time.monotonic()
            answer = real_submit(body)
            with lock:
                times.append((started, time.monotonic()))
            return answer

        session.request = timed_request  # type: ignore[method-assign]
        client.submit_measurements = timed_submit  # type: ignore[method-assign]
        wall0 = time.monotonic()
        source = FileSource(path)
        summary = IngestRun(client, namespace="limits", max_in_flight=in_flight, spill_dir=str(OUT)).run(
            source.rows(), source.name
        )
        wall = time.monotonic() - wall0
        throttled = client.stats.throttled
    stats = emu.stats()
    sends.sort()
    send_seconds = max(end for _, end in times) - min(start for start, _ in times)
    # the limits govern when requests are sent: the rate of sends between the first and the last
    requests_per_second = (len(sends) - 1) / (sends[-1] - sends[0])
    return {
        "paced": paced,
        "in_flight": in_flight,
        "requests": len(sends),
        "stored": stats["measurements_stored"],
        "send_seconds": send_seconds,
        "requests_per_second": requests_per_second,
        "measurements_per_second": summary.sent / send_seconds,
        "share": requests_per_second / (per_window / window),
        "latency_ms": 1000 * sum(end - start for start, end in times) / len(times),
        "emulator_429": sum(stats["rate_limited"].values()),
        "client_429": throttled,
        "wall": wall,
    }


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measurements", type=int, default=1_000_000)
    parser.add_argument("--window-seconds", type=float, default=30.0)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument(
        "--unpaced-measurements",
        type=int,
        default=None,
        help="size of the unpaced run (default: same); 0 skips it",
    )
    args = parser.parse_args()
    per_window = round(5000 * args.window_seconds / 300)

    results = []
    with EmulatorProcess() as emu:
        path = OUT / f"usage-{args.measurements}.jsonl"
        write_usage(path, args.measurements)
        for in_flight in args.in_flight:
            result = run_once(
                emu, path, paced=True, in_flight=in_flight, window=args.window_seconds, per_window=per_window
            )
            results.append((args.measurements, result))
            print(f"# {result}", flush=True)
        unpaced = args.measurements if args.unpaced_measurements is None else args.unpaced_measurements
        if unpaced:
            small = OUT / f"usage-{unpaced}.jsonl"
            write_usage(small, unpaced)
            result = run_once(
                emu, small, paced=False, in_flight=4, window=args.window_seconds, per_window=per_window
            )
            results.append((unpaced, result))
            print(f"# {result}", flush=True)

    limit = per_window / args.window_seconds
    print(f"\nPython {platform.python_version()}, {platform.machine()}")
    print(
        f"Emulator limits: {per_window} ingest requests per {args.window_seconds:g} s window per IP "
        f"({limit:.2f} requests/s), 50 requests/s per organization.\n"
    )
    print(
        "| client pacing | in flight | measurements | requests | send s | requests/s | measurements/s "
        "| share of limit | 429s (emulator) | 429s (client saw) | wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in results:
        pacing = f"{per_window} per {args.window_seconds:g} s, 50/s" if r["paced"] else "off"
        print(
            f"| {pacing} | {r['in_flight']} | {size:,} | {r['requests']:,} | {r['send_seconds']:.1f} "
            f"| {r['requests_per_second']:.2f} | {r['measurements_per_second']:,.0f} | {r['share']:.1%} "
            f"| {r['emulator_429']} | {r['client_429']} | {r['wall']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
