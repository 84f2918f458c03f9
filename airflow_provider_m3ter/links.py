"""The "m3ter Console" button on a task: a link to what the task created or watched in m3ter.

An operator that knows the entity it worked on (a meter, a file-upload job, a bill job ...) builds a
URL with :func:`console_url` and stores it with :func:`persist_console_link`; the task's extra link
:class:`M3terConsoleLink` then shows it in the Airflow UI. Nothing here makes a network call.

The Console's URL layout is not part of m3ter's documented API, so the paths built by
:func:`console_url` are a best effort: the organization part (``/org/{org_id}``) is the stable
anchor, and an unknown ``kind`` falls back to the organization's home page.

Where the link points follows the connection (:func:`console_base_for`): m3ter's hosts link to
``https://console.m3ter.com``; a connection to this machine (the local emulator) links to the
emulator's own page under ``/_emulator/console``; any other host (a proxy) gets no link, because
its Console is unknown.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

__all__ = [
    "CONSOLE_BASE_URL",
    "CONSOLE_URL_XCOM_KEY",
    "M3terConsoleLink",
    "console_base_for",
    "console_url",
    "link_task_to_console",
    "persist_console_link",
]

CONSOLE_BASE_URL = "https://console.m3ter.com"

# what an entity id in a Console link may be: a UUID or another plain token
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
CONSOLE_URL_XCOM_KEY = "m3ter_console_url"

# Console sections per entity kind (best effort, see the module docstring).
_KIND_PATHS: dict[str, str] = {
    "meter": "metering/meters",
    "aggregation": "metering/aggregations",
    "compound_aggregation": "metering/compound-aggregations",
    "account": "accounts",
    "product": "products",
    "plan": "pricing/plans",
    "bill": "billing/bills",
    "billjob": "billing/bill-jobs",
    "fileupload": "data/file-uploads",
    "dataexport": "data/exports",
    "event": "events",
}

EMULATOR_CONSOLE_PATH = "/_emulator/console"


def console_base_for(config_url: str) -> str | None:
    """The Console root for a connection's Config API URL, or ``None`` when there is none to link.

    :param config_url: the connection's Config API URL (``ClientSettings.config_url``).
    :return: ``https://console.m3ter.com`` for m3ter's hosts (``*.m3ter.com``),
        ``<config_url>/_emulator/console`` for a host on this machine (the local emulator), else None.
    """
    from airflow_provider_m3ter.client.settings import is_loopback_host

    parts = urlsplit(config_url)
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "m3ter.com" or host.endswith(".m3ter.com"):
        return CONSOLE_BASE_URL
    if host and is_loopback_host(host):
        return config_url.rstrip("/") + EMULATOR_CONSOLE_PATH
    return None


def link_task_to_console(
    context: Any, settings: Any, kind: str | None = None, id: str | None = None, *, log: Any = None
) -> str | None:
    """Store the Console link of a task's target for :class:`M3terConsoleLink`; never raises.

    :param context: the task's Airflow context.
    :param settings: the connection's ``ClientSettings`` (``org_id``, ``config_url``).
    :param kind: the entity kind, see :func:`console_url`.
    :param id: the entity id, when known.
    :param log: a logger for the reason a link could not be stored.
    :return: the stored URL, or None when the connection has no Console to link to.
    """
    try:
        base = console_base_for(settings.config_url)
        if base is None:
            return None
        url = console_url(settings.org_id, kind, id, base_url=base)
        persist_console_link(context, url)
        return url
    except Exception as exc:  # a link is a convenience: never fail a task for it
        if log is not None:
            log.debug("no m3ter Console link: %s", exc)
        return None


def console_url(
    org_id: str, kind: str | None = None, id: str | None = None, *, base_url: str = CONSOLE_BASE_URL
) -> str:
    """Build a link into the m3ter Console for an organization, a section, or one entity.

    :param org_id: the m3ter Organization ID (required; it anchors every Console page).
    :param kind: entity kind such as ``"meter"``, ``"account"``, ``"billjob"``, ``"fileupload"``;
        None or an unknown kind links to the organization's home page.
    :param id: the entity's id (UUID); ignored without a known ``kind``.
    :param base_url: Console root, for a private or regional Console.
    :return: for example ``https://console.m3ter.com/org/<org_id>/metering/meters/<id>``.
    """
    if not org_id or not str(org_id).strip():
        raise ValueError("console_url: org_id is required to build an m3ter Console link")
    url = f"{base_url.rstrip('/')}/org/{quote(str(org_id).strip(), safe='')}"
    section = _KIND_PATHS.get(kind.lower()) if kind else None
    if section is None:
        return url
    url += f"/{section}"
    # an id is a UUID or a plain token; anything else (``..``, a slash, spaces) links to the
    # section instead of a page the id could climb out of
    if id and _PLAIN_ID.fullmatch(str(id)):
        url += f"/{id}"
    return url


def persist_console_link(context: Any, url: str) -> None:
    """Store a Console URL for the running task so :class:`M3terConsoleLink` can show it.

    :param context: the task's Airflow context (``execute(self, context)``).
    :param url: the link, typically from :func:`console_url`.
    """
    context["ti"].xcom_push(key=CONSOLE_URL_XCOM_KEY, value=url)


class M3terConsoleLink(BaseOperatorLink):
    """Extra link "m3ter Console": opens the URL the task stored with :func:`persist_console_link`.

    Add it to an operator with ``operator_extra_links = (M3terConsoleLink(),)``. The link reads the
    task's XCom ``m3ter_console_url``; a task that stored none shows an empty (disabled) link.
    """

    name = "m3ter Console"

    @property
    def xcom_key(self) -> str:
        """The XCom key the URL is kept under (shared by the worker and the API server)."""
        return CONSOLE_URL_XCOM_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the stored Console URL for this task instance, or ``""`` when there is none.

        :param operator: the operator the link belongs to.
        :param ti_key: the task instance whose XCom holds the URL.
        """
        from airflow_provider_m3ter.compat import xcom_backend

        value = xcom_backend().get_value(ti_key=ti_key, key=CONSOLE_URL_XCOM_KEY)
        return value if isinstance(value, str) else ""
