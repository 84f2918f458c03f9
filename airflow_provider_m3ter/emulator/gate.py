"""The ASGI layer in front of each listener: admin bypass, latency, faults, rate limits, auth, stats."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import compile_path

from airflow_provider_m3ter.emulator.connections import drop_connection
from airflow_provider_m3ter.emulator.faults import ERROR_MESSAGES
from airflow_provider_m3ter.emulator.state import EmulatorState

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMIN_PREFIX = "/_emulator/"
UPLOAD_PREFIX = "/_upload/"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret
ORG_PREFIX = "/organizations/"


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """Send a complete JSON response straight through ASGI.

    :param send: the ASGI send callable.
    :param status: the HTTP status.
    :param body: the JSON body.
    :param headers: extra headers.
    """
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class Gate:
    """Wraps one listener's FastAPI app with m3ter's cross-cutting behaviour.

    The route table (which method and path template serves a request: the key of auth, faults,
    limits and stats) is built from the routers the app includes, through their public ``routes``
    and each route's ``path`` and ``methods``. It is never read back from the app: how an app keeps
    included routers is FastAPI's internal business (FastAPI 0.165 keeps them as lazy wrappers
    without paths), and an empty table would silently switch every check off.

    :param app: the FastAPI app of the listener.
    :param state: the shared emulator state.
    :param api: ``config`` or ``ingest``: which rate limits and fault target apply.
    :param routers: the routers included in ``app``, in inclusion order (the first match wins, as in
        the app).
    :raises ValueError: when the routers declare no route.
    """

    def __init__(self, app: Any, state: EmulatorState, api: str, routers: Sequence[APIRouter]) -> None:
        self.app = app
        self.state = state
        self.api = api
        self.routes: list[tuple[re.Pattern[str], frozenset[str], str]] = [
            (compile_path(route.path)[0], frozenset(route.methods or ()), route.path)
            for router in routers
            for route in router.routes
            if isinstance(route, APIRoute)
        ]
        if not self.routes:
            raise ValueError(f"emulator {api} listener: the routers declare no route to gate")

    def route_of(self, method: str, path: str) -> str | None:
        """The route template serving ``method path``, or None when nothing does.

        :param method: the HTTP method.
        :param path: the request path.
        """
        for regex, methods, template in self.routes:
            if method in methods and regex.match(path):
                return template
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call.

        :param scope: the ASGI scope.
        :param receive: the ASGI receive callable.
        :param send: the ASGI send callable.
        """
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        state = self.state
        method, path = scope["method"], scope["path"]
        template = self.route_of(method, path)
        if template is None:
            # Unknown routes answer 404 before auth, so the Config listener 404s ingest POSTs.
            await self.app(scope, receive, send)
            return
        key = f"{method} {template}"
        target = "token" if path == TOKEN_PATH else self.api
        plan = state.faults
        fault = None
        if plan.matches(target, path):
            if plan.latency_ms > 0:
                await asyncio.sleep(plan.latency_ms / 1000.0)
            if method == "GET" and plan.too_large(_query(scope).get("pageSize")):
                state.stats.faults_injected["413"] += 1
                state.stats.count_request(key, "413")
                await send_json(send, 413, {"message": "Response too large: request a smaller page"})
                return
            fault = plan.draw()
        if fault is not None and fault != "drop_after":
            state.stats.faults_injected[fault] += 1
            if fault == "drop":
                state.stats.count_request(key, "drop")
                await drop_connection(scope)
                return
            state.stats.count_request(key, fault)
            headers = {"Retry-After": plan.retry_after} if fault == "429" and plan.retry_after else None
            await send_json(send, int(fault), {"message": ERROR_MESSAGES[fault]}, headers)
            return
        refusal = self.refuse(scope, target, path)
        if refusal is not None:
            status, message = refusal
            state.stats.count_request(key, str(status))
            await send_json(send, status, {"message": message})
            return
        if fault == "drop_after":
            await self.run_then_drop(scope, receive, key)
            return
        status_holder: list[int] = []

        async def counting_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            state.stats.count_request(key, str(status_holder[0]) if status_holder else "500")

    def refuse(self, scope: Scope, target: str, path: str) -> tuple[int, str] | None:
        """Rate limits then bearer auth; the (status, message) refusing the request, or None.

        :param scope: the ASGI scope.
        :param target: ``token``, ``config`` or ``ingest``.
        :param path: the request path.
        """
        if target == "token" or path.startswith(UPLOAD_PREFIX):
            return None  # the token endpoint and upload URLs are neither limited nor bearer-authenticated
        state = self.state
        client = scope.get("client")
        broken = state.limits.check(self.api, client[0] if client else "unknown", time.monotonic())
        if broken is not None:
            state.stats.rate_limited[broken] += 1
            return 429, "Too Many Requests: rate limit exceeded"
        token = _bearer(scope)
        if token is None:
            return 403, "Forbidden: a bearer token is required"
        org = state.token_org(token)
        if org is None:
            return 403, "Forbidden: the token is invalid or has expired"
        if path.startswith(ORG_PREFIX):
            path_org = path[len(ORG_PREFIX) :].split("/", 1)[0]
            if path_org != org:
                return 403, "Forbidden: the token does not grant access to this organization"
        return None

    async def run_then_drop(self, scope: Scope, receive: Receive, key: str) -> None:
        """Process the request fully (side effects kept), then drop the connection unanswered.

        :param scope: the ASGI scope.
        :param receive: the ASGI receive callable.
        :param key: the stats key of the route.
        """

        async def swallow(message: MutableMapping[str, Any]) -> None:
            return None

        await self.app(scope, receive, swallow)
        self.state.stats.faults_injected["drop_after"] += 1
        self.state.stats.count_request(key, "drop_after")
        await drop_connection(scope)


def _query(scope: Scope) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return {key: values[-1] for key, values in parsed.items()}


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
            return None
    return None
