"""ClientSettings: everything the client needs to talk to one m3ter organization, validated up front."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_provider_m3ter.client.auth import basic_credentials, credential_problem
from airflow_provider_m3ter.client.errors import M3terConfigurationError
from airflow_provider_m3ter.client.paths import uuid_segment
from airflow_provider_m3ter.client.redaction import install_log_redaction, register

__all__ = ["ClientSettings", "is_loopback_host"]

#: Largest accepted value of a setting in seconds (one day): larger ones overflow clocks and
#: timers deep in the HTTP stack, and no single call or wait in m3ter's API needs more.
MAX_SECONDS = 86_400.0
#: Largest ``max_attempts``.
MAX_ATTEMPTS = 100
#: Largest ``pool_size`` (connections kept per host; urllib3 allocates the pool up front).
MAX_POOL_SIZE = 256
#: Largest ``*_requests_per_second`` (far above any m3ter limit).
MAX_RATE = 10_000.0
#: Largest ``*_requests_per_window``.
MAX_WINDOW_REQUESTS = 10_000_000


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost``, 127.0.0.0/8 or ``::1``.

    :param host: a URL host name or IP literal (IPv6 without brackets).
    """
    name = host.strip().rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClientSettings:
    """Connection details, retry budget and pacing of an :class:`~airflow_provider_m3ter.client.M3terClient`.

    Validated on construction: a bad value raises
    :class:`~airflow_provider_m3ter.client.M3terConfigurationError` naming the setting.
    ``repr()`` never shows ``api_secret``.

    :param org_id: the m3ter Organization ID (a UUID); every resource path starts with it.
    :param access_key_id: Access Key ID of an m3ter Service User.
    :param api_secret: that Service User's API Secret.
    :param config_url: base URL of the Config API (also serves the OAuth token).
    :param ingest_url: base URL of the Ingest API (measurements).
    :param timeout: seconds one HTTP attempt may take (connect and read each).
    :param max_attempts: HTTP attempts per call for transient errors (5XX, 429, network).
    :param deadline: total seconds one call may take, waits included.
    :param max_wait: longest single back-off or ``Retry-After`` wait, in seconds.
    :param token_refresh_margin: fetch a new token this many seconds before the old one expires.
    :param ingest_requests_per_second: client-side pace for the Ingest API; ``None`` for no limit.
    :param ingest_requests_per_window: client-side cap per rolling window for the Ingest API.
    :param config_requests_per_second: client-side pace for the Config API; ``None`` for no limit.
    :param config_requests_per_window: client-side cap per rolling window for the Config API.
    :param window_seconds: length of the rolling window the two ``*_per_window`` caps refer to.
    :param allow_insecure_http: allow plain ``http://`` to a host that is not this machine.
    :param verify_tls: verify TLS certificates (``True``), skip it (``False``) or a CA bundle path.
    :param pool_size: HTTP connections kept open per host.
    """

    org_id: str
    access_key_id: str
    api_secret: str = field(repr=False)
    config_url: str = "https://api.m3ter.com"
    ingest_url: str = "https://ingest.m3ter.com"
    timeout: float = 60.0
    max_attempts: int = 6
    deadline: float = 300.0
    max_wait: float = 60.0
    token_refresh_margin: float = 300.0
    ingest_requests_per_second: float | None = 50.0
    ingest_requests_per_window: int | None = 5000
    config_requests_per_second: float | None = 50.0
    config_requests_per_window: int | None = 20000
    window_seconds: float = 300.0
    allow_insecure_http: bool = False
    verify_tls: bool | str = True
    pool_size: int = 16

    def __post_init__(self) -> None:
        for name in ("org_id", "access_key_id", "api_secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise M3terConfigurationError(
                    f"ClientSettings.{name} is required (got an empty value)", field=name
                )
            # Surrounding whitespace from a pasted credential would only show up later as a 403.
            object.__setattr__(self, name, value.strip())
        # every resource path starts with it: a UUID or nothing (no '..' reaching the request line)
        uuid_segment(self.org_id, "ClientSettings.org_id", field="org_id")
        for name in ("access_key_id", "api_secret"):
            problem = credential_problem(getattr(self, name), user_id=name == "access_key_id")
            if problem:
                # names the field, never the value
                raise M3terConfigurationError(f"ClientSettings.{name} {problem}", field=name)
        # from here on the secret and its Basic-header form are redacted from the HTTP stack's logs
        # and from every client error message (Airflow's masker is the hook's business)
        install_log_redaction()
        register(self.api_secret, basic_credentials(self.access_key_id, self.api_secret))
        for name in ("config_url", "ingest_url"):
            object.__setattr__(self, name, self._checked_url(name, getattr(self, name)))
        # Upper bounds too: a huge value would only fail later, deep in the stack (a time_t
        # overflow, a connection pool filled in Python), far from the setting that caused it.
        self._check_number("timeout", self.timeout, minimum=0.0, exclusive=True, maximum=MAX_SECONDS)
        self._check_number("deadline", self.deadline, minimum=0.0, exclusive=True, maximum=MAX_SECONDS)
        self._check_number("max_wait", self.max_wait, minimum=0.0, maximum=MAX_SECONDS)
        self._check_number(
            "token_refresh_margin", self.token_refresh_margin, minimum=0.0, maximum=MAX_SECONDS
        )
        self._check_number(
            "window_seconds", self.window_seconds, minimum=0.0, exclusive=True, maximum=MAX_SECONDS
        )
        self._check_int("max_attempts", self.max_attempts, maximum=MAX_ATTEMPTS)
        self._check_int("pool_size", self.pool_size, maximum=MAX_POOL_SIZE)
        for name in ("ingest_requests_per_second", "config_requests_per_second"):
            if getattr(self, name) is not None:
                self._check_number(name, getattr(self, name), minimum=0.0, exclusive=True, maximum=MAX_RATE)
        for name in ("ingest_requests_per_window", "config_requests_per_window"):
            if getattr(self, name) is not None:
                self._check_int(name, getattr(self, name), maximum=MAX_WINDOW_REQUESTS)
        if not isinstance(self.verify_tls, (bool, str)) or self.verify_tls == "":
            raise M3terConfigurationError(
                "ClientSettings.verify_tls must be True, False or the path of a CA bundle", field="verify_tls"
            )

    def _checked_url(self, name: str, url: object) -> str:
        """Return ``url`` without a trailing slash, refusing anything but https (or loopback http)."""
        if not isinstance(url, str) or not url.strip():
            raise M3terConfigurationError(
                f"ClientSettings.{name} is required (got an empty value)", field=name
            )
        text = url.strip().rstrip("/")
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # show the URL without any user:password@ it may carry
            shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
            raise M3terConfigurationError(
                f"ClientSettings.{name} must be an http(s) URL with a host, got {shown!r}", field=name
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise M3terConfigurationError(
                f"ClientSettings.{name} must not carry credentials, a query or a fragment", field=name
            )
        if parts.scheme == "http" and not self.allow_insecure_http and not is_loopback_host(parts.hostname):
            raise M3terConfigurationError(
                f"ClientSettings.{name}: plain http:// to {parts.hostname!r} would send the API secret and "
                "tokens unencrypted; use https://, or set allow_insecure_http=True if you really mean it",
                field=name,
            )
        return text

    @staticmethod
    def _check_number(
        name: str, value: object, *, minimum: float, maximum: float, exclusive: bool = False
    ) -> None:
        """Refuse a non-number, NaN/infinity, or a value below ``minimum`` or above ``maximum``."""
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > minimum if exclusive else value >= minimum) and value <= maximum  # type: ignore[operator]
        if not ok:
            bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
            raise M3terConfigurationError(
                f"ClientSettings.{name} must be a finite number {bound} and at most {maximum:g}, "
                f"got {_shown(value)}",
                field=name,
            )

    @staticmethod
    def _check_int(name: str, value: object, *, maximum: int) -> None:
        """Refuse anything but an integer from 1 to ``maximum``."""
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
            raise M3terConfigurationError(
                f"ClientSettings.{name} must be an integer from 1 to {maximum:,}, got {_shown(value)}",
                field=name,
            )


def _shown(value: object) -> str:
    """A setting's value for an error message, bounded in size."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
