"""An HTTP protocol that lets the emulator drop a connection without answering.

uvicorn hides the TCP transport from the ASGI app, so this subclass of uvicorn's protocol records
each live connection by its (server port, client address); the gate looks it up from the request
scope and aborts the transport, and the client sees a connection error with no HTTP response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableMapping
from typing import Any

try:  # httptools is the faster parser; h11 is uvicorn's pure-Python fallback
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # pragma: no cover - depends on the environment
    from uvicorn.protocols.http.h11_impl import H11Protocol as _BaseProtocol  # type: ignore[assignment]

ConnectionKey = tuple[Any, Any, Any]
_live: dict[ConnectionKey, DroppableHttpProtocol] = {}


class DroppableHttpProtocol(_BaseProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, plus a registry entry per connection so it can be aborted."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Register the connection.

        :param transport: the new connection's transport.
        """
        super().connection_made(transport)
        self.lost = asyncio.Event()
        self.key: ConnectionKey = _key(self.server, self.client)
        _live[self.key] = self

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister the connection.

        :param exc: the error that closed it, if any.
        """
        _live.pop(getattr(self, "key", None), None)  # type: ignore[arg-type]
        lost = getattr(self, "lost", None)
        if lost is not None:
            lost.set()
        super().connection_lost(exc)


def _key(server: Any, client: Any) -> ConnectionKey:
    port = server[1] if server else None
    return (port, client[0] if client else None, client[1] if client else None)


async def drop_connection(scope: MutableMapping[str, Any]) -> bool:
    """Abort the TCP connection a request arrived on; True when it was found and closed.

    :param scope: the ASGI scope of the request.
    """
    protocol = _live.get(_key(scope.get("server"), scope.get("client")))
    if protocol is None:
        return False
    protocol.transport.abort()
    # Wait for uvicorn to notice, so it does not try to write a 500 on a dead connection.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(protocol.lost.wait(), timeout=2.0)
    return True
