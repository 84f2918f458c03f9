"""m3ter's rate limits: per-organization requests/second and per-IP rolling windows."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_m3ter.emulator.errors import bad_request

FULL_WINDOW_SECONDS = 300.0
FULL_INGEST_REQUESTS = 5000
FULL_CONFIG_REQUESTS = 20000


@dataclass
class RateLimits:
    """Limits enforced per API (``ingest`` or ``config``); off unless ``enabled``.

    :param enabled: whether any limit applies.
    :param org_rps: requests per second per organization, per API; the rest of that second gets 429.
    :param ingest_window_requests: ingest requests allowed per source IP in one rolling window.
    :param config_window_requests: Config API requests allowed per source IP in one rolling window.
    :param window_seconds: length of the rolling window.
    """

    enabled: bool = False
    org_rps: int = 50
    ingest_window_requests: int = FULL_INGEST_REQUESTS
    config_window_requests: int = FULL_CONFIG_REQUESTS
    window_seconds: float = FULL_WINDOW_SECONDS
    _second: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    _windows: dict[tuple[str, str], deque[float]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_body(cls, body: dict[str, Any], base: RateLimits | None = None) -> RateLimits:
        """Build limits from the ``POST /_emulator/limits`` body.

        When only ``window_seconds`` is given, the window counts scale with it (5,000 and 20,000
        per 300 s), so a short window keeps m3ter's sustained rates.

        :param body: the decoded JSON body.
        :param base: the limits whose values fill fields the body leaves out.
        """
        known = {"enabled", "org_rps", "ingest_window_requests", "config_window_requests", "window_seconds"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise bad_request(f"limits: unknown fields {unknown}; known fields are {sorted(known)}")
        base = base or cls()
        window = float(body.get("window_seconds", base.window_seconds))
        if window <= 0:
            raise bad_request("limits.window_seconds: must be positive")
        scale = window / FULL_WINDOW_SECONDS
        ingest = body.get("ingest_window_requests")
        config = body.get("config_window_requests")
        if "window_seconds" in body:
            ingest = ingest if ingest is not None else max(1, math.ceil(FULL_INGEST_REQUESTS * scale))
            config = config if config is not None else max(1, math.ceil(FULL_CONFIG_REQUESTS * scale))
        limits = cls(
            enabled=bool(body.get("enabled", True)),
            org_rps=int(body.get("org_rps", base.org_rps)),
            ingest_window_requests=int(ingest if ingest is not None else base.ingest_window_requests),
            config_window_requests=int(config if config is not None else base.config_window_requests),
            window_seconds=window,
        )
        if min(limits.org_rps, limits.ingest_window_requests, limits.config_window_requests) < 1:
            raise bad_request("limits: org_rps and window request counts must be at least 1")
        return limits

    def describe(self) -> dict[str, Any]:
        """The limits in the shape of ``POST /_emulator/limits``."""
        return {
            "enabled": self.enabled,
            "org_rps": self.org_rps,
            "ingest_window_requests": self.ingest_window_requests,
            "config_window_requests": self.config_window_requests,
            "window_seconds": self.window_seconds,
        }

    def check(self, api: str, client_ip: str, now: float) -> str | None:
        """Admit one request or name the limit it breaks (``org``, ``ingest_ip``, ``config_ip``).

        Refused requests do not count against either limit.

        :param api: ``ingest`` or ``config``.
        :param client_ip: the source IP address.
        :param now: the current time in seconds (monotonic).
        """
        if not self.enabled:
            return None
        second = int(now)
        started, count = self._second.get(api, (second, 0))
        if started != second:
            count = 0
        if count >= self.org_rps:
            return "org"
        window = self._windows.setdefault((api, client_ip), deque())
        horizon = now - self.window_seconds
        while window and window[0] <= horizon:
            window.popleft()
        allowed = self.ingest_window_requests if api == "ingest" else self.config_window_requests
        if len(window) >= allowed:
            return f"{api}_ip"
        window.append(now)
        self._second[api] = (second, count + 1)
        return None
