"""``M3terHook``: an Airflow Connection in, an m3ter client and Airflow-shaped errors out.

The hook is thin on purpose: everything about talking to m3ter (auth, retries, pacing, batching)
lives in :mod:`airflow_provider_m3ter.client`. The hook reads the Connection, builds
:class:`~airflow_provider_m3ter.client.ClientSettings`, registers secrets with Airflow's log
masker, and translates the client's errors into :mod:`airflow_provider_m3ter.exceptions` at one
boundary (:meth:`M3terHook.translate_errors`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:  # Airflow 3.1+
    from airflow.sdk import BaseHook
except ImportError:  # pragma: no cover - Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]

from airflow_provider_m3ter.client import ClientSettings, M3terClient
from airflow_provider_m3ter.client.errors import M3terConfigurationError, M3terError
from airflow_provider_m3ter.connection_form import (
    CONN_FIELDS,
    DEFAULT_CONFIG_URL,
    DEFAULT_INGEST_URL,
    UI_FIELD_BEHAVIOUR,
)
from airflow_provider_m3ter.exceptions import describe_error, to_airflow_failure

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["M3terHook", "register_secret"]

log = logging.getLogger(__name__)

_EXTRA_PREFIX = "extra__m3ter__"
# Settings a connection may tune beyond the form (JSON extras only), with their JSON types.
_ADVANCED_EXTRAS: dict[str, str] = {
    "max_wait": "number",
    "token_refresh_margin": "number",
    "window_seconds": "number",
    "pool_size": "integer",
}
_RATE_EXTRAS = (
    "ingest_requests_per_second",
    "ingest_requests_per_window",
    "config_requests_per_second",
    "config_requests_per_window",
)
# Where each ClientSettings field lives on the Connection, for error messages.
_FIELD_PLACES = {
    "config_url": "host (Config API URL)",
    "access_key_id": "login (Access Key ID)",
    "api_secret": "password (API Secret)",
}
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


@cache
def _masker() -> Callable[[str], None]:
    """Airflow's ``mask_secret`` for this version (task SDK first, older homes after)."""
    try:
        from airflow.sdk.log import mask_secret

        return mask_secret
    except ImportError:  # pragma: no cover - Airflow 3.0
        try:
            from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]
        except ImportError:
            from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef]
        return mask_secret


def register_secret(value: str) -> None:
    """Register a secret (API secret, access token, signed URL) so Airflow logs show ``***``.

    :param value: the secret; empty values are ignored.
    """
    if value:
        _masker()(value)


def _extras_of(conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict, parsed from ``conn.extra`` without touching the masker."""
    raw = getattr(conn, "extra", None)
    if isinstance(raw, Mapping):
        return dict(raw)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except (TypeError, ValueError) as err:
        raise M3terConfigurationError(
            f"m3ter connection {conn.conn_id!r}: extra is not valid JSON ({err})", field="extra"
        ) from None
    if not isinstance(parsed, dict):
        raise M3terConfigurationError(
            f"m3ter connection {conn.conn_id!r}: extra must be a JSON object", field="extra"
        )
    return parsed


def _coerce(conn_id: str, name: str, value: Any, kind: str) -> Any:
    """Turn an extra's value (UI, JSON or URI query string) into its JSON type, or say what is wrong."""
    where = f"m3ter connection {conn_id!r}: extra {name!r}"
    try:
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            if name == "verify_tls" and text:
                return str(value).strip()  # the path of a CA bundle
            raise ValueError
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "number":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        article = "an" if kind[0] in "aeiou" else "a"
        raise M3terConfigurationError(
            f"{where} must be {article} {kind}, got {value!r}", field=name
        ) from None
    return str(value).strip()


def _config_url(conn: Any) -> str:
    """Config API base URL from host (URL or bare host), schema (http/https) and port."""
    host = (getattr(conn, "host", None) or "").strip().rstrip("/")
    port = getattr(conn, "port", None)
    if not host:
        return DEFAULT_CONFIG_URL
    if "://" not in host:
        schema = (getattr(conn, "schema", None) or "").strip().lower()
        host = f"{schema if schema in ('http', 'https') else 'https'}://{host}"
    if port:
        parts = urlsplit(host)
        if parts.port is None:
            host = parts._replace(netloc=f"{parts.netloc}:{int(port)}").geturl()
    return host


def _derived_ingest_url(config_url: str) -> str:
    """The Ingest API URL m3ter pairs with a Config API URL (``api.`` becomes ``ingest.``)."""
    parts = urlsplit(config_url)
    if (parts.hostname or "").startswith("api."):
        return parts._replace(netloc=parts.netloc.replace("api.", "ingest.", 1)).geturl()
    log.warning(
        "m3ter: no ingest_url extra and none can be derived from %s; using %s", config_url, DEFAULT_INGEST_URL
    )
    return DEFAULT_INGEST_URL


class M3terHook(BaseHook):
    """Talk to m3ter through an Airflow Connection of type ``m3ter``.

    The Connection holds: host = Config API URL (default ``https://api.m3ter.com``; a bare host
    means https), login = Access Key ID, password = API Secret, and extras ``org_id`` (required),
    ``ingest_url``, ``timeout``, ``max_attempts``, ``deadline``, the four rate limits,
    ``allow_insecure_http`` and ``verify_tls`` (with or without the ``extra__m3ter__`` prefix).

    Building the hook does no I/O and does not even look the Connection up; that happens on the
    first :meth:`get_client` (or any call). Every call made through :meth:`request`,
    :meth:`paginate` and :meth:`submit_measurements`, and anything inside
    ``with hook.translate_errors():``, raises :class:`~airflow_provider_m3ter.exceptions.M3terFinalFailure`
    for errors retrying cannot fix and :class:`~airflow_provider_m3ter.exceptions.M3terTransientFailure`
    for ones a later task try may get past.

    :param m3ter_conn_id: the Airflow Connection id (default ``m3ter_default``).
    :param client_kwargs: extra keyword arguments for :class:`~airflow_provider_m3ter.client.M3terClient`
        (``session``, ``sleep``, ``clock``, ``rng``), e.g. to control time in tests.
    :param logger_name: name of the hook's logger (Airflow's ``BaseHook`` argument).
    """

    conn_name_attr = "m3ter_conn_id"
    default_conn_name = "m3ter_default"
    conn_type = "m3ter"
    hook_name = "m3ter"

    def __init__(
        self,
        m3ter_conn_id: str = default_conn_name,
        *,
        client_kwargs: Mapping[str, Any] | None = None,
        logger_name: str | None = None,
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.m3ter_conn_id = m3ter_conn_id
        self._client_kwargs = dict(client_kwargs or {})
        self._client: M3terClient | None = None

    def __repr__(self) -> str:
        return f"M3terHook(m3ter_conn_id={self.m3ter_conn_id!r})"

    # -- Connection -> settings -> client ---------------------------------------------------------

    @staticmethod
    def settings_from_connection(conn: Connection | Any) -> ClientSettings:
        """Build validated client settings from an Airflow Connection (no I/O, no masker calls).

        Safe for triggers: fetch the Connection asynchronously, then call this.

        :param conn: an ``airflow.sdk.Connection`` (or any object with ``conn_id``, ``host``,
            ``login``, ``password``, ``port``, ``schema`` and ``extra``).
        :raises M3terConfigurationError: a required field is missing or a value is invalid; the
            message names the connection id and the field.
        """
        conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
        raw = _extras_of(conn)
        extras: dict[str, Any] = {}
        for key, value in raw.items():
            name = key[len(_EXTRA_PREFIX) :] if key.startswith(_EXTRA_PREFIX) else key
            # the short key wins over the prefixed one when both are present
            if value is None or value == "" or (name in extras and key != name):
                continue
            extras[name] = value
        kinds = {name: _schema_kind(spec) for name, spec in CONN_FIELDS.items()} | _ADVANCED_EXTRAS
        unknown = sorted(set(extras) - set(kinds))
        if unknown:
            log.warning("m3ter connection %r: ignoring unknown extras %s", conn_id, unknown)
        values = {name: _coerce(conn_id, name, extras[name], kinds[name]) for name in extras if name in kinds}

        required = (
            ("org_id", "extra 'org_id' (Organization ID)", values.get("org_id")),
            ("login", "login (Access Key ID)", (getattr(conn, "login", None) or "").strip()),
            ("password", "password (API Secret)", getattr(conn, "password", None)),
        )
        missing = [(field, place) for field, place, present in required if not present]
        if missing:
            raise M3terConfigurationError(
                f"m3ter connection {conn_id!r} is missing {', '.join(place for _, place in missing)}",
                field=missing[0][0],
            )

        config_url = _config_url(conn)
        kwargs: dict[str, Any] = {
            "org_id": values.pop("org_id"),
            "access_key_id": conn.login,
            "api_secret": conn.password,
            "config_url": config_url,
            "ingest_url": values.pop("ingest_url", None) or _derived_ingest_url(config_url),
        }
        for name in _RATE_EXTRAS:
            # 0 switches client-side pacing off for that limit
            if name in values and values[name] <= 0:
                values[name] = None
        kwargs.update(values)
        try:
            return ClientSettings(**kwargs)
        except M3terConfigurationError as err:
            place = _FIELD_PLACES.get(err.field or "", f"extra {err.field!r}" if err.field else "a field")
            # name the connection's field instead of the ClientSettings attribute
            reason = re.sub(r"^ClientSettings\.\w+:?\s*", "", err.message)
            raise M3terConfigurationError(
                f"m3ter connection {conn_id!r}, {place}: {reason}", field=err.field
            ) from None

    def get_client(self) -> M3terClient:
        """The hook's client, built on first use from the Connection (then reused).

        Registers the API secret with Airflow's masker and masks every access token the client
        fetches.

        :raises M3terFinalFailure: the Connection is incomplete or invalid.
        """
        if self._client is None:
            with self.translate_errors():
                conn = self.get_connection(self.m3ter_conn_id)
                settings = self.settings_from_connection(conn)
            register_secret(settings.api_secret)
            self._client = M3terClient(settings, on_secret=register_secret, **self._client_kwargs)
        return self._client

    def get_conn(self) -> M3terClient:
        """Airflow's generic accessor; same as :meth:`get_client`."""
        return self.get_client()

    def close(self) -> None:
        """Close the client's connection pool, if a client was built."""
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- the error boundary -------------------------------------------------------------------------

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn client errors raised inside the block into Airflow-facing failures.

        ``M3terTransientError`` becomes ``M3terTransientFailure`` (retryable); every other
        ``M3terError`` becomes ``M3terFinalFailure`` (an ``AirflowFailException``). The client
        error stays reachable as ``.error`` and ``__cause__``.
        """
        try:
            yield
        except M3terError as error:
            raise to_airflow_failure(error) from error

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """``M3terClient.request()`` with Airflow errors: the general call to m3ter.

        :param method: HTTP method, e.g. ``"GET"``.
        :param path: relative to ``/organizations/{orgId}/`` unless it starts with ``/``.
        :param kwargs: ``params``, ``json``, ``api``, ``data``, ``headers`` as the client takes them.
        """
        client = self.get_client()
        with self.translate_errors():
            return client.request(method, path, **kwargs)

    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint (pages followed lazily), with Airflow errors.

        :param path: the list path, e.g. ``"meters"``.
        :param params: filters, e.g. ``{"codes": ["a", "b"]}``.
        :param page_size: items per page to ask for (halved on 413 by the client).
        """
        client = self.get_client()
        with self.translate_errors():
            yield from client.paginate(path, params=params, page_size=page_size)

    def submit_measurements(self, body: bytes | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Send one batch to the Ingest API, with Airflow errors.

        :param body: pre-encoded ``{"measurements": [...]}`` bytes, or a list of measurement dicts.
        """
        client = self.get_client()
        with self.translate_errors():
            return client.submit_measurements(body)

    # -- Airflow UI and CLI ---------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token and list one meter: ``(True, ...)`` or ``(False, reason)`` (no secrets).

        Uses a short retry budget (2 attempts, 30 s) so the UI's Test button answers quickly.
        """
        try:
            conn = self.get_connection(self.m3ter_conn_id)
            settings = self.settings_from_connection(conn)
        except Exception as error:
            return False, describe_error(error)
        register_secret(settings.api_secret)
        quick = dataclasses.replace(
            settings, max_attempts=min(settings.max_attempts, 2), deadline=min(settings.deadline, 30.0)
        )
        try:
            with M3terClient(quick, on_secret=register_secret, **self._client_kwargs) as client:
                client.request("GET", "meters", params={"pageSize": 1})
        except Exception as error:
            return False, f"Could not use m3ter organization {settings.org_id}: {describe_error(error)}"
        return True, (
            f"Connected to m3ter organization {settings.org_id} at {settings.config_url}: "
            "token issued and meters listed."
        )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabeled, hidden and placeholder fields of the connection form (from ``connection_form``)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR.get("hidden-fields", [])),
            "relabeling": dict(UI_FIELD_BEHAVIOUR.get("relabeling", {})),
            "placeholders": dict(UI_FIELD_BEHAVIOUR.get("placeholders", {})),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extra fields as WTForms widgets for Airflow versions that ask the hook.

        Derived from ``connection_form.CONN_FIELDS``; returns ``{}`` when the web UI's packages
        (``wtforms``, ``flask_appbuilder``, ``flask_babel``) are not installed.
        """
        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
            from flask_babel import lazy_gettext
            from wtforms import BooleanField, IntegerField, StringField
            from wtforms.validators import Optional
        except ImportError:
            return {}
        widgets: dict[str, Any] = {}
        for name, spec in CONN_FIELDS.items():
            kind = _schema_kind(spec)
            label = lazy_gettext(spec["label"])
            description = spec.get("description", "")
            default = spec["schema"].get("default")
            if kind == "boolean":
                widgets[name] = BooleanField(label, description=description, default=default)
            elif kind == "integer":
                widgets[name] = IntegerField(
                    label, widget=BS3TextFieldWidget(), description=description, validators=[Optional()]
                )
            else:
                # numbers travel as text (Airflow's form allows no float field); the hook parses them
                widgets[name] = StringField(label, widget=BS3TextFieldWidget(), description=description)
        return widgets


def _schema_kind(spec: Mapping[str, Any]) -> str:
    """The non-null JSON type of a ``CONN_FIELDS`` entry (``string``, ``number`` ...)."""
    declared = spec.get("schema", {}).get("type", "string")
    types = [declared] if isinstance(declared, str) else list(declared)
    return next((t for t in types if t != "null"), "string")
