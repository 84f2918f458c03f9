"""The m3ter connection form, as plain data.

No field carries a JSON-schema ``default``: Airflow's form would pre-fill it as a *value* and store
it with the connection (an emulator's connection would then send its token to
``ingest.m3ter.com``). Defaults are told in the description and, for the URL, offered as an
``examples`` suggestion; an empty field means "the hook's default".

One source for both ways Airflow learns about a connection form: provider info (``conn-fields`` and
``ui-field-behaviour``, Airflow 3.2+) and the hook's ``get_connection_form_widgets`` /
``get_ui_field_behaviour`` methods (older Airflow). Kept free of imports so that reading provider
info stays cheap.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CONFIG_URL = "https://api.m3ter.com"
DEFAULT_INGEST_URL = "https://ingest.m3ter.com"

# Extra fields stored in the connection's ``extra`` JSON. Keys are the extra keys.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "org_id": {
        "label": "Organization ID",
        "schema": {"type": ["string", "null"]},
        "description": "The m3ter Organization ID (a UUID); every API path starts with it. Required.",
    },
    "ingest_url": {
        "label": "Ingest API URL",
        "schema": {"type": ["string", "null"], "examples": [DEFAULT_INGEST_URL]},
        "description": "Base URL of m3ter's Ingest API. Empty: derived from an api.* Config API URL "
        f"({DEFAULT_CONFIG_URL} -> {DEFAULT_INGEST_URL}); any other Config host (an emulator, a proxy) "
        "must name its own.",
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"]},
        "description": "Empty: 60.",
    },
    "max_attempts": {
        "label": "Attempts per request",
        "schema": {"type": ["integer", "null"]},
        "description": "Attempts for a transient error (5XX, 429, network) before the task fails. Empty: 6.",
    },
    "deadline": {
        "label": "Retry deadline per request (seconds)",
        "schema": {"type": ["number", "null"]},
        "description": "Empty: 300.",
    },
    "ingest_requests_per_second": {
        "label": "Ingest requests per second",
        "schema": {"type": ["number", "null"]},
        "description": "Client-side pace for the Ingest API, shared by the tasks of the task's pool. "
        "Empty: 50 (m3ter's per-organization limit).",
    },
    "ingest_requests_per_window": {
        "label": "Ingest requests per 5 minutes",
        "schema": {"type": ["integer", "null"]},
        "description": "Client-side cap for m3ter's per-IP rolling 5-minute ingest window. Empty: 5000.",
    },
    "config_requests_per_second": {
        "label": "Config requests per second",
        "schema": {"type": ["number", "null"]},
        "description": "Empty: 50.",
    },
    "config_requests_per_window": {
        "label": "Config requests per 5 minutes",
        "schema": {"type": ["integer", "null"]},
        "description": "Empty: 20000.",
    },
    "allow_insecure_http": {
        "label": "Allow plain http:// to a non-loopback host",
        "schema": {"type": ["boolean", "null"]},
        "description": "Empty: no (http:// only to this machine).",
    },
    "verify_tls": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"]},
        "description": "Empty: yes.",
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {"host": "Config API URL", "login": "Access Key ID", "password": "API Secret"},
    "placeholders": {
        "host": DEFAULT_CONFIG_URL,
        "login": "m3ter Access Key ID of a Service User",
        "password": "the Service User's API Secret",
        "org_id": "00000000-0000-0000-0000-000000000000",
        "ingest_url": DEFAULT_INGEST_URL,
    },
}
