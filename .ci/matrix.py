#!/usr/bin/env python3
"""Run the version matrix (`make matrix`) and print one line per venv: passed/skipped/failed/errors.

Each Airflow line other than the newest runs every test that touches Airflow, the example DAGs
included (``-m "not airflow_free"``; the plain client and the emulator alone run once, on the
newest line, in ``make test``). Each extra Python runs a smoke set with the newest Airflow. The venvs
are built by the Makefile (``.venv-af<line>``, ``.venv-py<version>``) before this script runs.

Skips are listed with their reasons for every venv: version-gated tests are shown, never silent.
Exit status 1 when any venv has a failure or an error, or ran no test.

Usage: matrix.py --lines "3.0 3.1 3.2" --pythons "3.10 3.12 3.13" [--out build/matrix]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LINE_ARGS = ["-m", "not airflow_free"]
# with the newest Airflow on another Python: importability, provider discovery, the compat layer,
# the emulator on that Python, the hook against the emulator, and one real example DAG run
PYTHON_SMOKE = [
    "tests/test_compat.py",
    "tests/test_provider_info.py",
    "tests/emulator/test_gate.py",
    "tests/emulator/test_auth.py",
    "tests/hook/test_hook_emulator.py",
    "tests/hook/test_exceptions.py",
    "tests/ingest/test_sources.py",
    "tests/sensors/test_example_dags.py",
]


def _counts(report: Path) -> tuple[dict[str, int], collections.Counter[str]]:
    root = ET.parse(report).getroot()  # noqa: S314 - written by our own pytest run
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    reasons: collections.Counter[str] = collections.Counter()
    for suite in root.iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    for case in root.iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            reasons[(skipped.get("message") or "").strip()] += 1
    return totals, reasons


def _run(
    name: str, python: Path, args: list[str], out: Path, temp: Path
) -> tuple[str, dict[str, int], float, list[str]]:
    report = out / f"{name}.xml"
    report.unlink(missing_ok=True)
    log = out / f"{name}.log"
    # own temp root, so concurrent runs never clean each other's up; outside the repository, so a
    # test can tell an installed wheel from the source tree
    basetemp = temp / f"tmp-{name}"
    version = subprocess.run(
        [str(python), "-c", "import airflow, sys; print(airflow.__version__, sys.version.split()[0])"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.split()
    label = f"{name} (Airflow {version[0]}, Python {version[1]})" if len(version) == 2 else name
    print(f"matrix: {label}: pytest {' '.join(args)} (output: {log})", flush=True)
    start = time.monotonic()
    with log.open("w") as output:
        subprocess.run(
            [
                str(python),
                "-m",
                "pytest",
                "-q",
                "-rfE",
                f"--basetemp={basetemp}",
                f"--junitxml={report}",
                *args,
            ],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    took = time.monotonic() - start
    print(f"matrix: {label}: done in {took:.0f} s", flush=True)
    if not report.exists():
        return label, {"tests": 0, "failures": 0, "errors": 1, "skipped": 0}, took, ["no report written"]
    totals, reasons = _counts(report)
    return label, totals, took, [f"{count} x {reason}" for reason, count in sorted(reasons.items())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="", help="Airflow lines, e.g. '3.0 3.1 3.2'")
    parser.add_argument("--pythons", default="", help="Python versions, e.g. '3.10 3.12 3.13'")
    parser.add_argument("--out", default=str(REPO / "build" / "matrix"))
    parser.add_argument("--jobs", type=int, default=3, help="venvs run at the same time")
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(f"af{line}", REPO / f".venv-af{line}/bin/python", LINE_ARGS) for line in options.lines.split()]
    runs += [(f"py{py}", REPO / f".venv-py{py}/bin/python", PYTHON_SMOKE) for py in options.pythons.split()]
    temp = Path(tempfile.mkdtemp(prefix="m3ter-matrix-"))
    # The suites mostly wait (emulator jobs, sensor pokes, deferrals), so a few venvs run at once.
    with concurrent.futures.ThreadPoolExecutor(max_workers=options.jobs) as pool:
        results = list(pool.map(lambda run: _run(*run, out, temp), runs))
    for name, _, _ in runs:
        failures = [
            line
            for line in (out / f"{name}.log").read_text().splitlines()
            if line.startswith(("FAILED", "ERROR"))
        ]
        if failures:
            print(f"\n{name}:\n  " + "\n  ".join(failures))
    ok = True
    print(f"\nmatrix summary (passed / skipped / failed / errors, seconds; {options.jobs} at a time):")
    for label, totals, took, reasons in results:
        passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
        bad = totals["failures"] or totals["errors"] or totals["tests"] == 0
        ok = ok and not bad
        print(
            f"  {'FAIL' if bad else 'ok  '} {label}: {passed} passed / {totals['skipped']} skipped / "
            f"{totals['failures']} failed / {totals['errors']} errors, {took:.0f} s"
        )
        for reason in reasons:
            print(f"         skipped {reason}")
    if ok:
        shutil.rmtree(temp, ignore_errors=True)
    else:
        print(f"\ntest temp directories kept for inspection: {temp}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
