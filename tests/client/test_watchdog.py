"""The attempt watchdog shared by every client of a process: it cuts each attempt at its own end
while other clients and threads are busy, never touches a finished attempt's socket (that
connection is back in the pool), keeps nothing of finished attempts, and works in a forked child.

Real sockets throughout (socket pairs, loopback servers, the emulator).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient, M3terTransientError
from airflow_provider_m3ter.client.deadline import WATCHDOG, AttemptWatchdog
from tests.client.conftest import NO_PACING
from tests.client.test_deadlines import TrickleServer, _client, _timed_call


class _Conn:
    """The one thing the watchdog reads from an HTTP connection: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.settimeout(10.0)  # a watchdog that never fires fails the test instead of hanging it
    return a, b


def test_attempts_are_cut_each_at_its_own_end_while_other_clients_are_busy(m3ter_emulator: Any) -> None:
    # Three trickled calls with 4 s, 2 s and 3 s deadlines, started in that order (so the watchdog
    # must wake earlier than planned twice), while four threads keep other clients busy with
    # fast calls: each slow call ends at its own deadline, no fast call is cut.
    servers = [TrickleServer("trickle") for _ in range(3)]
    stop = threading.Event()
    fast_done: list[int] = []
    fast_errors: list[BaseException] = []

    def busy() -> None:
        settings = dict(
            org_id=m3ter_emulator.org_id,
            access_key_id=m3ter_emulator.access_key_id,
            api_secret=m3ter_emulator.api_secret,
            config_url=m3ter_emulator.config_url,
            ingest_url=m3ter_emulator.ingest_url,
            deadline=30.0,
            **NO_PACING,
        )
        done = 0
        with M3terClient(ClientSettings(**settings)) as client:  # type: ignore[arg-type]
            while not stop.is_set():
                try:
                    client.request("GET", "meters", params={"pageSize": 1})
                    done += 1
                except BaseException as exc:  # handed to the test
                    fast_errors.append(exc)
                    return
        fast_done.append(done)

    workers = [threading.Thread(target=busy, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    results: dict[float, tuple[float, BaseException | None]] = {}

    def slow(server: TrickleServer, deadline: float) -> None:
        with _client(f"http://127.0.0.1:{server.port}", deadline=deadline, timeout=2.0) as client:
            results[deadline] = _timed_call(client, 15.0)

    try:
        slow_threads = []
        for server, deadline in zip(servers, (4.0, 2.0, 3.0), strict=True):
            thread = threading.Thread(target=slow, args=(server, deadline), daemon=True)
            thread.start()
            slow_threads.append(thread)
            time.sleep(0.05)
        for thread in slow_threads:
            thread.join(20.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(20.0)
        for server in servers:
            server.close()
    assert sorted(results) == [2.0, 3.0, 4.0]
    for deadline, (elapsed, error) in results.items():
        assert isinstance(error, M3terTransientError), repr(error)
        assert f"{deadline:g} s deadline" in str(error)
        assert deadline - 0.6 <= elapsed <= deadline + 1.2, (deadline, elapsed)
    assert fast_errors == []
    assert len(fast_done) == 4, fast_done
    assert min(fast_done) > 0, fast_done  # the control: they did run


def test_a_finished_attempt_is_forgotten_and_its_socket_never_shut() -> None:
    watchdog = AttemptWatchdog()
    finished, peer = _pair()
    with watchdog.watch(0.2) as attempt:
        attempt.attach(_Conn(finished), None)
    assert watchdog.watching() == 0
    # the control: an attempt still running at its end is shut down (the read returns at once)
    running, running_peer = _pair()
    started = time.monotonic()
    with watchdog.watch(0.2) as cut:
        cut.attach(_Conn(running), None)
        assert running.recv(1) == b""
    assert cut.fired
    assert time.monotonic() - started < 5.0
    # long after the finished attempt's end, its connection still works both ways
    peer.sendall(b"x")
    assert finished.recv(1) == b"x"
    finished.sendall(b"y")
    assert peer.recv(1) == b"y"
    assert not attempt.fired
    for sock in (finished, peer, running, running_peer):
        sock.close()


def test_finished_attempts_leave_nothing_behind() -> None:
    # a long deadline, many calls: only the attempts in flight are kept (not one slot per call)
    watchdog = AttemptWatchdog()
    for _ in range(5000):
        with watchdog.watch(300.0):
            pass
    assert watchdog.watching() == 0
    with watchdog.watch(300.0):
        assert watchdog.watching() == 1  # the control: a running attempt is counted


def test_a_new_connection_of_a_finished_call_is_not_shut_later(m3ter_emulator: Any) -> None:
    # A real client, a 1 s deadline: the pooled connection outlives the call's end and must stay usable.
    settings = ClientSettings(
        org_id=m3ter_emulator.org_id,
        access_key_id=m3ter_emulator.access_key_id,
        api_secret=m3ter_emulator.api_secret,
        config_url=m3ter_emulator.config_url,
        ingest_url=m3ter_emulator.ingest_url,
        deadline=1.0,
        **NO_PACING,
    )
    with M3terClient(settings) as client:
        client.request("GET", "meters", params={"pageSize": 1})
        time.sleep(1.5)  # past the first calls' deadlines
        client.request("GET", "meters", params={"pageSize": 1})
        # one attempt each: the pooled connection was not shut by a stale watch (a shut
        # connection would cost a failed attempt and a retry)
        assert client.stats.attempts == 3
        assert client.stats.retries == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_has_a_working_watchdog_even_if_the_lock_was_held_at_the_fork() -> None:
    # Airflow's LocalExecutor forks task processes: the child has none of the parent's threads,
    # and a lock held by one of them at that moment would stay held forever.
    with WATCHDOG.watch(1.0):
        pass  # the parent's watchdog thread is running
    with WATCHDOG._lock:  # a parent thread is inside the watchdog at the fork
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 if its attempt was cut on time
            code = 1
            try:
                sock, _peer = _pair()
                started = time.monotonic()
                with WATCHDOG.watch(0.5) as attempt:
                    attempt.attach(_Conn(sock), None)
                    data = sock.recv(1)
                code = 0 if data == b"" and attempt.fired and time.monotonic() - started < 5.0 else 1
            finally:
                os._exit(code)
    status = None
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's attempt was not cut within 10 s")
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, status
