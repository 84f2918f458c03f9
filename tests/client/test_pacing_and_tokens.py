"""RateLimiter and TokenProvider with fake clocks and real threads."""

from __future__ import annotations

import bisect
import itertools
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_m3ter.client import RateLimiter
from airflow_provider_m3ter.client.auth import TokenProvider
from tests.client.support import FakeTime


def _max_in_window(times: list[float], window: float) -> int:
    """Most send times inside any half-open interval [t, t + window)."""
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered))


def test_interval_is_the_slower_of_the_two_limits_plus_headroom() -> None:
    # Ingest: 50/s vs 5000 per 300 s = 0.06 s; Config: 50/s vs 20000 per 300 s = 0.02 s.
    assert RateLimiter(50, 5000, 300, headroom=0, window_headroom=0).interval == pytest.approx(0.06)
    assert RateLimiter(50, 20000, 300, headroom=0, window_headroom=0).interval == pytest.approx(0.02)
    # Defaults: 5 % below the per-second limit, 1 % below the rolling-window limit.
    assert RateLimiter(50, 20000, 300).interval == pytest.approx(0.021)
    assert RateLimiter(50, 5000, 300).interval == pytest.approx(0.0606)
    assert RateLimiter.from_limits(None, None, 300) is None
    with pytest.raises(ValueError, match="requests_per_second"):
        RateLimiter(0, None)
    with pytest.raises(ValueError, match="needs"):
        RateLimiter(None, None)


def test_a_burst_is_spread_evenly_and_an_idle_limiter_does_not_bank_slots() -> None:
    fake = FakeTime(start=0.0)
    limiter = RateLimiter(10, None, clock=fake.clock, sleep=fake.sleep, headroom=0, window_headroom=0)
    sent = []
    for _ in range(5):
        limiter.acquire()
        sent.append(fake.clock())
    assert sent == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    fake.advance(10.0)  # idle for a long time
    for _ in range(3):
        limiter.acquire()
        sent.append(fake.clock())
    # Still one every 0.1 s after the pause: no burst of saved-up slots.
    assert sent[-3:] == pytest.approx([10.4, 10.5, 10.6])


def test_threads_share_one_pace() -> None:
    fake = FakeTime(start=0.0)  # frozen: every reservation is measured against the same instant
    limiter = RateLimiter(
        50, 5000, 300, clock=fake.clock, sleep=lambda s: None, headroom=0, window_headroom=0
    )
    delays: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            delay = limiter.reserve()
            with lock:
                delays.append(delay)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots = sorted(delays)
    assert len(slots) == 800
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) == pytest.approx(0.06)
    assert max(gaps) == pytest.approx(0.06)


@settings(max_examples=60, deadline=None)
@given(
    rps=st.floats(1, 100),
    per_window=st.integers(5, 300),
    window=st.floats(1, 30),
    gaps=st.lists(st.floats(0, 2), min_size=20, max_size=200),
)
def test_both_limits_hold_for_any_arrival_pattern(
    rps: float, per_window: int, window: float, gaps: list[float]
) -> None:
    fake = FakeTime(start=0.0)
    limiter = RateLimiter(
        rps, per_window, window, clock=fake.clock, sleep=fake.sleep, headroom=0, window_headroom=0
    )
    sent = []
    for gap in gaps:
        fake.advance(gap)  # callers arrive whenever they like
        limiter.acquire()
        sent.append(fake.clock())
    tolerance = 1e-9
    assert all(b - a >= limiter.interval - tolerance for a, b in itertools.pairwise(sent))
    assert _max_in_window(sent, window - tolerance) <= per_window
    assert _max_in_window(sent, 1.0 - tolerance) <= max(1, int(rps) + 1)


def test_token_is_fetched_lazily_cached_and_refreshed_before_expiry() -> None:
    fake = FakeTime(start=0.0)
    fetched: list[str] = []
    masked: list[str] = []

    def fetch() -> tuple[str, float]:
        fetched.append(f"tok-{len(fetched) + 1}")
        return fetched[-1], 18000.0

    provider = TokenProvider(fetch, clock=fake.clock, refresh_margin=300.0, on_secret=masked.append)
    assert fetched == []  # nothing at construction
    assert provider.get() == "tok-1"
    fake.advance(17_699.0)
    assert provider.get() == "tok-1"  # 301 s before expiry: still used
    fake.advance(1.0)
    assert provider.get() == "tok-2"  # 300 s before expiry: refreshed early
    assert masked == ["tok-1", "tok-2"]
    assert "tok-2" not in repr(provider.current)


def test_short_lived_token_is_reused_for_half_its_life() -> None:
    fake = FakeTime(start=0.0)
    count = iter(range(1, 100))
    provider = TokenProvider(lambda: (f"t{next(count)}", 60.0), clock=fake.clock, refresh_margin=300.0)
    assert provider.get() == "t1"
    fake.advance(29.0)
    assert provider.get() == "t1"
    fake.advance(1.0)
    assert provider.get() == "t2"


def test_invalidate_drops_only_the_rejected_token() -> None:
    values = iter(["a", "b"])
    provider = TokenProvider(lambda: (next(values), 18000.0))
    assert provider.get() == "a"
    assert provider.invalidate("zzz") is False
    assert provider.get() == "a"
    assert provider.invalidate("a") is True
    assert provider.invalidate("a") is False  # a second thread with the same stale token: no-op
    assert provider.get() == "b"


def test_concurrent_callers_share_one_fetch() -> None:
    calls: list[int] = []
    start = threading.Barrier(8)

    def slow_fetch() -> tuple[str, float]:
        calls.append(1)
        time.sleep(0.05)  # long enough for every thread to pile up on the lock
        return "shared", 18000.0

    provider = TokenProvider(slow_fetch)
    seen: list[str] = []

    def worker() -> None:
        start.wait()
        seen.append(provider.get())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert seen == ["shared"] * 8
