"""CPU of three parts of a Config call's request path, per call, in one tree of the code.

The parts that changed with the whole-call deadline and the retry rules (issue 10), timed alone so
that a tree comparison in ``client_overhead.py`` can be explained:

* ``path check``: ``check_relative_path("meters/<uuid>")`` (every call's path is checked);
* ``watch``: registering and finishing one attempt with the attempt watchdog (absent in trees
  before it);
* ``retry rules``: the call state plus the retry machinery around one successful attempt
  (``call_with_rules`` where it exists, else building the tenacity ``Retrying`` and calling it).

Each is the best of 5 repeats of 20,000 runs, in microseconds. It imports the package from the
tree it is run in, so run it once per tree::

    PYTHONPATH=<tree> .venv/bin/python benchmarks/request_path_parts.py

Internals are called on purpose: this measures them, it is not an example of use.
"""

from __future__ import annotations

import inspect
import json
import random
import time
import timeit
import uuid
from typing import Any

import airflow_provider_m3ter.client.retry as retry
from airflow_provider_m3ter.client.paths import check_relative_path

REPEAT, NUMBER = 5, 20_000


def _best_us(func: Any) -> float:
    return min(timeit.repeat(func, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e6


class _Response:
    status_code = 200
    headers: dict[str, str] = {}


def main() -> None:
    """Print one JSON line: microseconds per call of each part (``null`` where a part does not exist)."""
    path = f"meters/{uuid.uuid4()}"
    result: dict[str, float | None] = {"path check": _best_us(lambda: check_relative_path(path))}

    try:
        from airflow_provider_m3ter.client.deadline import WATCHDOG
    except ImportError:
        result["watch"] = None
    else:

        def watch() -> None:
            with WATCHDOG.watch(300.0):
                pass

        result["watch"] = _best_us(watch)

    response = _Response()
    stats: Any = None
    try:
        from airflow_provider_m3ter.client.stats import ClientStats

        stats = ClientStats()
    except ImportError:
        stats = retry.ClientStats()  # type: ignore[attr-defined]  # (older trees kept it there)
    rules: dict[str, Any] = {
        "max_wait": 60.0,
        "sleep": time.sleep,
        "clock": time.monotonic,
        "rng": random.Random(),
        "stats": stats,
        "on_token_rejected": lambda _token: None,
    }
    if "deadline" in inspect.signature(retry.build_retrying).parameters:
        rules["deadline"] = 300.0

    def new_call() -> Any:
        return retry.CallState(
            method="GET", path="/" + path, deadline_at=time.monotonic() + 300.0, max_attempts=5
        )

    with_rules = getattr(retry, "call_with_rules", None)
    if with_rules is not None:
        result["retry rules"] = _best_us(lambda: with_rules(new_call(), lambda: response, **rules))
    else:
        result["retry rules"] = _best_us(lambda: retry.build_retrying(new_call(), **rules)(lambda: response))
    print(json.dumps({name: None if us is None else round(us, 2) for name, us in result.items()}))


if __name__ == "__main__":
    main()
