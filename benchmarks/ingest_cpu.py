"""Measurement ingest: client CPU per measurement and peak memory, this provider vs the SDK vs a bare loop.

Starts one local emulator (rate limits off), writes JSON Lines files of N measurements (no uids)
and sends each file, in a fresh child process per run, with:

* ``provider``: this provider's path: ``FileSource`` -> ``IngestRun`` (validation, derived uids,
  byte-aware batches through a spill file) -> ``M3terClient.submit_measurements``;
* ``sdk``: the official ``m3ter`` SDK 0.9.0, ``client.usage.submit_all(measurements=...)`` fed by
  ``json.loads`` of each line;
* ``bare``: ``json.loads`` each line, ``json.dumps`` it, join 1,000 per body and ``requests.post``
  (one token, no validation, no uids, no retries): the floor any client pays.

The child measures its own CPU time (``time.process_time``) from just before reading the file to
the last acknowledged request (imports and start-up excluded), and its peak RSS
(``ru_maxrss``). The emulator runs in its own process, so its work is not counted. The emulator is
reset before every run.

The SDK derives the ingest host by replacing ``api.`` with ``ingest.`` in its base URL. The
emulator serves the two APIs on two loopback ports, so the SDK gets the base URL
``http://api.emulator`` and an ``httpx`` transport that sends ``api.emulator`` to the Config port
and ``ingest.emulator`` to the Ingest port (a URL rewrite per request, nothing else).

With ``--baseline TREE`` (a ``git worktree`` of the code before a change) a fourth variant,
``before``, runs the provider path of that tree (its package first on ``sys.path``) in the same
run, interleaved with the others.

Run from the repository root::

    .venv/bin/python benchmarks/ingest_cpu.py --sizes 100000 1000000 --runs 5 --large-runs 3
    git worktree add --detach /tmp/before <commit>
    .venv/bin/python benchmarks/ingest_cpu.py --sizes 100000 --runs 7 --baseline /tmp/before

Prints a Markdown table (recorded in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
VARIANTS = ("provider", "sdk", "bare")
ORDER = ("before", *VARIANTS)


def write_usage(path: Path, count: int) -> None:
    """A JSON Lines file of ``count`` realistic measurements without uids (written once, reused)."""
    if path.exists() and path.stat().st_size > 0:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with open(partial, "w", encoding="utf-8") as out:
        for i in range(count):
            day, second = divmod(i, 86_400)
            measurement = {
                "meter": "api_calls",
                "account": f"customer-{i % 997:04d}",
                "ts": f"2024-05-{1 + day % 28:02d}T{second // 3600:02d}:{second // 60 % 60:02d}"
                f":{second % 60:02d}Z",
                "measure": {"requests": i % 1000, "gb": round((i % 977) / 7, 3)},
                "who": {"user": f"user-{i % 31_337}"},
                "where": {"region": ("eu-west-1", "us-east-1", "ap-south-1")[i % 3]},
            }
            out.write(json.dumps(measurement, separators=(",", ":")) + "\n")
    partial.replace(path)


# --- the child: one variant, one file -----------------------------------------------------------


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _provider(emu: dict[str, str], path: Path) -> int:
    from airflow_provider_m3ter.client import ClientSettings, M3terClient
    from airflow_provider_m3ter.client.ingest import IngestRun
    from airflow_provider_m3ter.operators.sources import FileSource

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
    with M3terClient(settings) as client:
        summary = IngestRun(client, namespace="benchmark", spill_dir=str(OUT)).run(source.rows(), source.name)
    return summary.sent


def _sdk(emu: dict[str, str], path: Path) -> int:
    import httpx
    from m3ter import M3ter

    routes = {
        "api.emulator": httpx.URL(emu["config_url"]),
        "ingest.emulator": httpx.URL(emu["ingest_url"]),
    }

    class Route(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            target = routes.get(request.url.host)
            if target is not None:
                request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
            return super().handle_request(request)

    client = M3ter(
        api_key=emu["access_key_id"],
        api_secret=emu["api_secret"],
        org_id=emu["org_id"],
        base_url="http://api.emulator",
        http_client=httpx.Client(transport=Route()),
    )

    def measurements() -> Any:
        with open(path, "rb") as lines:
            for line in lines:
                yield json.loads(line)

    sent = 0
    for _answer in client.usage.submit_all(measurements=measurements()):
        sent += 1
    return sent * 1000


def _bare(emu: dict[str, str], path: Path) -> int:
    import requests

    session = requests.Session()
    token = session.post(
        emu["config_url"] + "/oauth/token",
        auth=(emu["access_key_id"], emu["api_secret"]),
        data={"grant_type": "client_credentials"},
        timeout=30,
    ).json()["access_token"]
    url = f"{emu['ingest_url']}/organizations/{emu['org_id']}/measurements"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    dumps, loads = json.dumps, json.loads
    sent = 0
    batch: list[str] = []

    def post() -> None:
        body = '{"measurements":[' + ",".join(batch) + "]}"
        session.post(url, data=body.encode(), headers=headers, timeout=60).raise_for_status()

    with open(path, "rb") as lines:
        for line in lines:
            batch.append(dumps(loads(line)))
            if len(batch) == 1000:
                post()
                sent += len(batch)
                batch = []
    if batch:
        post()
        sent += len(batch)
    return sent


def child(variant: str, path: Path, emu: dict[str, str]) -> dict[str, Any]:
    """Run one variant on one file in this process; return CPU seconds, wall seconds and memory."""
    rss_start = _rss_kb()
    run = {"provider": _provider, "before": _provider, "sdk": _sdk, "bare": _bare}[variant]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sent = run(emu, path)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"sent": sent, "cpu": cpu, "wall": wall, "peak_rss_kb": peak, "rss_start_kb": rss_start}


# --- the parent ---------------------------------------------------------------------------------


def _run_child(variant: str, path: Path, emu: Any, baseline: Path | None = None) -> dict[str, Any]:
    handle = {
        "org_id": emu.org_id,
        "access_key_id": emu.access_key_id,
        "api_secret": emu.api_secret,
        "config_url": emu.config_url,
        "ingest_url": emu.ingest_url,
    }
    # Warm the child's imports outside the measured part: they run before process_time() starts.
    # "before": this harness, the baseline tree's package (first on sys.path once the harness is in)
    tree = str(baseline) if variant == "before" and baseline is not None else str(REPO)
    code = (
        f"import json, sys; from pathlib import Path; sys.path.insert(0, {str(REPO)!r});"
        "from benchmarks.ingest_cpu import child;"
        f"sys.path.insert(0, {tree!r});"
        "import requests, httpx, m3ter, airflow_provider_m3ter.client.ingest, "
        "airflow_provider_m3ter.operators.sources;"
        f"assert airflow_provider_m3ter.__file__.startswith({tree!r}), airflow_provider_m3ter.__file__;"
        f"print(json.dumps(child({variant!r}, Path({str(path)!r}), json.loads({json.dumps(handle)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} on {path.name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3, help="runs per variant and size (median reported)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--large-runs", type=int, default=None, help="runs for sizes of 1,000,000 and more; default: --runs"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="a tree of the code before a change: adds the variant 'before'",
    )
    args = parser.parse_args()
    variants = (["before"] if args.baseline is not None else []) + list(args.variants)
    baseline = args.baseline.resolve() if args.baseline is not None else None

    from airflow_provider_m3ter.emulator.process import EmulatorProcess

    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with EmulatorProcess() as emu:
        for size in args.sizes:
            path = OUT / f"usage-{size}.jsonl"
            write_usage(path, size)
            runs = args.large_runs if args.large_runs is not None and size >= 1_000_000 else args.runs
            for run in range(runs):
                for variant in variants:
                    emu.reset()
                    result = _run_child(variant, path, emu, baseline)
                    stats = emu.stats()
                    if stats["measurements_stored"] != size and variant != "bare":
                        print(f"warning: {variant} stored {stats['measurements_stored']} of {size}")
                    result["stored"] = stats["measurements_stored"]
                    results.setdefault((variant, size), []).append(result)
                    print(
                        f"# {variant:<8} {size:>9,} run {run + 1}: cpu {result['cpu']:.2f} s, "
                        f"wall {result['wall']:.2f} s, peak RSS {result['peak_rss_kb'] / 1024:.1f} MiB, "
                        f"stored {result['stored']:,}",
                        flush=True,
                    )

    print(f"\nPython {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores")
    for name, tree in (("provider", REPO), ("before", baseline)):
        if tree is not None and name in variants:
            git = ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"]
            commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
            print(f"{name}: {tree} at {commit or 'unknown commit'}")
    print()
    print("| variant | measurements | runs | client CPU s | CPU µs / measurement | measurements / CPU s "
          "| wall s | peak RSS MiB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rate: dict[tuple[str, int], float] = {}
    peak: dict[tuple[str, int], float] = {}
    for (variant, size), runs in sorted(
        results.items(), key=lambda item: (item[0][1], ORDER.index(item[0][0]))
    ):
        cpu = statistics.median(r["cpu"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        peak[(variant, size)] = statistics.median(r["peak_rss_kb"] for r in runs) / 1024
        rate[(variant, size)] = size / cpu
        print(
            f"| {variant} | {size:,} | {len(runs)} | {cpu:.2f} | {cpu / size * 1e6:.1f} | {size / cpu:,.0f} "
            f"| {wall:.2f} | {peak[(variant, size)]:.1f} |"
        )
    print()
    for size in args.sizes:
        if ("provider", size) in rate and ("sdk", size) in rate:
            print(f"- {size:,}: provider vs SDK, measurements per CPU-second: "
                  f"{rate[('provider', size)] / rate[('sdk', size)]:.1f}x")  # fmt: skip
        if ("provider", size) in rate and ("bare", size) in rate:
            print(f"- {size:,}: provider CPU per measurement vs bare: "
                  f"{rate[('bare', size)] / rate[('provider', size)]:.2f}x")  # fmt: skip
        if ("before", size) in rate and ("sdk", size) in rate and ("bare", size) in rate:
            print(f"- {size:,}: before: {rate[('before', size)] / rate[('sdk', size)]:.1f}x the SDK, "
                  f"{rate[('bare', size)] / rate[('before', size)]:.2f}x bare")  # fmt: skip
    sizes = sorted(args.sizes)
    if len(sizes) >= 2:
        for variant in variants:
            if (variant, sizes[0]) in peak and (variant, sizes[-1]) in peak:
                growth = peak[(variant, sizes[-1])] - peak[(variant, sizes[0])]
                print(f"- {variant}: peak RSS growth {sizes[0]:,} -> {sizes[-1]:,} rows: {growth:+.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
