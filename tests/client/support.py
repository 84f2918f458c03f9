"""Test support: a clock that moves only when the code under test sleeps, and emulator helpers."""

from __future__ import annotations

import threading
from typing import Any


class FakeTime:
    """A monotonic clock plus a ``sleep`` that advances it instantly and records every wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        """The current fake time."""
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        """Record the wait and jump the clock forward by it."""
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        """Move the clock without recording a sleep (time passing elsewhere)."""
        with self._lock:
            self.now += seconds


def route_counts(stats: dict[str, Any], key: str) -> dict[str, int]:
    """Status -> count for one ``"<METHOD> <route template>"`` of the emulator's stats."""
    return dict(stats["requests"].get(key, {}))


def meter_body(code: str, *fields: str) -> dict[str, Any]:
    """A minimal valid Meter with MEASURE data fields (``value`` when none are named)."""
    return {
        "code": code,
        "name": f"Meter {code}",
        "dataFields": [
            {"category": "MEASURE", "code": field, "name": field, "unit": "1"}
            for field in (fields or ("value",))
        ],
        "derivedFields": [],
    }
