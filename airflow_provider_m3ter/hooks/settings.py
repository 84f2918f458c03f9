"""Connection -> ClientSettings: how an Airflow Connection of type ``m3ter`` is read.

No I/O and no Airflow import: host = Config API URL (a bare host means https; ``schema`` and
``port`` apply), login = Access Key ID, password = API Secret, and extras (with or without the
``extra__m3ter__`` prefix) as in :data:`~airflow_provider_m3ter.connection_form.CONN_FIELDS`, plus a
few advanced JSON-only ones. Every problem names the connection id and the field.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_m3ter.client import ClientSettings
from airflow_provider_m3ter.client.errors import M3terConfigurationError
from airflow_provider_m3ter.connection_form import CONN_FIELDS, DEFAULT_CONFIG_URL

__all__ = ["schema_kind", "settings_from_connection"]

# the hook's logger, so connection warnings keep appearing where they always did
log = logging.getLogger("airflow_provider_m3ter.hooks.m3ter")

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


def _derived_ingest_url(conn_id: str, config_url: str) -> str:
    """The Ingest API URL m3ter pairs with a Config API URL (``api.`` becomes ``ingest.``).

    Any other Config host (an emulator, a proxy) must name its Ingest URL: guessing m3ter's public
    host would send that connection's token and usage somewhere it was never meant to go.
    """
    parts = urlsplit(config_url)
    if (parts.hostname or "").startswith("api."):
        return parts._replace(netloc=parts.netloc.replace("api.", "ingest.", 1)).geturl()
    raise M3terConfigurationError(
        f"m3ter connection {conn_id!r} is missing extra 'ingest_url' (Ingest API URL): it can only "
        f"be derived from a Config API URL on an api.* host, and {config_url} is not one",
        field="ingest_url",
    )


def settings_from_connection(conn: Any) -> ClientSettings:
    """Build validated client settings from an Airflow Connection (no I/O, no masker calls).

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
    kinds = {name: schema_kind(spec) for name, spec in CONN_FIELDS.items()} | _ADVANCED_EXTRAS
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
        "ingest_url": values.pop("ingest_url", None) or _derived_ingest_url(conn_id, config_url),
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


def schema_kind(spec: Mapping[str, Any]) -> str:
    """The non-null JSON type of a ``CONN_FIELDS`` entry (``string``, ``number`` ...)."""
    declared = spec.get("schema", {}).get("type", "string")
    types = [declared] if isinstance(declared, str) else list(declared)
    return next((t for t in types if t != "null"), "string")
