"""Time limits that hold whatever the server does: the enclosing budget and the per-attempt watchdog.

Two mechanisms, both process-wide and cheap when nothing goes wrong:

* :func:`time_limit` sets a budget (seconds) for every client call made inside the ``with`` block,
  in this thread or task (a ``contextvars`` variable, so ``asyncio.to_thread`` carries it). A call's
  own deadline is then ``min(settings.deadline, time left in the budget)``, and nested budgets
  take the smallest. Sensors, triggers and the file-upload wait use it so that one check never
  outlives the wait it belongs to.
* :class:`AttemptWatchdog` ends one HTTP attempt at an absolute time, even when the server keeps the
  socket busy (response headers or body trickled a byte at a time, a TLS handshake that never
  finishes): socket timeouts only bound each single read. The watchdog shuts the attempt's socket
  down when its time is up; the blocked read returns at once and the transport reports a timeout.
  Connection classes of the client's HTTP adapter (:class:`WatchedAdapter`) tell the watchdog which
  socket an attempt uses.

Name resolution (DNS) is bounded too: :class:`WatchedAdapter`'s connections resolve the host in a
helper thread and give up when the attempt's time is up (the lookup thread itself then ends on the
resolver's own timeout, in the background).
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

__all__ = ["time_limit"]

# absolute end of the innermost budget, on the time.monotonic() scale (None: no budget)
# and what it is, in words, for messages
_budget: contextvars.ContextVar[tuple[float, str] | None] = contextvars.ContextVar(
    "m3ter_budget", default=None
)


@contextmanager
def time_limit(seconds: float, what: str | None = None) -> Iterator[float]:
    """Bound every client call made inside the block to ``seconds`` from now (nested: the smaller wins).

    :param seconds: the budget; 0 or less means calls inside fail at once with a timeout.
    :param what: the limit in words for error messages, e.g. ``"the sensor's 600 s timeout"``.
    :return: (as the ``with`` target) the effective seconds left, after nesting.
    """
    end = time.monotonic() + max(0.0, float(seconds))
    text = what or f"the enclosing {seconds:.1f} s time limit"
    outer = _budget.get()
    if outer is not None and outer[0] <= end:
        end, text = outer
    token = _budget.set((end, text))
    try:
        yield end - time.monotonic()
    finally:
        _budget.reset(token)


def time_left() -> tuple[float, str] | None:
    """Seconds left in the innermost :func:`time_limit` block and its description; ``None`` outside any."""
    budget = _budget.get()
    return None if budget is None else (budget[0] - time.monotonic(), budget[1])


class _Attempt:
    """One HTTP attempt under watch: its end time and the sockets it uses."""

    __slots__ = ("conn", "end", "fired", "previous", "raw", "released", "watchdog")

    def __init__(self, end: float, watchdog: AttemptWatchdog) -> None:
        self.end = end
        self.fired = False
        self.released = False  # its connection went back to the pool: no longer watched
        self.conn: Any = None
        self.raw: socket.socket | None = None  # a dup of a new connection's socket (TLS wraps detach it)
        self.watchdog = watchdog
        self.previous: _Attempt | None = None

    def __enter__(self) -> _Attempt:
        self.previous = getattr(_current, "attempt", None)
        _current.attempt = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.attempt = self.previous
        self.watchdog._finish(self)

    def attach(self, conn: Any, sock: socket.socket | None) -> None:
        if self.released:  # a further request of the same attempt (a redirect followed)
            self.watchdog._rewatch(self)
        self.conn = conn
        if sock is not None:
            try:
                self.raw = sock.dup()
            except OSError:
                self.raw = None
        if self.fired:
            self.abort()

    def abort(self) -> None:
        """Shut the attempt's sockets down so that a blocked read or handshake returns now."""
        for sock in (self.raw, getattr(self.conn, "sock", None)):
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        if self.raw is not None:
            with suppress(OSError):
                self.raw.close()
            self.raw = None


_current = threading.local()


class AttemptWatchdog:
    """Ends HTTP attempts at their time limit; one daemon thread per process, started on first use.

    Watching an attempt costs one set insertion and one removal under a lock: no thread, timer or
    event per attempt. The thread sleeps until the earliest end among the attempts still running
    (it is woken only when a new attempt ends earlier than that), shuts down the sockets of those
    whose time is up, and forgets finished attempts at once, so nothing finished is ever shut and
    memory holds only the attempts in flight.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._live: set[_Attempt] = set()
        self._next_wake = _NEVER  # when the thread wakes next (it rescans then)
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float) -> _Attempt:
        """Watch the HTTP attempt made inside ``with watchdog.watch(seconds) as attempt:``; it is cut
        off ``seconds`` from now (``attempt.fired`` then says so).

        :param seconds: the attempt's time limit.
        """
        attempt = _Attempt(time.monotonic() + max(0.0, seconds), self)
        with self._lock:
            if self._thread is None:
                # kept only once started: a start that fails ("can't start new thread") is tried
                # again by the next attempt instead of leaving every later attempt unwatched
                thread = threading.Thread(target=self._run, name="m3ter-attempt-watchdog", daemon=True)
                thread.start()
                self._thread = thread
            self._live.add(attempt)
            if attempt.end < self._next_wake:
                self._next_wake = attempt.end
                self._wake.notify()
        return attempt

    def _finish(self, attempt: _Attempt) -> None:
        # under the lock: the thread never shuts a socket once its attempt has finished (the
        # connection goes back to the pool and may serve the next request)
        with self._lock:
            self._live.discard(attempt)
            attempt.conn = None
            if attempt.raw is not None:
                attempt.release()

    def _released(self, attempt: _Attempt, conn: Any) -> None:
        """``conn`` goes back to the pool (its answer was read in full): stop watching the attempt
        before another thread can take the connection, so a later end never shuts a socket that
        then belongs to someone else's attempt, and an answer complete in time is not a timeout."""
        with self._lock:
            if attempt.conn is conn and not attempt.fired:
                self._live.discard(attempt)
                attempt.released = True
                attempt.conn = None
                attempt.release()

    def _rewatch(self, attempt: _Attempt) -> None:
        """Watch a released attempt again (it sends a further request before its block ends)."""
        with self._lock:
            attempt.released = False
            if not attempt.fired:
                self._live.add(attempt)
                if attempt.end < self._next_wake:
                    self._next_wake = attempt.end
                    self._wake.notify()

    def watching(self) -> int:
        """How many attempts are in flight (for tests and diagnostics)."""
        with self._lock:
            return len(self._live)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                earliest = _NEVER
                for attempt in list(self._live):
                    if attempt.end <= now:
                        self._live.discard(attempt)
                        attempt.fired = True
                        attempt.abort()
                    elif attempt.end < earliest:
                        earliest = attempt.end
                self._next_wake = earliest
                # at most _LONGEST_SLEEP at a time: a longer wait (an upload inside a limit of
                # centuries) would overflow the lock's timeout and end the thread for good
                self._wake.wait(None if earliest == _NEVER else min(earliest - now, _LONGEST_SLEEP))

    def _after_fork_in_child(self) -> None:
        """A forked child (Airflow's LocalExecutor, say) has none of the parent's threads, and the
        lock may have been held by one of them: start afresh (the thread starts on first use)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._live = set()
        self._next_wake = _NEVER
        self._thread = None


_NEVER = float("inf")
_LONGEST_SLEEP = 3600.0  # seconds; far below threading.TIMEOUT_MAX (about 292 years)

WATCHDOG = AttemptWatchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=WATCHDOG._after_fork_in_child)


def _resolve_within(host: str, port: int, seconds: float) -> list[str]:
    """The addresses of ``host`` (in the resolver's order, once each) from a lookup that may take at
    most ``seconds``; the lookup thread is left to finish on its own when it takes longer."""
    future: Future[list[str]] = Future()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
            future.set_result(list(dict.fromkeys(str(info[4][0]) for info in infos)))
        except BaseException as exc:  # handed to the waiting thread
            future.set_exception(exc)

    threading.Thread(target=lookup, name="m3ter-dns", daemon=True).start()
    return future.result(timeout=max(0.0, seconds))


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.strip("[]"))
            return True
        except OSError:
            pass
    return False


class _WatchedMixin:
    """Tell the watchdog which socket the current attempt uses; bound the DNS lookup by its time."""

    _dns_host: str
    port: int
    timeout: Any

    def _new_conn(self) -> socket.socket:
        attempt: _Attempt | None = getattr(_current, "attempt", None)
        host = self._dns_host
        if attempt is not None and host and not _is_ip(host) and host != "localhost":
            sock = self._connect_resolved(attempt, host)
        else:
            sock = super()._new_conn()  # type: ignore[misc]
        if attempt is not None:
            attempt.attach(self, sock)
        return sock

    def _connect_resolved(self, attempt: _Attempt, host: str) -> socket.socket:
        """Resolve ``host`` within the attempt's time, then connect to its addresses in turn (as
        urllib3 would), each connect bounded by the time still left."""
        left = attempt.end - time.monotonic()
        try:
            addresses = _resolve_within(host, self.port, left)
        except TimeoutError:
            raise ConnectTimeoutError(self, f"resolving {host} took longer than {left:.1f} s") from None
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        timeout = self.timeout
        last: Exception | None = None
        try:
            for address in addresses:
                left = attempt.end - time.monotonic()
                if left <= 0:
                    break
                # connect to the address found; TLS still checks the certificate against the host name
                self._dns_host = address
                if isinstance(timeout, (int, float)) and timeout > left:
                    self.timeout = left
                try:
                    return super()._new_conn()  # type: ignore[misc,no-any-return]
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    last = exc
        finally:
            self._dns_host = host
            self.timeout = timeout
        if last is not None:
            raise last
        raise ConnectTimeoutError(self, f"no time left to connect to {host}")

    def request(self, *args: Any, **kwargs: Any) -> Any:
        attempt: _Attempt | None = getattr(_current, "attempt", None)
        if attempt is not None:
            attempt.attach(self, None)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedPoolMixin:
    """Stop watching an attempt when its connection goes back to the pool (see ``_released``)."""

    def _put_conn(self, conn: Any) -> None:
        attempt: _Attempt | None = getattr(_current, "attempt", None)
        if attempt is not None and conn is not None and attempt.conn is conn:
            attempt.watchdog._released(attempt, conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _WatchedHTTPPool(_WatchedPoolMixin, HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(_WatchedPoolMixin, HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class WatchedAdapter(HTTPAdapter):
    """``requests`` adapter whose connections report their sockets to :data:`WATCHDOG`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme") and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
