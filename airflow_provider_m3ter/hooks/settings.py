"""Connection -> ClientSettings: how an Airflow Connection of type ``m3ter`` is read.

No I/O and no Airflow import: host = Config API URL (a bare host means https; ``schema`` and
``port`` apply), login = Access Key ID, password = API Secret, and extras (with or without the
``extra__m3ter__`` prefix) as in :data:`~airflow_provider_m3ter.connection_form.CONN_FIELDS`, plus a
few advanced JSON-only ones. Every problem names the connection id and the field.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_m3ter.client import ClientSettings
from airflow_provider_m3ter.client.errors import M3terConfigurationError
from airflow_provider_m3ter.client.paths import shown
from airflow_provider_m3ter.connection_form import CONN_FIELDS, DEFAULT_CONFIG_URL

__all__ = ["schema_kind", "settings_from_connection"]


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


def _no_duplicate_keys(conn_id: str) -> Any:
    """A ``json.loads`` object hook that refuses a key given twice (which value was meant?)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise M3terConfigurationError(
                    f"m3ter connection {conn_id!r}: extra has the key {shown(key)} twice", field=str(key)
                )
            result[key] = value
        return result

    return hook


def _extras_of(conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict, parsed from ``conn.extra`` without touching the masker."""
    conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
    raw = getattr(conn, "extra", None)
    if isinstance(raw, Mapping):
        return dict(raw)
    if not raw:
        return {}
    problem = None
    try:
        parsed = json.loads(raw, object_pairs_hook=_no_duplicate_keys(conn_id))
    except (TypeError, ValueError) as err:
        if isinstance(err, M3terConfigurationError):
            raise
        problem = f"extra is not valid JSON ({str(err)[:200]})"
    if problem is None and not isinstance(parsed, dict):
        problem = "extra must be a JSON object"
    if problem is not None:
        raise M3terConfigurationError(f"m3ter connection {conn_id!r}: {problem}", field="extra")
    return parsed


# Numbers as text: ASCII digits only (float() would also take '5_000', 'inf', 'nan' and non-ASCII digits).
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,18}")


def _coerce(conn_id: str, name: str, value: Any, kind: str) -> Any:
    """Turn an extra's value (UI, JSON or URI query string) into its JSON type, or say what is wrong.

    Strict: a number is a JSON number or decimal ASCII text; an integer has no fraction; a boolean
    is a JSON boolean or one of true/false, yes/no, on/off, 1/0 (``verify_tls`` also takes the path
    of an existing CA bundle).
    """
    where = f"m3ter connection {conn_id!r}: extra {name!r}"
    text = value.strip() if isinstance(value, str) else None
    result: Any = None
    if kind == "boolean":
        if isinstance(value, bool):
            result = value
        elif text is not None and text.lower() in _TRUE:
            result = True
        elif text is not None and text.lower() in _FALSE:
            result = False
        elif name == "verify_tls" and text:
            if not os.path.exists(text):
                raise M3terConfigurationError(
                    f"{where} must be true, false or the path of a CA bundle that exists; "
                    f"got {shown(value)}, which is neither",
                    field=name,
                )
            result = text
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif text is not None and _INTEGER_TEXT.fullmatch(text):
            result = int(text)
    elif kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif text is not None and _NUMBER_TEXT.fullmatch(text):
            result = float(text)
    elif isinstance(value, str):
        result = text
    if result is None:
        article = "an" if kind[0] in "aeiou" else "a"
        raise M3terConfigurationError(f"{where} must be {article} {kind}, got {shown(value)}", field=name)
    return result


def _config_url(conn: Any) -> str:
    """Config API base URL from host (URL or bare host), schema (http/https) and port."""
    conn_id = getattr(conn, "conn_id", None) or "<unnamed>"
    host = (getattr(conn, "host", None) or "").strip().rstrip("/")
    port = getattr(conn, "port", None)
    number: int | None = None
    # 0 is how Airflow 3.3's UI posts an empty Port (and storing 0 makes its Test button work,
    # apache/airflow#73298): no port, like None
    if port is not None and port != "" and not (not isinstance(port, bool) and str(port).strip() == "0"):
        text = str(port).strip()
        if isinstance(port, bool) or not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
            raise M3terConfigurationError(
                f"m3ter connection {conn_id!r}: port must be 1-65535, got {shown(port)}", field="port"
            )
        number = int(text)
    if not host:
        return DEFAULT_CONFIG_URL if number is None else f"{DEFAULT_CONFIG_URL}:{number}"
    if "://" not in host:
        schema = (getattr(conn, "schema", None) or "").strip().lower()
        host = f"{schema if schema in ('http', 'https') else 'https'}://{host}"
    if number is not None:
        parts = urlsplit(host)
        try:
            in_host = parts.port
        except ValueError:
            in_host = None  # an invalid port in the URL is reported by the URL check
        if in_host is None:
            host = parts._replace(netloc=f"{parts.netloc}:{number}").geturl()
        elif in_host != number:
            raise M3terConfigurationError(
                f"m3ter connection {conn_id!r}: port {number} differs from the port in host ({in_host}); "
                "give it once",
                field="port",
            )
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


def _is_m3ter_host(url: str) -> bool:
    """Whether ``url``'s host is m3ter's own (``m3ter.com`` or a subdomain)."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    return host == "m3ter.com" or host.endswith(".m3ter.com")


def _refuse_mixed_hosts(conn_id: str, config_url: str, ingest_url: str) -> None:
    """Refuse a Config/Ingest pair where one host is m3ter's and the other is not.

    The token the Config host issues is sent to the Ingest host. An emulator or proxy Config host
    paired with ``ingest.m3ter.com`` (typically a form default stored by mistake), or m3ter's Config
    host paired with some other Ingest host, would hand one side's token to the other.
    """
    if _is_m3ter_host(config_url) != _is_m3ter_host(ingest_url):
        raise M3terConfigurationError(
            f"m3ter connection {conn_id!r}: Config API URL {_shown(config_url)} and Ingest API URL "
            f"{_shown(ingest_url)} do not belong together (one is m3ter's host, the other is not), so "
            "the Config host's token would go to a host it was not issued for; set extra 'ingest_url' "
            "to the Ingest host that pairs with this Config host",
            field="ingest_url",
        )


def _shown(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


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
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        name = key[len(_EXTRA_PREFIX) :] if key.startswith(_EXTRA_PREFIX) else key
        # the short key wins over the prefixed one when both are present (documented)
        if value is None or value == "" or (name in extras and key != name):
            continue
        extras[name] = value
        given_as[name] = key
    kinds = {name: schema_kind(spec) for name, spec in CONN_FIELDS.items()} | _ADVANCED_EXTRAS
    for name in sorted(set(extras) - set(kinds)):
        # a misspelt setting would silently not apply: refuse it, suggesting the likely one
        close = difflib.get_close_matches(name, list(kinds), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise M3terConfigurationError(
            f"m3ter connection {conn_id!r}: unknown extra {shown(given_as[name])}{hint}; known extras: "
            f"{', '.join(sorted(kinds))}",
            field=name,
        )
    values = {name: _coerce(conn_id, name, extras[name], kinds[name]) for name in extras}

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
    ingest_url = values.pop("ingest_url", None) or _derived_ingest_url(conn_id, config_url)
    kwargs: dict[str, Any] = {
        "org_id": values.pop("org_id"),
        "access_key_id": conn.login,
        "api_secret": conn.password,
        "config_url": config_url,
        "ingest_url": ingest_url,
    }
    for name in _RATE_EXTRAS:
        # 0 (and only 0: a negative rate is a mistake, not a wish) switches that pacing limit off
        if name in values and values[name] == 0:
            values[name] = None
    kwargs.update(values)
    try:
        settings = ClientSettings(**kwargs)
    except M3terConfigurationError as err:
        place = _FIELD_PLACES.get(err.field or "", f"extra {err.field!r}" if err.field else "a field")
        # name the connection's field instead of the ClientSettings attribute
        reason = re.sub(r"^ClientSettings\.\w+:?\s*", "", err.message)
        raise M3terConfigurationError(
            f"m3ter connection {conn_id!r}, {place}: {reason}", field=err.field
        ) from None
    _refuse_mixed_hosts(conn_id, settings.config_url, settings.ingest_url)
    return settings


def schema_kind(spec: Mapping[str, Any]) -> str:
    """The non-null JSON type of a ``CONN_FIELDS`` entry (``string``, ``number`` ...)."""
    declared = spec.get("schema", {}).get("type", "string")
    types = [declared] if isinstance(declared, str) else list(declared)
    return next((t for t in types if t != "null"), "string")
