"""ClientStats: counters of one client's traffic (kept apart from the retry rules that feed them)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientStats"]


@dataclass
class ClientStats:
    """Counters of one client's traffic (thread-safe; read them or call :meth:`snapshot`).

    :param requests: logical calls made by callers (one per ``request()``).
    :param attempts: HTTP requests sent, token requests and retries included.
    :param retries: attempts that were a retry of an earlier one.
    :param throttled: 429 responses seen.
    :param token_fetches: new access tokens obtained.
    :param waits: every retry wait, in seconds, in order.
    :param paced: total seconds spent waiting for the client's own rate limiter.
    """

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    throttled: int = 0
    token_fetches: int = 0
    waits: list[float] = field(default_factory=list)
    paced: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        """Add to counters by name, e.g. ``add(attempts=1)``."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def add_wait(self, seconds: float) -> None:
        """Record one retry wait."""
        with self._lock:
            self.waits.append(seconds)
            self.retries += 1

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of all counters as a plain dict."""
        with self._lock:
            return {
                "requests": self.requests,
                "attempts": self.attempts,
                "retries": self.retries,
                "throttled": self.throttled,
                "token_fetches": self.token_fetches,
                "waits": list(self.waits),
                "paced": self.paced,
            }
