"""Ids and codes that go into URL paths: validated, then percent-encoded, before any request.

m3ter identifies organizations, meters, jobs, accounts ... by UUID in its paths
(``/organizations/{orgId}/meters/{id}``). Anything else in a path segment is a configuration error:
``..`` or ``.`` would be collapsed by the HTTP stack (``/organizations/../meters`` is sent as
``/meters``), and a ``/``, ``?`` or ``#`` would change which resource is addressed.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from airflow_provider_m3ter.client.errors import M3terConfigurationError

__all__ = ["check_relative_path", "shown", "uuid_segment"]

# m3ter's ids: canonical 8-4-4-4-12 hex UUIDs (any version; either case)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# a path given to request(): segments of URL-safe characters (or %XX escapes), no dot segments
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+")
# the common case, decided by one match: every segment of unreserved characters only (nothing that
# decodes, splits or hides anything) and none of them ``.`` or ``..``
_PLAIN_PATH = re.compile(r"/?(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~]+(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~]+)*")
_HIDDEN_SPLIT = re.compile(r"[/\\;]")
_SHOWN = 60


def shown(value: object) -> str:
    """``repr(value)`` cut to a bounded length, for messages."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def uuid_segment(value: object, what: str, *, field: str | None = None) -> str:
    """``value`` as a URL path segment if it is an m3ter id (a UUID), else a configuration error.

    :param value: the id, e.g. an Organization, Meter or job id.
    :param what: how the message names it, e.g. ``"bill job id"``.
    :param field: the setting or argument at fault (``M3terConfigurationError.field``).
    :raises M3terConfigurationError: not a UUID (``.``, ``..``, a slash, a code instead of an id ...).
    """
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise M3terConfigurationError(
            f"{what} must be an m3ter id (a UUID such as 12345678-90ab-4cde-8f01-234567890abc), "
            f"got {shown(value)}",
            field=field,
        )
    return quote(value, safe="")


def check_relative_path(path: str) -> str:
    """Return ``path`` (relative to the organization, or absolute from ``/``) if every segment is safe.

    Segments must be non-empty and made of URL-safe characters or ``%XX`` escapes, and never ``.``
    or ``..`` (in any encoding); no query, fragment or backslash.

    :param path: e.g. ``meters/<id>`` or ``/oauth/token``.
    :raises M3terConfigurationError: a segment is empty, a dot segment, or holds other characters.
    """
    if not isinstance(path, str):
        raise M3terConfigurationError(f"request path must be a string, got {shown(path)}", field="path")
    if _PLAIN_PATH.fullmatch(path):
        return path
    return _check_segments(path)


def _check_segments(path: str) -> str:
    """The full check of :func:`check_relative_path`, segment by segment (the fast path's reference)."""
    body = path[1:] if path.startswith("/") else path
    for segment in body.split("/") if body else []:
        # what a server that decodes before routing would see: no dot segment hidden behind an
        # encoded slash or backslash ('a%2f..%2f..%2foauth'), a matrix parameter ('..;') or an
        # escape, and no control character ('%00')
        decoded = unquote(segment)
        hidden = _HIDDEN_SPLIT.split(decoded)
        if (
            not _SEGMENT.fullmatch(segment)
            or any(part in (".", "..") for part in hidden)
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded)
        ):
            raise M3terConfigurationError(
                f"request path {shown(path)} has an unsafe segment {shown(segment)}: ids and codes in a "
                "path must be validated and percent-encoded (no '.', '..', empty segments, '?', '#', "
                "spaces or '\\')",
                field="path",
            )
    return path
