"""Client CPU of Config calls and of ingest, this tree vs a baseline tree of the code, in one run.

Made for changes to the request path (the whole-call deadline watchdog, wait budgets, the shared
token store): the same work runs alternately in child processes importing the package from this
tree and from ``--baseline`` (e.g. a ``git worktree`` of ``main`` before the change), against one
emulator (limits off), and the medians of the children's own CPU time are compared.

* ``config``: a fresh client makes ``--calls`` ``GET meters/{id}`` calls (one token, then one HTTP
  request per call); CPU is ``time.process_time`` of those calls only.
* ``ingest``: ``benchmarks/ingest_cpu.py``'s ``provider`` child for ``--measurements`` rows (read,
  validate, uid, batch, send); CPU from just before reading to the last acknowledged request.

``--watchdog-ab`` adds an in-process A/B of the time-limit machinery alone: the same client making
``--calls`` calls with the attempt watchdog and watched HTTP adapter as shipped, and with both
replaced by no-ops (plain ``HTTPAdapter``, no watch), alternating, medians of ``--runs``.

Run from the repository root::

    git worktree add --detach /tmp/baseline <commit before the change>
    .venv/bin/python benchmarks/client_overhead.py --baseline /tmp/baseline --runs 7 --watchdog-ab

``--also <tree>`` adds more trees to the same alternating runs (e.g. ``main`` before a later
change), each reported against the baseline.

Prints a Markdown table (recorded in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

_CONFIG_CHILD = r"""
import json, sys, time
from airflow_provider_m3ter.client import ClientSettings, M3terClient
args = json.loads(sys.argv[1])
settings = ClientSettings(
    org_id=args["org_id"], access_key_id=args["key"], api_secret=args["secret"],
    config_url=args["config_url"], ingest_url=args["ingest_url"],
    config_requests_per_second=None, config_requests_per_window=None,
)
with M3terClient(settings) as client:
    client.request("GET", "meters/" + args["meter_id"])  # token and connection outside the timing
    cpu = time.process_time()
    for _ in range(args["calls"]):
        client.request("GET", "meters/" + args["meter_id"])
    print(json.dumps({"cpu": time.process_time() - cpu}))
"""


def _commit(tree: Path) -> str:
    """The short commit a tree is checked out at (``?`` if it is not a git checkout)."""
    out = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


def _child_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    return env


def _config_run(tree: Path, emulator: object, meter_id: str, calls: int) -> float:
    args = {
        "org_id": emulator.org_id,  # type: ignore[attr-defined]
        "key": emulator.access_key_id,  # type: ignore[attr-defined]
        "secret": emulator.api_secret,  # type: ignore[attr-defined]
        "config_url": emulator.config_url,  # type: ignore[attr-defined]
        "ingest_url": emulator.ingest_url,  # type: ignore[attr-defined]
        "meter_id": meter_id,
        "calls": calls,
    }
    out = subprocess.run(
        [sys.executable, "-c", _CONFIG_CHILD, json.dumps(args)],
        env=_child_env(tree),
        capture_output=True,
        text=True,
        check=True,
        cwd=str(tree),
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu"])


def _ingest_run(tree: Path, emulator: object, path: Path) -> float:
    """``benchmarks/ingest_cpu.py``'s ``provider`` child, run from ``tree`` (its package and benchmark)."""
    handle = {
        "org_id": emulator.org_id,  # type: ignore[attr-defined]
        "access_key_id": emulator.access_key_id,  # type: ignore[attr-defined]
        "api_secret": emulator.api_secret,  # type: ignore[attr-defined]
        "config_url": emulator.config_url,  # type: ignore[attr-defined]
        "ingest_url": emulator.ingest_url,  # type: ignore[attr-defined]
    }
    code = (
        f"import json, sys; from pathlib import Path; sys.path.insert(0, {str(tree)!r});"
        "import requests, airflow_provider_m3ter.client.ingest, airflow_provider_m3ter.operators.sources;"
        "from benchmarks.ingest_cpu import child;"
        f"print(json.dumps(child('provider', Path({str(path)!r}), json.loads({json.dumps(handle)!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_child_env(tree), capture_output=True, text=True, cwd=str(tree)
    )
    if out.returncode != 0:
        raise RuntimeError(f"ingest from {tree} failed:\n{out.stderr[-3000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["cpu"])


def _watchdog_ab(emu: object, meter_id: str, calls: int, runs: int) -> dict[str, float]:
    """Median CPU of ``calls`` GETs with the watchdog and watched adapter, and with no-ops instead."""
    from requests.adapters import HTTPAdapter

    from airflow_provider_m3ter.client import ClientSettings, M3terClient, deadline

    class _NoWatch:
        fired = False

        def __enter__(self) -> _NoWatch:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    settings = ClientSettings(
        org_id=emu.org_id,  # type: ignore[attr-defined]
        access_key_id=emu.access_key_id,  # type: ignore[attr-defined]
        api_secret=emu.api_secret,  # type: ignore[attr-defined]
        config_url=emu.config_url,  # type: ignore[attr-defined]
        ingest_url=emu.ingest_url,  # type: ignore[attr-defined]
        config_requests_per_second=None,
        config_requests_per_window=None,
    )
    shipped = deadline.WATCHDOG.watch
    cpu: dict[str, list[float]] = {"with watchdog": [], "without": []}
    for run in range(runs):
        order = list(cpu) if run % 2 == 0 else list(reversed(cpu))
        for variant in order:
            with M3terClient(settings) as client:
                if variant == "without":
                    plain = HTTPAdapter(pool_connections=16, pool_maxsize=16, max_retries=0)
                    client.session.mount("http://", plain)
                    client.session.mount("https://", plain)
                    deadline.WATCHDOG.watch = lambda _seconds: _NoWatch()  # type: ignore[assignment,method-assign,return-value]
                try:
                    client.request("GET", f"meters/{meter_id}")
                    started = time.process_time()
                    for _ in range(calls):
                        client.request("GET", f"meters/{meter_id}")
                    cpu[variant].append(time.process_time() - started)
                finally:
                    deadline.WATCHDOG.watch = shipped  # type: ignore[method-assign]
    return {variant: statistics.median(values) for variant, values in cpu.items()}


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a tree of the code before the change")
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="another tree to run alternately with the two (e.g. main before a later change); repeatable",
    )
    parser.add_argument("--calls", type=int, default=2000, help="Config calls per run (default 2000)")
    parser.add_argument("--measurements", type=int, default=100_000, help="ingest rows per run")
    parser.add_argument("--runs", type=int, default=7, help="runs per tree and workload (median reported)")
    parser.add_argument("--watchdog-ab", action="store_true", help="also the in-process watchdog A/B")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE / "benchmarks"))
    import ingest_cpu

    from airflow_provider_m3ter.emulator.process import EmulatorProcess

    trees = {"baseline": args.baseline.resolve()}
    for extra in args.also:
        trees[f"{extra.name} ({_commit(extra)})"] = extra.resolve()
    trees["this tree"] = HERE
    cpu: dict[tuple[str, str], list[float]] = {}
    with EmulatorProcess(limits=False) as emu:
        import requests

        def new_meter() -> str:
            token = requests.post(
                emu.config_url + "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(emu.access_key_id, emu.api_secret),
                timeout=30,
            ).json()["access_token"]
            body = {
                "code": "bench_meter",
                "name": "Benchmark meter",
                "dataFields": [{"category": "MEASURE", "code": "value", "name": "Value", "unit": "1"}],
                "derivedFields": [],
            }
            return str(
                requests.post(
                    f"{emu.config_url}/organizations/{emu.org_id}/meters",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ).json()["id"]
            )

        path = ingest_cpu.OUT / f"usage-{args.measurements}.jsonl"
        ingest_cpu.write_usage(path, args.measurements)
        for run in range(args.runs):
            # alternate the trees so that a busy moment of the machine hits both alike
            order = list(trees.items()) if run % 2 == 0 else list(reversed(trees.items()))
            for name, tree in order:
                emu.reset()
                cpu.setdefault(("config", name), []).append(_config_run(tree, emu, new_meter(), args.calls))
                emu.reset()
                cpu.setdefault(("ingest", name), []).append(_ingest_run(tree, emu, path))
                print(
                    f"# run {run + 1} {name}: config {cpu[('config', name)][-1]:.3f} s, "
                    f"ingest {cpu[('ingest', name)][-1]:.3f} s",
                    flush=True,
                )

        ab = _watchdog_ab(emu, new_meter(), args.calls, args.runs) if args.watchdog_ab else None

    print(f"\nPython {platform.python_version()}, {platform.machine()}, median of {args.runs} runs\n")
    print(f"baseline: {_commit(trees['baseline'])}, this tree: {_commit(HERE)}\n")
    print("| workload | tree | CPU s (median) | ratio (tree / baseline) |")
    print("|---|---|---:|---:|")
    for workload, size in (
        ("config", f"{args.calls:,} GET calls"),
        ("ingest", f"{args.measurements:,} rows"),
    ):
        base = statistics.median(cpu[(workload, "baseline")])
        for name in trees:
            new = statistics.median(cpu[(workload, name)])
            print(f"| {workload} ({size}) | {name} | {new:.3f} | {new / base:.3f} |")
    if ab is not None:
        print("\n| time limits (in process, this tree) | CPU s | ratio |")
        print("|---|---:|---:|")
        print(
            f"| {args.calls:,} GET calls without watchdog and watched adapter | {ab['without']:.3f} | 1.000 |"
        )
        ratio = ab["with watchdog"] / ab["without"]
        print(
            f"| {args.calls:,} GET calls with them (as shipped) | {ab['with watchdog']:.3f} | {ratio:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
