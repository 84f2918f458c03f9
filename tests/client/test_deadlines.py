"""Every client call ends by its deadline, whatever the server does: real loopback servers that
trickle their answer (status line, headers, body, TLS handshake) one byte every 0.5 s, or stay
silent, and a name lookup that hangs.

Socket timeouts alone bound each read, not the call: a byte every 0.5 s never lets a 2 s read
timeout fire. The client's watchdog ends the attempt at the deadline instead.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient, M3terTransientError
from airflow_provider_m3ter.client.auth import PROCESS_TOKENS
from airflow_provider_m3ter.client.deadline import time_limit
from tests.client.conftest import NO_PACING

_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    + b'{"access_token": "'
    + b"x" * 360
    + b'", "expires_in": 18000}'
)


class TrickleServer:
    """A loopback TCP server that answers every connection by ``behaviour`` in its own thread.

    ``trickle``: sends the whole HTTP answer one byte every 0.5 s (headers first).
    ``slow_body``: sends the headers at once, then the body one byte every 0.5 s.
    ``silent``: reads the request and never answers.
    ``endless_headers``: a 200 status line, then a header trickled one byte every 0.5 s forever.
    ``tls_trickle``: for an https client: sends a TLS record header, then a byte every 0.5 s.
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(60)
            conn.recv(65536)  # the request (or the TLS ClientHello)
            if self.behaviour == "silent":
                self._stop.wait(60)
                return
            if self.behaviour == "endless_headers":
                # a complete status line, then a header that never ends: cut off there, the HTTP
                # library would take what arrived as a whole answer (a 200 with no body)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: ")
                payload = b"a" * 1000
            elif self.behaviour == "slow_body":
                head, body = _ANSWER.split(b"\r\n\r\n", 1)
                conn.sendall(head + b"\r\n\r\n")
                payload = body
            elif self.behaviour == "tls_trickle":
                payload = b"\x16\x03\x03\x40\x00" + b"\x02" * 16384  # a handshake record, never complete
            else:
                payload = _ANSWER
            for byte in payload:
                if self._stop.is_set():
                    return
                conn.sendall(bytes([byte]))
                time.sleep(0.5)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[TrickleServer]:
    srv = TrickleServer(request.param)
    yield srv
    srv.close()


def _client(url: str, **overrides: Any) -> M3terClient:
    options: dict[str, Any] = {
        "org_id": "12345678-90ab-4cde-8f01-234567890abc",
        "access_key_id": "key",
        "api_secret": "secret-value",
        "config_url": url,
        "ingest_url": url,
        "deadline": 5.0,
        "timeout": 2.0,
        **NO_PACING,
        **overrides,
    }
    return M3terClient(ClientSettings(**options))


def _timed_call(
    client: M3terClient, limit: float, budget: float | None = None
) -> tuple[float, BaseException | None]:
    """Run one call in a thread (inside ``time_limit(budget)`` if given); fail the test (instead of
    hanging) if it outlives ``limit``."""
    outcome: list[BaseException | None] = [None]

    def run() -> None:
        try:
            if budget is None:
                client.request("GET", "meters")
            else:
                with time_limit(budget):
                    client.request("GET", "meters")
        except BaseException as exc:  # handed to the test
            outcome[0] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the call was still running after {elapsed:.1f} s"
    return elapsed, outcome[0]


@pytest.mark.parametrize("server", ["trickle", "slow_body", "silent"], indirect=True)
def test_a_slow_server_cannot_outlive_the_call_deadline(server: TrickleServer) -> None:
    # deadline 5 s, 2 s per read: bytes every 0.5 s keep every read alive, the call must still end at 5 s
    with _client(f"http://127.0.0.1:{server.port}") as client:
        elapsed, error = _timed_call(client, 15.0)
    assert isinstance(error, M3terTransientError), repr(error)
    assert "5 s deadline" in str(error)
    # silence ends reads after 2 s each, so retrying may stop early; trickles run to the deadline
    assert (2.0 if server.behaviour == "silent" else 4.5) <= elapsed <= 6.5, elapsed


@pytest.mark.parametrize("server", ["tls_trickle"], indirect=True)
def test_a_tls_handshake_trickled_byte_by_byte_ends_at_the_deadline(server: TrickleServer) -> None:
    with _client(f"https://localhost:{server.port}", deadline=3.0, timeout=2.0) as client:
        elapsed, error = _timed_call(client, 15.0)
    # cut off mid-handshake is a timeout (transient), not a certificate error (final)
    assert isinstance(error, M3terTransientError), repr(error)
    assert 1.0 <= elapsed <= 4.5, elapsed
    assert "3 s deadline" in str(error)


@pytest.mark.parametrize("server", ["trickle"], indirect=True)
def test_an_enclosing_time_limit_shortens_the_call(server: TrickleServer) -> None:
    with _client(f"http://127.0.0.1:{server.port}", deadline=300.0, timeout=60.0) as client:
        elapsed, error = _timed_call(client, 15.0, budget=2.0)
    assert isinstance(error, M3terTransientError), repr(error)
    assert 1.0 <= elapsed <= 3.5, elapsed
    assert "enclosing 2.0 s time limit" in str(error)


def test_a_hanging_name_lookup_ends_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    # the one thing not run for real: no resolver here can be made to hang on demand
    real = socket.getaddrinfo

    def hanging(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "api.m3ter.invalid":
            time.sleep(20)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    with _client("https://api.m3ter.invalid", deadline=3.0, timeout=1.0) as client:
        elapsed, error = _timed_call(client, 15.0)
    assert isinstance(error, M3terTransientError), repr(error)
    assert 1.0 <= elapsed <= 4.5, elapsed


def test_a_host_with_a_dead_first_address_falls_back_to_the_next(
    monkeypatch: pytest.MonkeyPatch, m3ter_emulator: Any
) -> None:
    # the bounded lookup must keep urllib3's behaviour of trying every address (IPv6 then IPv4 ...)
    port = int(m3ter_emulator.config_url.rsplit(":", 1)[1])
    real = socket.getaddrinfo

    def two_addresses(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "api.m3ter.test":
            return [
                # the emulator listens on 127.0.0.1 only: 127.0.0.3 refuses the connection
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.3", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
            ]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    url = f"http://api.m3ter.test:{port}"
    settings = ClientSettings(
        org_id=m3ter_emulator.org_id,
        access_key_id=m3ter_emulator.access_key_id,
        api_secret=m3ter_emulator.api_secret,
        config_url=url,
        ingest_url=url,
        allow_insecure_http=True,
        **NO_PACING,
    )
    with M3terClient(settings) as client:
        assert client.request("GET", "meters", params={"pageSize": 1}) is not None
        assert client.stats.attempts == 2  # token + list: no retry was needed


@pytest.mark.parametrize("server", ["trickle", "endless_headers"], indirect=True)
def test_the_file_upload_put_ends_at_the_enclosing_time_limit(server: TrickleServer) -> None:
    from airflow_provider_m3ter.client.file_upload import UploadTicket, put_upload

    ticket = UploadTicket(job_id="job-1", url=f"http://127.0.0.1:{server.port}/_upload/signature-part")
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
    assert not thread.is_alive(), f"the PUT was still running after {elapsed:.1f} s"
    assert isinstance(outcome[0], M3terTransientError), repr(outcome[0])
    assert 1.5 <= elapsed <= 3.5, elapsed
    assert "signature-part" not in str(outcome[0])


@pytest.mark.parametrize("server", ["endless_headers"], indirect=True)
def test_an_answer_cut_off_mid_headers_is_a_timeout_never_an_empty_success(server: TrickleServer) -> None:
    url = f"http://127.0.0.1:{server.port}"
    with _client(url, deadline=3.0, timeout=2.0) as client:
        elapsed, error = _timed_call(client, 15.0)
    assert isinstance(error, M3terTransientError), repr(error)
    assert "3 s deadline" in str(error)
    assert 2.5 <= elapsed <= 4.5, elapsed
    # the same for the calls whose empty answer would read as "nothing there" or "accepted"
    with _client(url, deadline=2.0, timeout=2.0) as client:
        with pytest.raises(M3terTransientError):
            client.submit_measurements(
                [{"uid": "u1", "meter": "m", "account": "a", "ts": "2024-05-01T00:00:00Z"}]
            )


def test_waiting_for_the_pace_counts_against_the_deadline(m3ter_emulator: Any) -> None:
    # one Config request every 20 s: the token takes the first slot, so the call's own request
    # could start only after its 3 s deadline; it must give up at once, not sleep 20 s first
    client = M3terClient(
        ClientSettings(
            org_id=m3ter_emulator.org_id,
            access_key_id=m3ter_emulator.access_key_id,
            api_secret=m3ter_emulator.api_secret,
            config_url=m3ter_emulator.config_url,
            ingest_url=m3ter_emulator.ingest_url,
            **{**NO_PACING, "config_requests_per_second": 0.05},
            deadline=3.0,
        )
    )
    with client:
        elapsed, error = _timed_call(client, 30.0)
    assert isinstance(error, M3terTransientError), repr(error)
    assert "pacing" in str(error)
    assert elapsed <= 3.5, elapsed


def test_a_token_fetch_by_another_client_does_not_hold_this_call_past_its_deadline(
    m3ter_emulator_factory: Any,
) -> None:
    # every client of one credential shares one token: a slow fetch by a patient client must not
    # hold an impatient one (deadline 3 s) until that fetch ends (20 s). A fresh emulator, so that
    # no token of this process is cached for it yet.
    m3ter_emulator = m3ter_emulator_factory()
    m3ter_emulator.set_faults(latency_ms=20_000, target="token")

    def client(deadline: float) -> M3terClient:
        return M3terClient(
            ClientSettings(
                org_id=m3ter_emulator.org_id,
                access_key_id=m3ter_emulator.access_key_id,
                api_secret=m3ter_emulator.api_secret,
                config_url=m3ter_emulator.config_url,
                ingest_url=m3ter_emulator.ingest_url,
                **NO_PACING,
                deadline=deadline,
                timeout=30.0,
            ),
            token_store=PROCESS_TOKENS,  # as the hook builds them: one token per credential
        )

    patient, impatient = client(60.0), client(3.0)
    try:
        threading.Thread(target=lambda: _timed_call(patient, 40.0), daemon=True).start()
        time.sleep(0.5)  # the patient client is fetching the token now
        elapsed, error = _timed_call(impatient, 30.0)
        assert isinstance(error, M3terTransientError), repr(error)
        assert elapsed <= 4.0, elapsed
    finally:
        m3ter_emulator.clear_faults()
        patient.close()
        impatient.close()
