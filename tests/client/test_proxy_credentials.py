"""A proxy's credentials (from ``HTTPS_PROXY``/``HTTP_PROXY``) are secrets like the API's: a proxy
that refuses them (407) ends the call at once as a configuration error, and neither the password,
the ``user:password`` pair nor its Base64 form (the ``Proxy-Authorization`` header a proxy's error
page may echo) appears in the error or in any log line, at DEBUG included.

A loopback "proxy" answers every request, the CONNECT of an https call included, with a 407 whose
page starts with the ``Proxy-Authorization`` header it received.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient, M3terError
from tests.client.conftest import NO_PACING

PROXY_USER = "proxy-user"
PROXY_PASSWORD = "pr0xy-Pa55word-9f3c"


class RefusingProxy:
    """Answers every request with 407 and a page that echoes its ``Proxy-Authorization`` header."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    head = conn.recv(65536).decode("latin-1")
                except OSError:
                    continue
                self.requests += 1
                echoed = [
                    line for line in head.split("\r\n") if line.lower().startswith("proxy-authorization")
                ]
                page = ("\n".join(echoed) + "\nProxy authentication failed.").encode()
                conn.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Type: text/plain\r\n'
                    + f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n".encode()
                    + page
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RefusingProxy]:
    server = RefusingProxy()
    url = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{server.port}"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield server
    server.close()


def _forms() -> list[str]:
    pair = f"{PROXY_USER}:{PROXY_PASSWORD}"
    return [PROXY_PASSWORD, pair, base64.b64encode(pair.encode()).decode()]


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_that_refuses_its_credentials_ends_the_call_at_once_and_they_stay_secret(
    proxy: RefusingProxy, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    # an address nothing listens on: every request goes through the proxy
    url = f"{scheme}://m3ter.invalid"
    settings = ClientSettings(
        org_id="12345678-90ab-4cde-8f01-234567890abc",
        access_key_id="key",
        api_secret="secret-value",
        config_url=url,
        ingest_url=url,
        deadline=20.0,
        timeout=5.0,
        max_attempts=4,
        allow_insecure_http=scheme == "http",
        **NO_PACING,
    )
    caplog.set_level(logging.DEBUG)
    with M3terClient(settings) as client, pytest.raises(M3terError) as raised:
        client.request("GET", "meters")
    error = raised.value
    # configuration, not bad luck: one request, no retry, a final error
    assert proxy.requests == 1, proxy.requests
    assert not error.retryable, error
    assert "407" in str(error), str(error)
    seen = "\n".join([str(error), repr(error), *(r.getMessage() for r in caplog.records)])
    for form in _forms():
        assert form not in seen, (form, seen[-2000:])
