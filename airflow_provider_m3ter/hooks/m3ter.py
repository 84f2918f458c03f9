"""``M3terHook``: an Airflow Connection in, an m3ter client and Airflow-shaped errors out.

The hook is thin on purpose: everything about talking to m3ter (auth, retries, pacing, batching)
lives in :mod:`airflow_provider_m3ter.client`. The hook reads the Connection, builds
:class:`~airflow_provider_m3ter.client.ClientSettings`, registers secrets with Airflow's log
masker, and translates the client's errors into :mod:`airflow_provider_m3ter.exceptions` at one
boundary (:meth:`M3terHook.translate_errors`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow_provider_m3ter.client import ClientSettings, M3terClient, redaction
from airflow_provider_m3ter.client.auth import PROCESS_TOKENS, basic_credentials
from airflow_provider_m3ter.client.errors import M3terError
from airflow_provider_m3ter.compat import BaseHook, mask_secret
from airflow_provider_m3ter.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_m3ter.exceptions import describe_error, to_airflow_failure
from airflow_provider_m3ter.hooks.settings import schema_kind, settings_from_connection

if TYPE_CHECKING:
    from airflow.sdk import Connection

__all__ = ["M3terHook", "register_secret", "register_settings_secrets"]


def register_secret(value: str) -> None:
    """Register a secret (API secret, access token, signed URL) so Airflow logs show ``***``.

    :param value: the secret; empty values are ignored.
    """
    if value:
        mask_secret(value)
        # the client's own redaction (urllib3/requests logs, error messages) learns it too
        redaction.register(value)


def register_settings_secrets(settings: ClientSettings) -> None:
    """Register the API secret and its HTTP Basic form (base64 of ``id:secret``) with the masker.

    :param settings: the client settings whose credentials are about to be used.
    """
    register_secret(settings.api_secret)
    register_secret(basic_credentials(settings.access_key_id, settings.api_secret))


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
    :param limit_share: the share (0, 1] of the connection's request limits this hook's client may
        use, for tasks that share an organization through a pool (see
        :mod:`airflow_provider_m3ter.hooks.pool_pacing`); default 1 (all of them).
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
        limit_share: float = 1.0,
    ) -> None:
        super().__init__(logger_name=logger_name)
        if not 0 < limit_share <= 1:
            raise ValueError(f"limit_share must be in (0, 1], got {limit_share!r}")
        self.m3ter_conn_id = m3ter_conn_id
        self.limit_share = float(limit_share)
        self._client_kwargs = dict(client_kwargs or {})
        self._client: M3terClient | None = None

    def __repr__(self) -> str:
        return f"M3terHook(m3ter_conn_id={self.m3ter_conn_id!r})"

    # -- Connection -> settings -> client ---------------------------------------------------------

    @staticmethod
    def settings_from_connection(conn: Connection | Any) -> ClientSettings:
        """Build validated client settings from an Airflow Connection (no I/O, no masker calls).

        Safe for triggers: fetch the Connection asynchronously, then call this. The rules are in
        :func:`airflow_provider_m3ter.hooks.settings.settings_from_connection`.

        :param conn: an ``airflow.sdk.Connection`` (or any object with ``conn_id``, ``host``,
            ``login``, ``password``, ``port``, ``schema`` and ``extra``).
        :raises M3terConfigurationError: a required field is missing or a value is invalid; the
            message names the connection id and the field.
        """
        return settings_from_connection(conn)

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
            register_settings_secrets(settings)
            if self.limit_share < 1:
                from airflow_provider_m3ter.hooks.pool_pacing import shared_settings

                settings = shared_settings(settings, self.limit_share)
                self.log.info(
                    "Pacing at %.4g of the connection's limits: ingest %s req/s and %s per window",
                    self.limit_share,
                    f"{settings.ingest_requests_per_second:.4g}"
                    if settings.ingest_requests_per_second
                    else "unlimited",
                    settings.ingest_requests_per_window or "unlimited",
                )
            self._client = M3terClient(settings, **self._shared_client_kwargs())
        return self._client

    def _shared_client_kwargs(self) -> dict[str, Any]:
        """Client arguments: the masker, and this process's token store (one token per credential)."""
        return {"on_secret": register_secret, "token_store": PROCESS_TOKENS, **self._client_kwargs}

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
        register_settings_secrets(settings)
        quick = dataclasses.replace(
            settings, max_attempts=min(settings.max_attempts, 2), deadline=min(settings.deadline, 30.0)
        )
        try:
            with M3terClient(quick, **self._shared_client_kwargs()) as client:
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
            kind = schema_kind(spec)
            label = lazy_gettext(spec["label"])
            description = spec.get("description", "")
            if kind == "boolean":
                # no default: a pre-filled value would be stored with the connection
                widgets[name] = BooleanField(label, description=description)
            elif kind == "integer":
                widgets[name] = IntegerField(
                    label, widget=BS3TextFieldWidget(), description=description, validators=[Optional()]
                )
            else:
                # numbers travel as text (Airflow's form allows no float field); the hook parses them
                widgets[name] = StringField(label, widget=BS3TextFieldWidget(), description=description)
        return widgets
