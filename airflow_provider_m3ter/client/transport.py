"""Transport: how one call to m3ter travels: URL, token, pacing, retries, and the answer parsed.

One :class:`Transport` per client owns the HTTP session (pooled, no urllib3-level retries), the
access token and one rate limiter per API, and applies the retry rules of ``retry.py`` to every
send. Constructing it does no I/O.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests
from requests.utils import get_environ_proxies

from airflow_provider_m3ter import __version__
from airflow_provider_m3ter.client.auth import (
    BasicAuth,
    BearerAuth,
    TokenProvider,
    TokenStore,
    read_token_response,
)
from airflow_provider_m3ter.client.deadline import WATCHDOG, WatchedAdapter, time_left, time_limit
from airflow_provider_m3ter.client.errors import (
    M3terFinalError,
    M3terPayloadTooLargeError,
    M3terTransientError,
    error_for_status,
)
from airflow_provider_m3ter.client.pacing import RateLimiter
from airflow_provider_m3ter.client.paths import check_relative_path
from airflow_provider_m3ter.client.redaction import proxy_credential_pieces, redact, register
from airflow_provider_m3ter.client.retry import (
    NETWORK_ERRORS,
    CallState,
    call_with_rules,
    network_error_retryable,
    parse_retry_after,
)
from airflow_provider_m3ter.client.settings import ClientSettings
from airflow_provider_m3ter.client.stats import ClientStats

__all__: list[str] = []  # internal: M3terClient is the public face

log = logging.getLogger("airflow_provider_m3ter.client")

USER_AGENT = f"airflow-provider-m3ter/{__version__}"
Api = Literal["config", "ingest"]


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity are refused because JSON cannot carry them.

    :param value: a JSON-serializable value.
    """
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _error_message(response: requests.Response) -> str:
    """m3ter's ``message`` from an error body, else a short excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        text, limit = body["message"], 1000
    else:
        text, limit = (response.text or "").strip(), 300
    # redact before cutting: a secret cut in two would match nothing registered (a proxy's error
    # page that echoes the request's Authorization header, say)
    text = redact(text)
    return text[:limit] + ("..." if len(text) > limit else "")


class Transport:
    """Sends calls for one :class:`~airflow_provider_m3ter.client.M3terClient` (see its parameters)."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        session: requests.Session | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        on_secret: Callable[[str], None] | None,
        rng: random.Random | None,
        token_store: TokenStore | None = None,
    ) -> None:
        self.settings = settings
        self._deadline_text = f"the {settings.deadline:g} s deadline"
        self.stats = ClientStats()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._session = session
        self._owns_session = session is None
        self._session_lock = threading.Lock()
        self._proxies: dict[str, dict[str, str]] = {}
        slot = (
            token_store.slot(self.url("/oauth/token"), settings.access_key_id, settings.api_secret, clock)
            if token_store is not None
            else None
        )
        self._tokens = TokenProvider(
            self._fetch_token,
            clock=clock,
            refresh_margin=settings.token_refresh_margin,
            on_secret=on_secret,
            slot=slot,
        )
        self.limiters: dict[str, RateLimiter | None] = {
            api: RateLimiter.from_limits(
                getattr(settings, f"{api}_requests_per_second"),
                getattr(settings, f"{api}_requests_per_window"),
                settings.window_seconds,
                clock=clock,
                sleep=sleep,
            )
            for api in ("config", "ingest")
        }

    def close(self) -> None:
        """Close the connection pool if it was created here."""
        with self._session_lock:
            if self._session is not None and self._owns_session:
                self._session.close()
                self._session = None

    @property
    def session(self) -> requests.Session:
        """The HTTP session, created on first use."""
        session = self._session
        if session is not None:
            return session
        with self._session_lock:
            if self._session is None:
                session = requests.Session()
                # the watched adapter lets the watchdog end an attempt at the call's deadline
                adapter = WatchedAdapter(
                    pool_connections=self.settings.pool_size,
                    pool_maxsize=self.settings.pool_size,
                    max_retries=0,
                )
                session.mount("https://", adapter)
                session.mount("http://", adapter)
                # Read proxy and CA-bundle settings from the environment once, not on every request
                # (requests' per-request lookup costs more CPU than the rest of the client).
                session.trust_env = False
                self._proxies = {api: get_environ_proxies(self.url("/", api)) for api in ("config", "ingest")}
                # a proxy's credentials are secrets too (its error page may echo them)
                for proxies in self._proxies.values():
                    for proxy_url in proxies.values():
                        register(*proxy_credential_pieces(proxy_url))
                verify = self.settings.verify_tls
                if verify is True:
                    verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
                session.verify = verify
                self._session = session
            return self._session

    def url(self, path: str, api: Api = "config") -> str:
        """The absolute URL of ``path``: relative to ``/organizations/{orgId}/`` unless it starts with ``/``.

        :param path: e.g. ``meters/<id>`` or ``/oauth/token``.
        :param api: ``"config"`` or ``"ingest"``: which base URL to use.
        """
        if api == "config":
            base = self.settings.config_url
        elif api == "ingest":
            base = self.settings.ingest_url
        else:
            raise ValueError(f"api must be 'config' or 'ingest', got {api!r}")
        check_relative_path(path)
        if path.startswith("/"):
            return base + path
        return f"{base}/organizations/{quote(self.settings.org_id, safe='')}/{path}"

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        api: Api = "config",
        data: bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        oversize_403: bool = False,
    ) -> Any:
        """Send one logical call and return its parsed JSON (see ``M3terClient.request``).

        :param method: HTTP method.
        :param path: relative to ``/organizations/{orgId}/`` unless it starts with ``/``.
        :param params: query parameters.
        :param json: a JSON-serializable body, encoded once.
        :param api: ``"config"`` or ``"ingest"``.
        :param data: a pre-encoded body or form fields.
        :param headers: extra request headers.
        :param oversize_403: a 403 means the body was too large (m3ter's Ingest answer to that; the
            caller decides it with ``core.ingest_403_means_too_large``): it raises
            ``M3terPayloadTooLargeError`` and never costs a token refresh.
        """
        if json is not None and data is not None:
            raise ValueError("request(): pass either json or data, not both")
        method = method.upper()
        url = self.url(path, api)
        send_headers = dict(headers or {})
        body = data
        if json is not None:
            body = encode_json(json)
        if isinstance(body, bytes) and not any(k.lower() == "content-type" for k in send_headers):
            send_headers["Content-Type"] = "application/json"
        self.stats.add(requests=1)
        call = self._new_call(method, url, refresh_on_403=not oversize_403)
        response = self._send(
            call, api, method, url, params=params, data=body, headers=send_headers, authenticated=True
        )
        if oversize_403 and response.status_code == 403:
            raise M3terPayloadTooLargeError(
                403, method, call.path, _error_message(response), call.attempts, call.retry_after
            )
        return self._parse(call, response)

    def _new_call(
        self, method: str, url: str, *, authenticated: bool = True, refresh_on_403: bool = True
    ) -> CallState:
        budget = self.settings.deadline
        limit = self._deadline_text
        enclosing = time_left()  # an enclosing wait's budget (sensor, trigger, upload wait) bounds the call
        if enclosing is not None and enclosing[0] < budget:
            budget = max(0.0, enclosing[0])
            limit = enclosing[1]
        return CallState(
            method=method,
            path=urlsplit(url).path,
            deadline_at=self._clock() + budget,
            max_attempts=self.settings.max_attempts,
            authenticated=authenticated,
            refresh_on_403=refresh_on_403,
            token_serial_at_start=self._tokens.serial,
            limit=limit,
        )

    def _send(
        self,
        call: CallState,
        api: str,
        method: str,
        url: str,
        *,
        authenticated: bool,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with the retry rules; return the last response or raise for a lasting network failure."""
        try:
            return call_with_rules(
                call,
                lambda: self._attempt(call, api, method, url, authenticated=authenticated, **kwargs),
                max_wait=self.settings.max_wait,
                sleep=self._sleep,
                clock=self._clock,
                rng=self._rng,
                stats=self.stats,
                on_token_rejected=self._tokens.invalidate,
            )
        except NETWORK_ERRORS as exc:
            # A certificate problem is configuration, not bad luck: no retry, a final error.
            cls = M3terTransientError if network_error_retryable(exc) else M3terFinalError
            detail = str(exc)
            detail = detail if len(detail) <= 400 else detail[:400] + "..."
            raise cls(
                None,
                method,
                call.path,
                f"{type(exc).__name__}: {detail}",
                call.attempts,
                note=call.stop_reason,
            ) from exc

    def _attempt(
        self,
        call: CallState,
        api: str,
        method: str,
        url: str,
        *,
        authenticated: bool,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: requests.auth.AuthBase | None = None,
    ) -> requests.Response:
        """One HTTP send: token, pacing, then the request itself, all within the call's deadline."""
        if authenticated:
            token = self._tokens.cached()
            if token is None:
                # a token fetched for this call shares its deadline
                with time_limit(call.deadline_at - self._clock(), call.limit):
                    try:
                        token = self._tokens.get_token()
                    except requests.exceptions.Timeout:
                        call.stop_reason = f"{call.limit} passed while waiting for an access token"
                        raise
            call.token = token.value
            call.token_fresh = token.serial > call.token_serial_at_start
            auth = BearerAuth(call.token)
        limiter = self.limiters[api]
        if limiter is not None:
            # the pace's wait counts against the call's deadline like any other wait
            paced = limiter.acquire(within=call.deadline_at - self._clock())
            if paced is None:
                call.stop_reason = f"{call.limit} would pass while waiting for the client's pacing"
                raise requests.exceptions.Timeout("no time left to wait for the next send slot")
            self.stats.add(paced=paced)
        call.attempts += 1
        self.stats.add(attempts=1)
        left = call.deadline_at - self._clock()
        if left <= 0:
            call.stop_reason = f"{call.limit} passed before the attempt could start"
            raise requests.exceptions.Timeout("no time left for another attempt")
        # each connect and read waits at most the time left; the watchdog ends the whole attempt then
        timeout = min(self.settings.timeout, left)
        started = time.perf_counter()
        try:
            with WATCHDOG.watch(left) as watched:
                try:
                    response = self.session.request(
                        method,
                        url,
                        params=params,
                        data=data,
                        headers={"User-Agent": USER_AGENT, **(headers or {})},
                        auth=auth,
                        timeout=timeout,
                        allow_redirects=False,
                        proxies=self._proxies.get(api),
                    )
                except requests.RequestException:
                    if watched.fired:  # cut off at the deadline: whatever broke, it is a timeout
                        call.stop_reason = f"{call.limit} passed while waiting for m3ter's answer"
                        raise requests.exceptions.Timeout("no complete answer in time") from None
                    raise
                if watched.fired:
                    # Cut off mid-headers, the HTTP library may take what arrived as a whole answer
                    # (a 200 with no body): an answer the watchdog cut is never a success.
                    call.stop_reason = f"{call.limit} passed while waiting for m3ter's answer"
                    raise requests.exceptions.Timeout("no complete answer in time")
        except NETWORK_ERRORS as exc:
            log.debug("%s %s attempt %d: %s", method, call.path, call.attempts, type(exc).__name__)
            raise
        status = response.status_code
        if status == 429:
            self.stats.add(throttled=1)
        call.retry_after = parse_retry_after(
            response.headers.get("Retry-After"), date_header=response.headers.get("Date")
        )
        log.debug(
            "%s %s attempt %d -> %d (%.0f ms)",
            method,
            call.path,
            call.attempts,
            status,
            (time.perf_counter() - started) * 1000,
        )
        return response

    def _parse(self, call: CallState, response: requests.Response) -> Any:
        """Parsed JSON of a 2XX response, else the matching error."""
        status = response.status_code
        if 200 <= status < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise M3terTransientError(
                    status, call.method, call.path, "the response body is not JSON", call.attempts
                ) from None
        raise error_for_status(
            status,
            call.method,
            call.path,
            _error_message(response),
            call.attempts,
            call.retry_after,
            note=call.stop_reason,
        )

    def _fetch_token(self) -> tuple[str, float]:
        """``POST {config_url}/oauth/token`` with Basic auth; follows the transient retry rules."""
        url = self.url("/oauth/token")
        call = self._new_call("POST", url, authenticated=False)
        response = self._send(
            call,
            "config",
            "POST",
            url,
            authenticated=False,
            data={"grant_type": "client_credentials"},
            auth=BasicAuth(self.settings.access_key_id, self.settings.api_secret),
        )
        token, expires_in = read_token_response(self._parse(call, response), call.path)
        self.stats.add(token_fetches=1)
        return token, expires_in
