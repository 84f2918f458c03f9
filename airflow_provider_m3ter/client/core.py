"""M3terClient: one object to call m3ter's Config and Ingest APIs correctly.

``request()`` is the general call; ``paginate()``, the look-ups and ``submit_measurements()`` are
built on it. How a call travels (token, pacing, retries) lives in ``transport.py``. Constructing a
client does no I/O.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import requests

from airflow_provider_m3ter.client.auth import TokenStore
from airflow_provider_m3ter.client.errors import M3terPayloadTooLargeError
from airflow_provider_m3ter.client.settings import ClientSettings
from airflow_provider_m3ter.client.stats import ClientStats
from airflow_provider_m3ter.client.transport import USER_AGENT, Api, Transport, encode_json

__all__ = ["USER_AGENT", "M3terClient"]

log = logging.getLogger("airflow_provider_m3ter.client")

# Ingest answers an over-size body (512,000 bytes or more) with 403, not 413.
_INGEST_MAX_BYTES = 512_000
# Most codes a list filter takes per call (the list pageSize limit).
_CODES_PER_CALL = 100


def ingest_403_means_too_large(body: bytes) -> bool:
    """m3ter's rule, kept here only: the Ingest API answers a body of 512,000 bytes or more with 403
    (not 413), so a 403 for such a body means "too large", not "token expired".

    :param body: the encoded request body.
    """
    return len(body) >= _INGEST_MAX_BYTES


class M3terClient:
    """A thread-safe client for one m3ter organization.

    ``request()`` is the general call; ``paginate()``, the look-ups and ``submit_measurements()``
    build on it. All of them share one token, one connection pool and the retry rules of
    :mod:`airflow_provider_m3ter.client.retry`. Use it as a context manager or call :meth:`close`.

    :param settings: where and how to connect (see :class:`ClientSettings`).
    :param session: a ``requests.Session`` to use as is; by default one with a pool of
        ``settings.pool_size`` connections per host and no urllib3 retries is created on first use.
    :param sleep: how to wait between attempts and for pacing (inject a fake in tests).
    :param clock: monotonic clock in seconds, for deadlines, token expiry and pacing.
    :param on_secret: called with every new access token, e.g. to register it with a log masker.
    :param rng: random source of the back-off jitter (seeded in tests for exact waits).
    :param token_store: share tokens with the other clients of this store (the hook passes the
        process-wide ``client.auth.PROCESS_TOKENS``: one token per credential per process); by
        default the client keeps its own.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_secret: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        token_store: TokenStore | None = None,
    ) -> None:
        self.settings = settings
        self._transport = Transport(
            settings,
            session=session,
            sleep=sleep,
            clock=clock,
            on_secret=on_secret,
            rng=rng,
            token_store=token_store,
        )
        self.stats: ClientStats = self._transport.stats

    def __repr__(self) -> str:
        return f"M3terClient(org_id={self.settings.org_id!r}, config_url={self.settings.config_url!r})"

    def __enter__(self) -> M3terClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool if this client created it."""
        self._transport.close()

    @property
    def session(self) -> requests.Session:
        """The HTTP session (created on first use)."""
        return self._transport.session

    def url(self, path: str, api: Api = "config") -> str:
        """The absolute URL of ``path``: relative to ``/organizations/{orgId}/`` unless it starts with ``/``.

        :param path: e.g. ``meters/<id>`` or ``/oauth/token``.
        :param api: ``"config"`` or ``"ingest"``: which base URL to use.
        """
        return self._transport.url(path, api)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        api: Api = "config",
        data: bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call m3ter and return the parsed JSON response (``None`` for an empty body).

        Transient failures are retried per the retry rules; anything else raises at once.

        :param method: HTTP method, e.g. ``"GET"``.
        :param path: relative to ``/organizations/{orgId}/`` unless it starts with ``/``.
        :param params: query parameters (m3ter's list filters take comma-separated values).
        :param json: a JSON-serializable body, encoded once for all attempts.
        :param api: ``"config"`` (default) or ``"ingest"``.
        :param data: a pre-encoded body (bytes are sent as JSON) or form fields; not with ``json``.
        :param headers: extra request headers (``Authorization`` is always set by the client).
        :raises M3terFinalError: a 4XX that retrying cannot fix.
        :raises M3terTransientError: 5XX, 429 or network failures outlasted the retries.
        :raises M3terPayloadTooLargeError: 413; send less.
        """
        return self._transport.call(
            method, path, params=params, json=json, api=api, data=data, headers=headers
        )

    # -- pages and look-ups ---------------------------------------------------------------------------

    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a list endpoint, following ``nextToken`` page by page.

        A 413 halves ``pageSize`` (down to 1) and fetches the same page again; later pages keep
        the smaller size.

        :param path: the list path, e.g. ``meters`` (relative to the organization).
        :param params: filters, e.g. ``{"codes": "a,b"}``.
        :param page_size: items per page to ask for.
        """
        if page_size < 1:
            raise ValueError(f"paginate(): page_size must be at least 1, got {page_size}")
        size = page_size  # shrinks on 413 and stays small for later pages
        next_token: str | None = None
        while True:
            page, size = self._page(path, params, next_token, size)
            items = page.get("data") if isinstance(page, dict) else None
            yield from items or []
            next_token = page.get("nextToken") if isinstance(page, dict) else None
            if not next_token:
                return

    def _page(
        self, path: str, params: Mapping[str, Any] | None, token: str | None, size: int
    ) -> tuple[Any, int]:
        """Fetch one page and the page size that worked, halving it on each 413 down to 1.

        :raises M3terPayloadTooLargeError: even a page of one item is too large.
        """
        while True:
            query = {**(params or {}), "pageSize": size}
            if token:
                query["nextToken"] = token
            try:
                return self.request("GET", path, params=query), size
            except M3terPayloadTooLargeError:
                if size <= 1:
                    raise
                size = max(1, size // 2)
                log.warning("m3ter returned 413 for a page of %s; asking for %d items per page", path, size)

    def find_meters_by_codes(self, codes: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Meters by code for the given codes; one list call per 100 codes. Missing codes are absent.

        :param codes: Meter codes (duplicates are looked up once).
        """
        return self._find_by_codes("meters", codes)

    def find_accounts_by_codes(self, codes: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Accounts by code for the given codes; one list call per 100 codes. Missing codes are absent.

        :param codes: Account codes (duplicates are looked up once).
        """
        return self._find_by_codes("accounts", codes)

    def find_meter_by_code(self, code: str) -> dict[str, Any] | None:
        """The Meter with this code, or ``None``.

        :param code: a Meter code.
        """
        return self._find_by_codes("meters", [code]).get(code)

    def find_account_by_code(self, code: str) -> dict[str, Any] | None:
        """The Account with this code, or ``None``.

        :param code: an Account code.
        """
        return self._find_by_codes("accounts", [code]).get(code)

    def _find_by_codes(self, path: str, codes: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted: dict[str, None] = {}
        for index, code in enumerate(codes):
            if not isinstance(code, str) or not code.strip():
                raise ValueError(f"{path} look-up: code #{index} must be a non-empty string, got {code!r}")
            wanted[code] = None
        # The filter is sent as repeated parameters (the spec's form/explode style); a code with a comma
        # is found by one scan of the whole list instead, whether or not a server splits on commas.
        plain = [code for code in wanted if "," not in code]
        odd = {code for code in wanted if "," in code}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(plain), _CODES_PER_CALL):
            chunk = plain[start : start + _CODES_PER_CALL]
            params = {"codes": chunk}
            items = self.paginate(path, params=params, page_size=_CODES_PER_CALL)
            found.update(self._pick(items, set(chunk)))
        if odd:
            found.update(self._pick(self.paginate(path, page_size=_CODES_PER_CALL), odd))
        return found

    @staticmethod
    def _pick(items: Iterable[dict[str, Any]], codes: set[str]) -> dict[str, dict[str, Any]]:
        """The items whose ``code`` is one of ``codes`` (the server's filter is not trusted blindly)."""
        return {item["code"]: item for item in items if item.get("code") in codes}

    # -- ingest ---------------------------------------------------------------------------------------

    def submit_measurements(self, body: bytes | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """``POST /organizations/{orgId}/measurements`` on the Ingest API; returns m3ter's answer.

        A 403 for a body of 512,000 bytes or more is m3ter's over-size answer: it raises
        :class:`M3terPayloadTooLargeError` without a token refresh.

        :param body: pre-encoded ``{"measurements": [...]}`` bytes, or a list of measurement dicts.
        """
        data = (
            bytes(body)
            if isinstance(body, (bytes, bytearray, memoryview))
            else encode_json({"measurements": list(body)})
        )
        result = self._transport.call(
            "POST", "measurements", data=data, api="ingest", oversize_403=ingest_403_means_too_large(data)
        )
        return result if isinstance(result, dict) else {}
