"""Memory and CPU of the identical-row bookkeeping, by how much a source repeats itself.

Each case runs ``IngestRun`` over generated rows in a fresh child process with a client that
accepts every request without HTTP (so only the client-side work is measured: validation,
encoding, batching, the spill file, the row ledger and its resolution, and the occurrence uids
patched into the spill). Cases:

* ``distinct``: every row differs (the ledger finds no repeat);
* ``pairs``: every row appears twice (half the rows get occurrence uids);
* ``one_row``: one row repeated (every row but the first gets an occurrence uid);
* ``pairs_dedup``: ``pairs`` with ``deduplicate=True`` (half the rows dropped, the spill re-cut).

Reports the child's CPU seconds (``time.process_time``), its peak RSS (``ru_maxrss``) and its RSS
before the run, medians over ``--runs``.

Command: ``.venv/bin/python benchmarks/ingest_identical.py --sizes 100000 1000000 --runs 3``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CASES = ("distinct", "pairs", "one_row", "pairs_dedup")


class _NullClient:
    """Acknowledges every ingest request at once (no HTTP)."""

    def __init__(self) -> None:
        self.measurements = 0

    def submit_measurements(self, body: bytes) -> dict[str, Any]:
        self.measurements += body.count(b'{"uid":')
        return {}


def _rows(case: str, size: int) -> Any:
    for i in range(size):
        n = 0 if case == "one_row" else (i // 2 if case.startswith("pairs") else i)
        yield {
            "meter": "api_calls",
            "account": f"acct-{n % 50}",
            "ts": f"2024-05-01T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:{n % 60:02d}Z",
            "measure": {"requests": n, "gb": n / 4},
            "who": {"user": f"user-{n % 31}"},
        }


def child(case: str, size: int) -> dict[str, Any]:
    """One case in this process: CPU seconds, peak and starting RSS (KiB), counts."""
    from airflow_provider_m3ter.client.ingest import IngestRun

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    client = _NullClient()
    run = IngestRun(client, namespace="bench", deduplicate=case == "pairs_dedup", progress_interval=3600)
    cpu0 = time.process_time()
    summary = run.run_measurements(_rows(case, size))
    cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "cpu": cpu,
        "peak_rss_kb": peak,
        "rss_start_kb": rss_start,
        "identical": summary.identical,
        "sent": client.measurements,
    }


def _run_child(case: str, size: int) -> dict[str, Any]:
    code = (
        f"import json, sys; sys.path.insert(0, {str(REPO)!r});"
        "import airflow_provider_m3ter.client.ingest;"
        "from benchmarks.ingest_identical import child;"
        f"print(json.dumps(child({case!r}, {size})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{case} {size} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    """Run every case and size; print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    args = parser.parse_args()
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for size in args.sizes:
        for _ in range(args.runs):
            for case in args.cases:  # interleaved, so load changes hit every case alike
                results.setdefault((case, size), []).append(_run_child(case, size))
    columns = ["case", "rows", "runs", "identical", "sent", "client CPU s", "CPU µs / row", "peak RSS MiB"]
    print("| " + " | ".join([*columns, "RSS before MiB"]) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (case, size), runs in results.items():
        cpu = statistics.median(r["cpu"] for r in runs)
        peak = statistics.median(r["peak_rss_kb"] for r in runs) / 1024
        start = statistics.median(r["rss_start_kb"] for r in runs) / 1024
        counts = f"{runs[0]['identical']:,} | {runs[0]['sent']:,}"
        print(
            f"| {case} | {size:,} | {len(runs)} | {counts} | {cpu:.2f} | {cpu / size * 1e6:.1f} | {peak:.1f} "
            f"| {start:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
