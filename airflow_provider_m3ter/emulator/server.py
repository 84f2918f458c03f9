"""Runs both listeners in one process and event loop, announces them, saves snapshots on exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from airflow_provider_m3ter.emulator.api_admin import save_snapshot
from airflow_provider_m3ter.emulator.app import create_apps
from airflow_provider_m3ter.emulator.connections import DroppableHttpProtocol
from airflow_provider_m3ter.emulator.options import EmulatorOptions
from airflow_provider_m3ter.emulator.state import EmulatorState

log = logging.getLogger("airflow_provider_m3ter.emulator")
TICK_SECONDS = 0.05


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve` (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Install nothing: :func:`serve` stops both servers together."""
        yield


class _HideUploadTokens(logging.Filter):
    """Show ``/_upload/<token>`` as ``/_upload/***`` in access lines: the token grants the upload."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[2] if isinstance(args, tuple) and len(args) >= 3 else None
        if isinstance(path, str) and "_upload" in path and isinstance(args, tuple):
            # anywhere in the path, however it is spelt (a misrouted '//_upload/<token>' too)
            record.args = (*args[:2], re.sub(r"_upload.*", "_upload/***", path, flags=re.S), *args[3:])
        return True


def enable_access_log() -> None:
    """Print one line per request on stderr (uvicorn's access logger, which ``log_level`` silences)."""
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    access.propagate = True
    if not any(isinstance(f, _HideUploadTokens) for f in access.filters):
        access.addFilter(_HideUploadTokens())


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one).

    :param host: the interface.
    :param port: the port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL of a listening socket.

    :param sock: the bound socket.
    """
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(options: EmulatorOptions, state: EmulatorState) -> None:
    """Serve both listeners until SIGINT/SIGTERM, ticking jobs and validations meanwhile.

    :param options: the start-up options.
    :param state: the shared state.
    """
    config_app, ingest_app = create_apps(state)
    config_sock = bind(options.host, options.port)
    ingest_sock = bind(options.host, options.ingest_port)
    servers = []
    for app in (config_app, ingest_app):
        config = uvicorn.Config(
            app,
            http=DroppableHttpProtocol,
            lifespan="off",
            log_level="warning",
            # no dictConfig of uvicorn's own: its access handler writes to stdout, which carries
            # only the ready line; records go to the root handler on stderr instead
            log_config=None,
            access_log=options.access_log,
            timeout_keep_alive=30,
        )
        servers.append(_Server(config))
    if options.access_log:
        enable_access_log()

    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not available on Windows
            loop.add_signal_handler(sig, stop)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                state.tick()
            except Exception:  # a bug in one tick must not stop the emulator
                log.exception("emulator tick failed")

    async def announce() -> None:
        while not all(server.started for server in servers):
            if any(server.should_exit for server in servers):
                return
            await asyncio.sleep(0.01)
        line = {
            "config_url": url_of(config_sock),
            "ingest_url": url_of(ingest_sock),
            "org_id": options.org_id,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(
            servers[0].serve(sockets=[config_sock]),
            servers[1].serve(sockets=[ingest_sock]),
            announce(),
        )
    finally:
        tick_task.cancel()


def run(options: EmulatorOptions) -> int:
    """Start the emulator and block until it is stopped; returns the exit code.

    :param options: the start-up options.
    """
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    state = EmulatorState(options)
    snapshot = Path(options.snapshot) if options.snapshot else None
    if snapshot is not None and snapshot.exists():
        data: dict[str, Any] = json.loads(snapshot.read_text(encoding="utf-8"))
        state.load(data)
    try:
        import uvloop

        runner_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - depends on the environment
        runner_factory = None
    if runner_factory is not None and hasattr(asyncio, "Runner"):
        with asyncio.Runner(loop_factory=runner_factory) as runner:
            runner.run(serve(options, state))
    else:
        asyncio.run(serve(options, state))
    if snapshot is not None:
        save_snapshot(state.dump(), snapshot)
    return 0
