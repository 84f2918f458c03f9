"""Secret scan of every client-side code path with DEBUG logging on (requests, urllib3, the client).

Each test uses its own emulator with a secret no other test uses, runs one path (client calls with
a token refresh, file upload with good and tampered signatures, the hook's connection test, a
trigger), captures every log record at every level (formatted, tracebacks included) and every error
text (message, args, cause and context chain), then scans them for the API secret, its HTTP Basic
form, every access token and every piece of every signed upload URL the emulator issued. The
urllib3 request lines must be present (redacted), so the scan provably looked at them.

Task logs of real Airflow runs are scanned by ``tests/hook/test_secret_masking_paths.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client import ClientSettings, M3terClient, M3terError
from airflow_provider_m3ter.client.file_upload import UploadTicket, put_upload, request_upload_url
from tests.client.conftest import NO_PACING


def _error_texts(error: BaseException) -> str:
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None and len(seen) < 40:
        seen += [str(current), repr(current), repr(current.args)]
        seen.append("".join(traceback.format_exception(type(current), current, current.__traceback__)))
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


_LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "requests",
    "airflow_provider_m3ter",
    "airflow_provider_m3ter.client",
)


@contextlib.contextmanager
def capture_debug() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted with tracebacks, into one buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).disabled) for name in _LOGGERS}
    for name in saved:
        # Airflow's logging set-up may have disabled loggers it did not configure
        logging.getLogger(name).setLevel(logging.DEBUG)
        logging.getLogger(name).disabled = False
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, (level, disabled) in saved.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).disabled = disabled


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """:func:`capture_debug` for the whole test."""
    with capture_debug() as buffer:
        yield buffer


@pytest.fixture
def secret_emulator(m3ter_emulator_factory: Any) -> Any:
    """An emulator whose secret (non-ASCII, unique to this test) nobody registered before."""
    marker = uuid.uuid4().hex
    return m3ter_emulator_factory(
        access_key_id=f"scan-key-{marker[:8]}", api_secret=f"Scan-Sécret-€-{marker}"
    )


def _forbidden(emu: Any) -> dict[str, str]:
    """Everything that grants access, by what it is."""
    issued = emu.secrets()
    basic = base64.b64encode(f"{emu.access_key_id}:{emu.api_secret}".encode()).decode()
    found = {"api secret": emu.api_secret, "basic credentials": basic}
    found |= {f"access token {i}": token for i, token in enumerate(issued["access_tokens"])}
    found |= {f"upload token {i}": token for i, token in enumerate(issued["upload_tokens"])}
    found |= {f"upload signature {i}": value for i, value in enumerate(issued["upload_headers"])}
    return found


def _scan(emu: Any, haystacks: dict[str, str]) -> None:
    forbidden = _forbidden(emu)
    for where, text in haystacks.items():
        for what, value in forbidden.items():
            assert value not in text, f"{what} leaked in {where}"


def _client(emu: Any) -> M3terClient:
    settings = ClientSettings(
        org_id=emu.org_id,
        access_key_id=emu.access_key_id,
        api_secret=emu.api_secret,
        config_url=emu.config_url,
        ingest_url=emu.ingest_url,
        max_attempts=1,
        **NO_PACING,
    )
    return M3terClient(settings)


def test_client_calls_uploads_and_their_errors_leak_nothing(
    secret_emulator: Any, debug_log: io.StringIO
) -> None:
    emu = secret_emulator
    errors: list[str] = []
    body = b'[{"uid":"u1","meter":"m","account":"a","ts":"2024-05-01T00:00:00Z","measure":{"x":1}}]'
    with _client(emu) as client:
        client.request("GET", "meters", params={"pageSize": 1})
        emu.expire_tokens()
        client.request("GET", "meters", params={"pageSize": 1})  # 403, a new token, one retry

        good = request_upload_url(client, file_name="scan.json", content_length=len(body))
        put_upload(good, body)
        for ticket in (
            good,  # used already: 403 from the emulator
            UploadTicket(good.job_id, good.url, {**good.headers, "x-emulator-upload-signature": "forged"}),
            request_upload_url(client, file_name="scan2.json", content_length=len(body) + 5),  # wrong length
            UploadTicket(good.job_id, good.url.replace(emu.config_url, "http://127.0.0.1:9"), good.headers),
        ):
            with pytest.raises(M3terError) as info:
                put_upload(ticket, body)
            errors.append(_error_texts(info.value))
            logging.getLogger("airflow_provider_m3ter.client").error("upload failed", exc_info=info.value)
        fresh = request_upload_url(client, file_name="scan3.json", content_length=len(body))
        # a server that echoes the URL and signature back in its error body, as S3 does
        echo = f"<Error><SignatureProvided>{fresh.headers['x-emulator-upload-signature']}</SignatureProvided>"
        echo += f"<Url>{fresh.url}</Url></Error>"
        with pytest.raises(M3terError) as info:
            raise M3terError(403, "PUT", "upload", echo)
        errors.append(_error_texts(info.value))
    log_text = debug_log.getvalue()
    assert '"GET /organizations/' in log_text  # urllib3's request lines were logged and scanned
    # the request line of each PUT is there, its path (the upload token) redacted
    assert re.search(r'"PUT (/_upload/)?\*\*\* HTTP/1.1" 200', log_text), log_text[-3000:]
    assert len(re.findall(r'"PUT (?:/_upload/)?\*\*\* HTTP/1.1" 403', log_text)) == 3
    assert len(emu.secrets()["access_tokens"]) == 2
    assert len(emu.secrets()["upload_tokens"]) == 3
    _scan(emu, {"log": log_text, "errors": "\n".join(errors)})
    assert "***" in errors[-1]


def test_the_hooks_connection_test_leaks_nothing(secret_emulator: Any, monkeypatch) -> None:
    from airflow_provider_m3ter.hooks.m3ter import M3terHook

    emu = secret_emulator
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_SCAN", emu.connection_json())
    broken = {**emu.connection(), "password": emu.api_secret + "-wrong"}
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_SCAN_BAD", json.dumps(broken))
    M3terHook.get_connection("m3ter_scan")  # Airflow sets its logging up on first use: before the capture
    with capture_debug() as debug_log:
        ok, message = M3terHook("m3ter_scan").test_connection()
        bad_ok, bad_message = M3terHook("m3ter_scan_bad").test_connection()
    assert ok, message
    assert not bad_ok
    assert "401" in bad_message
    log_text = debug_log.getvalue()
    assert '"POST /oauth/token HTTP/1.1" 200' in log_text
    _scan(emu, {"log": log_text, "messages": message + bad_message})
    assert emu.api_secret + "-wrong" not in log_text + bad_message


def test_a_trigger_registers_the_api_secret_before_any_request(secret_emulator: Any, monkeypatch) -> None:
    from airflow_provider_m3ter.compat import redact
    from airflow_provider_m3ter.triggers.jobs import M3terJobTrigger

    emu = secret_emulator
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_TRIGGER_SCAN", emu.connection_json())
    basic = base64.b64encode(f"{emu.access_key_id}:{emu.api_secret}".encode()).decode()
    assert redact(f"x {emu.api_secret} y") == f"x {emu.api_secret} y"  # nobody registered it yet
    trigger = M3terJobTrigger(
        job_kind="billjob",
        job_id="00000000-0000-4000-8000-0000000000aa",
        deadline=__import__("time").time() + 20,
        m3ter_conn_id="m3ter_trigger_scan",
        poll_interval=0.05,
    )

    async def first_event() -> Any:
        return await anext(trigger.run())

    event = asyncio.run(first_event()).payload
    assert event["status"] == "error"  # the job does not exist: 404
    for value in (emu.api_secret, basic, *emu.secrets()["access_tokens"]):
        assert redact(f"x {value} y") == "x *** y"
    _scan(emu, {"event": json.dumps(event)})


class _EchoServer:
    """Answers every request with ``status`` and an HTML page that echoes its Authorization header
    after 250 characters of filler (a proxy's or WAF's debug page), so a cut at 300 characters
    would fall inside the credential."""

    def __init__(self, status: int) -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _echo(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = ("x" * 250 + " Authorization: " + (self.headers.get("Authorization") or "")).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _echo

            def log_message(self, *args: Any) -> None:
                pass

        self.status = status
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_error_page_echoing_the_credentials_is_redacted_before_it_is_cut() -> None:
    secret = f"Echo-Secret-{uuid.uuid4().hex}"
    basic = base64.b64encode(f"key-echo:{secret}".encode()).decode()
    server = _EchoServer(400)
    try:
        settings = ClientSettings(
            org_id=str(uuid.uuid4()),
            access_key_id="key-echo",
            api_secret=secret,
            config_url=server.url,
            ingest_url=server.url,
            **NO_PACING,
        )
        with capture_debug() as logs, M3terClient(settings) as client:
            with pytest.raises(M3terError) as info:
                client.request("GET", "meters")  # the token request's 400 echoes the Basic header
        text = _error_texts(info.value) + logs.getvalue()
        assert "Authorization: Basic ***" in text  # the echo is there, redacted
        # no piece of the Basic credential long enough to mean anything
        for start in range(0, len(basic) - 8):
            assert basic[start : start + 8] not in text, basic[start : start + 8]
    finally:
        server.close()


def test_signed_url_pieces_cover_every_form_the_http_stack_shows() -> None:
    from airflow_provider_m3ter.client.redaction import signed_url_pieces

    url = (
        "https://bucket.s3.amazonaws.com/key?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAEXAMPLEKEYID1234%2F20240501%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=AAAAsig%7EBBBBsig%2BCCCCsig%3D"
    )
    pieces = signed_url_pieces(url)
    import requests

    # as requests sends it (unreserved escapes decoded) and so as urllib3 logs the request line
    sent = requests.Request("PUT", url).prepare().url
    assert "AAAAsig~BBBBsig%2BCCCCsig%3D" in sent
    assert "AAAAsig~BBBBsig%2BCCCCsig%3D" in pieces
    assert urlsplit_path_query(sent) in pieces
    # the access key id of the credential scope, which storage error bodies show on its own
    assert "AKIAEXAMPLEKEYID1234" in pieces


def urlsplit_path_query(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"
