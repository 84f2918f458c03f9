"""Counters behind ``GET /_emulator/stats``."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Counters behind ``GET /_emulator/stats``."""

    def __init__(self) -> None:
        self.measurements_received = 0
        self.duplicates_received = 0
        self.ingest_requests = 0
        self.tokens_issued = 0
        self.requests: dict[str, Counter[str]] = {}
        self.faults_injected: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter({"org": 0, "ingest_ip": 0, "config_ip": 0})

    def count_request(self, route: str, outcome: str) -> None:
        """Count one answered request.

        :param route: ``"<METHOD> <route template>"``.
        :param outcome: the status code as text, or ``drop``.
        """
        self.requests.setdefault(route, Counter())[outcome] += 1

    def view(self, measurements_stored: int) -> dict[str, Any]:
        """The JSON body of ``GET /_emulator/stats``.

        :param measurements_stored: how many distinct measurements are stored.
        """
        return {
            "measurements_stored": measurements_stored,
            "measurements_received": self.measurements_received,
            "duplicates_received": self.duplicates_received,
            "ingest_requests": self.ingest_requests,
            "tokens_issued": self.tokens_issued,
            "requests": {route: dict(counts) for route, counts in self.requests.items()},
            "faults_injected": dict(self.faults_injected),
            "rate_limited": dict(self.rate_limited),
        }
