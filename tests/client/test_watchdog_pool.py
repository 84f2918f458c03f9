"""The watchdog never shuts a connection that went back to the pool: an attempt whose answer arrived
in full releases its connection, and another thread's next attempt may already be using it when the
first attempt's end comes (a busy machine can hold the first thread that long between reading the
answer and leaving the attempt). Real loopback HTTP/1.1 keep-alive server.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_provider_m3ter.client import M3terClient
from airflow_provider_m3ter.client.deadline import WATCHDOG, time_limit
from tests.client.test_deadlines import _client


class _KeepAlive(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, int]] = []  # (method, path, client port)
        self.b_arrived = threading.Event()
        self.hold_b = 1.5  # seconds before B is answered
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _KeepAlive

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append((self.command, self.path.split("?")[0], self.client_address[1]))
        if self.path.startswith("/oauth/token"):
            body: dict[str, Any] = {"access_token": "t" * 40, "token_type": "Bearer", "expires_in": 18000}
        else:
            body = {}
        if self.path.endswith("/b"):
            self.server.b_arrived.set()
            time.sleep(self.server.hold_b)
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer


def test_an_attempt_ending_after_its_answer_never_shuts_the_next_attempts_pooled_connection() -> None:
    server = _KeepAlive()
    port = server.server_address[1]
    client: M3terClient = _client(f"http://127.0.0.1:{port}", deadline=20.0, timeout=10.0, pool_size=1)
    a_released = threading.Event()
    a_thread: list[threading.Thread] = []
    session = client._transport.session
    original = session.request

    def request(method: str, url: str, **kwargs: Any) -> requests.Response:
        response = original(method, url, **kwargs)
        if threading.current_thread() in a_thread and url.endswith("/a"):
            # A's answer is complete and its connection is back in the pool; this thread is held
            # (as a busy machine would) until B uses that connection and A's end has passed
            a_released.set()
            server.b_arrived.wait(10.0)
            time.sleep(1.2)
        return response

    session.request = request  # type: ignore[method-assign]
    outcomes: dict[str, Any] = {}

    def call_a() -> None:
        try:
            with time_limit(1.0):
                outcomes["a"] = client.request("GET", "a")
        except BaseException as exc:  # handed to the test
            outcomes["a"] = exc

    def call_b() -> None:
        a_released.wait(10.0)
        try:
            outcomes["b"] = client.request("POST", "b", json={"x": 1})
        except BaseException as exc:  # handed to the test
            outcomes["b"] = exc

    try:
        client.request("GET", "warm")  # the token and the one pooled connection
        before = client.stats.attempts
        threads = [threading.Thread(target=call_a, daemon=True), threading.Thread(target=call_b, daemon=True)]
        a_thread.append(threads[0])
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15.0)
        assert not any(thread.is_alive() for thread in threads)
        # the control: B went over A's connection (the one the watchdog would shut)
        ports: dict[str, int] = {}
        for _, path, port in server.seen:
            ports.setdefault(path, port)  # each path's first send
        assert (
            ports["/organizations/12345678-90ab-4cde-8f01-234567890abc/a"]
            == ports["/organizations/12345678-90ab-4cde-8f01-234567890abc/b"]
        )
        # B was sent once and answered; A's answer arrived before its end and is a success
        assert [path for _, path, _ in server.seen if path.endswith("/b")] == [
            "/organizations/12345678-90ab-4cde-8f01-234567890abc/b"
        ]
        assert outcomes == {"a": {}, "b": {}}, outcomes
        assert client.stats.attempts - before == 2
        assert WATCHDOG.watching() == 0
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def test_an_upload_put_redirected_to_a_slow_server_still_ends_at_the_limit() -> None:
    # The PUT follows redirects: the 307's connection goes back to the pool (the attempt is no
    # longer watched then), and the redirected request must be watched again.
    from airflow_provider_m3ter.client import M3terTransientError
    from airflow_provider_m3ter.client.file_upload import UploadTicket, put_upload
    from tests.client.test_deadlines import TrickleServer

    slow = TrickleServer("trickle")

    class _Redirect(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{slow.port}/_upload/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

    redirect = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    redirect.daemon_threads = True
    threading.Thread(target=redirect.serve_forever, daemon=True).start()
    ticket = UploadTicket(job_id="job-1", url=f"http://127.0.0.1:{redirect.server_address[1]}/_upload/sig")
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            with time_limit(2.0):
                put_upload(ticket, b"[]", timeout=60.0)
        except BaseException as exc:  # handed to the test
            outcome[0] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15.0)
    elapsed = time.monotonic() - started
    try:
        assert not thread.is_alive(), f"the PUT was still running after {elapsed:.1f} s"
        assert slow.connections == 1  # the control: the redirect was followed
        assert isinstance(outcome[0], M3terTransientError), repr(outcome[0])
        assert 1.5 <= elapsed <= 3.5, elapsed
        assert WATCHDOG.watching() == 0
    finally:
        slow.close()
        redirect.shutdown()
        redirect.server_close()


_AFTER_A_VERY_LONG_LIMIT = r"""
import sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from airflow_provider_m3ter.client import M3terTransientError
from airflow_provider_m3ter.client.deadline import time_limit
from airflow_provider_m3ter.client.file_upload import UploadTicket, put_upload
from tests.client.test_deadlines import TrickleServer, _client


class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


ok = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=ok.serve_forever, daemon=True).start()
# an upload inside a limit of centuries (an execution_timeout of timedelta(days=200_000), say)
with time_limit(2e10):
    put_upload(UploadTicket(job_id="j", url=f"http://127.0.0.1:{ok.server_address[1]}/_upload/s"), b"[]")
time.sleep(0.5)
# then an ordinary call: it must still end at its 2 s deadline
slow = TrickleServer("trickle")
started = time.monotonic()
try:
    with _client(f"http://127.0.0.1:{slow.port}", deadline=2.0, timeout=2.0) as client:
        client.request("GET", "meters")
except M3terTransientError:
    pass
print(f"elapsed {time.monotonic() - started:.2f}")
"""


def test_an_attempt_with_a_limit_of_centuries_does_not_stop_the_watchdog_for_later_calls() -> None:
    # A wait longer than threading.TIMEOUT_MAX (about 292 years) would raise OverflowError in the
    # watchdog's thread; the thread must survive it, or no later attempt of the process is ever cut.
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        done = subprocess.run(
            [sys.executable, "-c", _AFTER_A_VERY_LONG_LIMIT],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("the call after the long-limit upload was still running after 20 s") from None
    assert done.returncode == 0, done.stderr[-2000:]
    elapsed = float(done.stdout.split("elapsed ")[1])
    assert 1.5 <= elapsed <= 4.0, (elapsed, done.stderr[-2000:])


def test_a_watchdog_thread_that_could_not_start_is_started_by_the_next_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "can't start new thread" (a container's pids limit, which cannot be reached here as root):
    # that attempt fails, but later attempts must be watched again, not left unbounded forever.
    import socket

    from airflow_provider_m3ter.client.deadline import AttemptWatchdog

    watchdog = AttemptWatchdog()
    real_start = threading.Thread.start
    failures = [1]

    def start(self: threading.Thread) -> None:
        if self.name == "m3ter-attempt-watchdog" and failures:
            failures.pop()
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError):
        watchdog.watch(0.2)
    sock, peer = socket.socketpair()
    sock.settimeout(10.0)  # a watchdog that never fires fails the test instead of hanging it

    class _Conn:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

    started = time.monotonic()
    try:
        with watchdog.watch(0.3) as attempt:
            attempt.attach(_Conn(sock), None)
            try:
                data = sock.recv(1)
            except TimeoutError:
                data = None
        assert data == b""
        assert attempt.fired
        assert time.monotonic() - started < 5.0
    finally:
        sock.close()
        peer.close()
