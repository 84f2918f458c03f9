"""RateLimiter: a smooth, thread-safe pace that keeps a client under m3ter's request limits.

m3ter limits requests per second (per organization) and per rolling window (per source IP, e.g.
5,000 ingest requests per 5 minutes). Spacing requests evenly at the slower of the two paces keeps
both limits at once and never produces a burst, so a long load meets no 429 at all.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Hand out send times at least ``interval`` seconds apart, across threads.

    ``interval = max((1 + headroom) / requests_per_second,
    (1 + window_headroom) * window_seconds / requests_per_window)``.
    Any window of ``window_seconds`` then holds at most ``requests_per_window`` sends and no second
    holds more than ``requests_per_second``; the headrooms absorb clock and network jitter. A
    one-second bucket needs more of it than a five-minute window, where a few milliseconds of
    jitter shift at most a request or two, hence two settings.

    :param requests_per_second: the per-second limit, or ``None`` for none.
    :param requests_per_window: the rolling-window limit, or ``None`` for none.
    :param window_seconds: length of the rolling window in seconds.
    :param clock: monotonic clock in seconds (injectable for tests).
    :param sleep: how to wait (injectable for tests).
    :param headroom: fraction by which to stay below the per-second limit (0.05 = 5 % slower); it
        absorbs up to about that many seconds of network jitter.
    :param window_headroom: fraction by which to stay below the rolling-window limit.
    """

    def __init__(
        self,
        requests_per_second: float | None = None,
        requests_per_window: int | None = None,
        window_seconds: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        headroom: float = 0.05,
        window_headroom: float = 0.01,
    ) -> None:
        if headroom < 0 or window_headroom < 0:
            raise ValueError(
                f"RateLimiter: headroom must not be negative, got {headroom} and {window_headroom}"
            )
        intervals = []
        if requests_per_second is not None:
            if requests_per_second <= 0:
                raise ValueError(
                    f"RateLimiter: requests_per_second must be positive, got {requests_per_second}"
                )
            intervals.append((1.0 + headroom) / requests_per_second)
        if requests_per_window is not None:
            if requests_per_window <= 0 or window_seconds <= 0:
                raise ValueError(
                    "RateLimiter: requests_per_window and window_seconds must be positive, "
                    f"got {requests_per_window} per {window_seconds} s"
                )
            intervals.append((1.0 + window_headroom) * window_seconds / requests_per_window)
        if not intervals:
            raise ValueError("RateLimiter needs requests_per_second or requests_per_window")
        self.interval: float = max(intervals)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot: float | None = None
        self.total_wait: float = 0.0

    @classmethod
    def from_limits(
        cls,
        requests_per_second: float | None,
        requests_per_window: int | None,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RateLimiter | None:
        """Build a limiter, or return ``None`` when both limits are ``None`` (pacing disabled).

        :param requests_per_second: the per-second limit, or ``None``.
        :param requests_per_window: the rolling-window limit, or ``None``.
        :param window_seconds: length of the rolling window in seconds.
        :param clock: monotonic clock in seconds.
        :param sleep: how to wait.
        """
        if requests_per_second is None and requests_per_window is None:
            return None
        return cls(requests_per_second, requests_per_window, window_seconds, clock=clock, sleep=sleep)

    def reserve(self) -> float:
        """Book the next send slot and return how long the caller must wait for it (seconds)."""
        with self._lock:
            now = self._clock()
            # An idle limiter does not bank unused slots: that is what would make a burst.
            slot = now if self._next_slot is None or self._next_slot <= now else self._next_slot
            self._next_slot = slot + self.interval
            delay = slot - now
            self.total_wait += delay
        return delay

    def acquire(self, within: float = math.inf) -> float | None:
        """Block until the next request may be sent; return the seconds waited.

        :param within: the most the caller may wait (seconds, e.g. what is left of its deadline);
            when the next slot is further away, return ``None`` at once without waiting (the slot
            stays booked: a call that gives up does not let later ones burst).
        """
        delay = self.reserve()
        if delay > 0 and delay >= within:
            return None
        if delay > 0:
            # Sleep outside the lock so other threads can book the slots after ours.
            self._sleep(delay)
        return delay

    def __repr__(self) -> str:
        return f"RateLimiter(interval={self.interval:.4f}s)"
