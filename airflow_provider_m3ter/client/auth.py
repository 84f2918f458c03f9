"""OAuth client-credentials tokens: fetched lazily, cached, refreshed early, shared across threads.

m3ter issues a bearer token for ``accessKeyId:apiSecret`` (HTTP Basic) at ``POST /oauth/token``;
it lives 18,000 s and there is no refresh token, so a new one is simply requested. An expired token
is answered with 403, which is why :meth:`TokenProvider.invalidate` exists.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from airflow_provider_m3ter.client.deadline import time_left
from airflow_provider_m3ter.client.errors import M3terConfigurationError, M3terError
from airflow_provider_m3ter.client.redaction import register as register_secret

__all__ = [
    "PROCESS_TOKENS",
    "AccessToken",
    "BasicAuth",
    "BearerAuth",
    "TokenProvider",
    "TokenSlot",
    "TokenStore",
    "basic_authorization",
    "basic_credentials",
    "credential_problem",
    "read_token_response",
]

log = logging.getLogger("airflow_provider_m3ter.client")

# m3ter's documented token lifetime, used when a response leaves out ``expires_in``.
DEFAULT_TOKEN_LIFETIME = 18_000.0


# RFC 6750 b64token: what a bearer token may hold, so it can travel in a header as is.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def credential_problem(value: str, *, user_id: bool = False) -> str | None:
    """Why ``value`` cannot be sent as an RFC 7617 Basic credential, in words without the value.

    :param value: an Access Key ID (``user_id=True``) or an API Secret.
    :param user_id: the value is the user-id part, which must not contain ``:``.
    """
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "must not contain control characters"
    if user_id and ":" in value:
        return "must not contain ':' (HTTP Basic separates the id from the secret with it)"
    if not _encodes_as_utf8(value):
        return "is not valid Unicode text (it cannot be encoded as UTF-8)"
    return None


def _encodes_as_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # no exception may carry the value: answer with a flag, raise (if at all) outside this block
        return False
    return True


def basic_authorization(access_key_id: str, api_secret: str) -> str:
    """The ``Authorization`` value for m3ter's token request: ``Basic base64(utf8(id ":" secret))``.

    RFC 7617 with ``charset="UTF-8"`` (``requests`` would encode as Latin-1, failing on ``€`` and
    sending ``é`` as a byte m3ter does not read as ``é``).

    :param access_key_id: the Service User's Access Key ID.
    :param api_secret: its API Secret.
    :raises M3terConfigurationError: either cannot be sent (names the field, never the value).
    """
    for name, value, user_id in (("access_key_id", access_key_id, True), ("api_secret", api_secret, False)):
        problem = credential_problem(value, user_id=user_id)
        if problem:
            raise M3terConfigurationError(f"ClientSettings.{name} {problem}", field=name)
    return "Basic " + basic_credentials(access_key_id, api_secret)


def basic_credentials(access_key_id: str, api_secret: str) -> str:
    """The base64 part of the Basic header (a secret as much as the API Secret itself).

    :param access_key_id: the Access Key ID (already checked).
    :param api_secret: the API Secret (already checked).
    """
    return base64.b64encode(f"{access_key_id}:{api_secret}".encode()).decode("ascii")


class BasicAuth(requests.auth.AuthBase):
    """``requests`` auth that sends UTF-8 HTTP Basic credentials (see :func:`basic_authorization`).

    :param access_key_id: the Access Key ID.
    :param api_secret: the API Secret; never shown by ``repr()``.
    """

    def __init__(self, access_key_id: str, api_secret: str) -> None:
        self._header = basic_authorization(access_key_id, api_secret)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "BasicAuth(<hidden>)"


def read_token_response(body: object, path: str = "/oauth/token") -> tuple[str, float]:
    """``(access_token, expires_in)`` from the body of a successful token request.

    :param body: the parsed JSON response.
    :param path: the token URL path, for the error.
    :raises M3terError: when the body has no ``access_token``.
    """
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise M3terError(200, "POST", path, "the token response has no access_token")
    if len(token) > 16_384 or not _B64TOKEN.fullmatch(token):
        # it could not travel in a header (and a raw encoding error would carry it): say so, without it
        raise M3terError(200, "POST", path, "the token response's access_token is not a valid bearer token")
    expires_in = body.get("expires_in") if isinstance(body, dict) else None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
        return token, float(expires_in)
    return token, DEFAULT_TOKEN_LIFETIME


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when (on the client's monotonic clock) it stops being used.

    :param value: the token itself; never shown by ``repr()``.
    :param fetched_at: clock time the token arrived.
    :param refresh_at: clock time from which a new token is fetched instead.
    :param serial: 1 for the provider's first token, 2 for the next ...
    """

    value: str = field(repr=False)
    fetched_at: float
    refresh_at: float
    serial: int = 0


class BearerAuth(requests.auth.AuthBase):
    """``requests`` auth that sends ``Authorization: Bearer <token>``.

    Passing auth explicitly also stops ``requests`` from replacing the header with ``~/.netrc`` data.

    :param token: the bearer token.
    """

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


class TokenSlot:
    """Where one credential's token lives: the token, its serial and the lock of its fetch.

    A :class:`TokenProvider` has a private slot unless it is given one from a :class:`TokenStore`;
    providers sharing a slot share one token (and one fetch when it must be renewed).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: AccessToken | None = None
        self.serial = 0


class TokenStore:
    """Process-wide tokens, one slot per credential: clients built one after another (a sensor's
    pokes, the triggers of one triggerer) reuse one token for its lifetime instead of fetching each.

    The key is the token URL, the Access Key ID, a digest of the API secret and the clock the token's
    expiry is measured on; the secret itself is not kept here.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[tuple[object, ...], TokenSlot] = {}

    def slot(
        self, token_url: str, access_key_id: str, api_secret: str, clock: Callable[[], float]
    ) -> TokenSlot:
        """The slot of one credential (created on first use).

        :param token_url: where the token is fetched.
        :param access_key_id: the Service User's Access Key ID.
        :param api_secret: its API Secret (only a SHA-256 digest is kept).
        :param clock: the monotonic clock the token's expiry is measured on.
        """
        digest = hashlib.sha256(api_secret.encode("utf-8", "surrogatepass")).hexdigest()
        key = (token_url, access_key_id, digest, clock)
        with self._lock:
            found = self._slots.get(key)
            if found is None:
                found = self._slots[key] = TokenSlot()
            return found

    def clear(self) -> None:
        """Forget every token (a test that starts from a fresh process state, a credential rotated)."""
        with self._lock:
            self._slots.clear()


#: the store the hook and the triggers use: one token per credential per process
PROCESS_TOKENS = TokenStore()


class TokenProvider:
    """Hands out a valid token, fetching one only when none is cached or it is close to expiry.

    Concurrent callers share one fetch (a lock plus a second check inside it).

    :param fetch: performs the token request and returns ``(access_token, expires_in_seconds)``;
        it carries its own retry rules and raises the client's errors.
    :param clock: monotonic clock in seconds.
    :param refresh_margin: refresh this many seconds before expiry; never earlier than half
        the token's lifetime, so a short-lived token is still reused.
    :param on_secret: called with every new token (e.g. to register it with a log masker).
    :param slot: a shared :class:`TokenSlot` (from :class:`TokenStore`); a private one by default.
    """

    def __init__(
        self,
        fetch: Callable[[], tuple[str, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_margin: float = 300.0,
        on_secret: Callable[[str], None] | None = None,
        slot: TokenSlot | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._margin = refresh_margin
        self._on_secret = on_secret
        self._slot = slot if slot is not None else TokenSlot()
        self._lock = self._slot.lock
        self._seen: AccessToken | None = None
        self._fetched_serial = -1

    @property
    def _token(self) -> AccessToken | None:
        return self._slot.token

    @_token.setter
    def _token(self, value: AccessToken | None) -> None:
        self._slot.token = value

    @property
    def _serial(self) -> int:
        return self._slot.serial

    @_serial.setter
    def _serial(self, value: int) -> None:
        self._slot.serial = value

    def _usable(self, token: AccessToken | None) -> bool:
        return token is not None and self._clock() < token.refresh_at

    @property
    def serial(self) -> int:
        """Serial number of the newest token fetched so far (0 before the first)."""
        return self._serial

    def get(self) -> str:
        """Return a usable token, fetching a new one first if needed (once, whatever the threads)."""
        return self.get_token().value

    def cached(self) -> AccessToken | None:
        """The cached token if it is still usable (no fetch, no lock), else ``None``."""
        token = self._token
        return token if token is not None and token is self._seen and self._usable(token) else None

    def get_token(self) -> AccessToken:
        """Like :meth:`get`, but the whole :class:`AccessToken` (its ``serial`` tells how new it is)."""
        token = self._token
        if token is None or not self._usable(token):
            # Another caller may be fetching right now (the slot is shared by every client of these
            # credentials in the process): wait for it only as long as this call's time limit allows.
            budget = time_left()
            if not self._lock.acquire(timeout=max(0.0, budget[0]) if budget is not None else -1):
                raise requests.exceptions.Timeout(
                    "no time left while another caller was fetching the access token"
                )
            try:
                token = self._token
                if token is None or not self._usable(token):
                    token = self._new_token()
                    self._token = token
            finally:
                self._lock.release()
        if token is not self._seen:
            # a token another client of the shared slot fetched: register it with this one's masker too
            if self._on_secret is not None and token.serial != self._fetched_serial:
                self._on_secret(token.value)
            self._seen = token
        return token

    def _new_token(self) -> AccessToken:
        value, expires_in = self._fetch()
        register_secret(value)
        if self._on_secret is not None:
            # Register before the token can reach any log line or exception.
            self._on_secret(value)
        now = self._clock()
        lifetime = max(0.0, float(expires_in))
        refresh_at = now + max(lifetime - self._margin, lifetime / 2)
        log.info(
            "Fetched a new m3ter access token (valid %.0f s, refreshed after %.0f s)",
            lifetime,
            refresh_at - now,
        )
        self._serial += 1
        self._fetched_serial = self._serial
        return AccessToken(value=value, fetched_at=now, refresh_at=refresh_at, serial=self._serial)

    def invalidate(self, value: str) -> bool:
        """Drop the cached token if it is still ``value``; return whether it was dropped.

        Threads that saw the same rejected token thus cause one new fetch, not one each.

        :param value: the token that m3ter rejected.
        """
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None
                return True
            return False

    @property
    def current(self) -> AccessToken | None:
        """The cached token, if any (``repr`` hides its value)."""
        return self._token
