"""Every difference between the Airflow 3 lines this provider supports, in one place.

The rest of the package imports Airflow names that moved between lines from here, never with its
own ``try: ... except ImportError``. Names that are the same on every supported line
(``airflow.sdk.BaseOperator``, ``BaseSensorOperator``, ``BaseOperatorLink``, ``Context``,
``ObjectStoragePath``, ``airflow.triggers.base``) are imported from Airflow directly.

What differs, and where each line keeps it:

* ``BaseHook``: ``airflow.hooks.base`` on 3.0, ``airflow.sdk`` from 3.1.
* ``AirflowException``, ``AirflowFailException``, ``AirflowSensorTimeout``, ``AirflowSkipException``,
  ``TaskDeferred``: ``airflow.exceptions`` on 3.0/3.1, ``airflow.sdk.exceptions`` from 3.2.
* ``conf`` (as ``airflow_conf``): ``airflow.configuration`` on 3.0/3.1, ``airflow.sdk.configuration``
  from 3.2.
* ``mask_secret``: ``airflow.sdk.execution_time.secrets_masker`` on 3.0, ``airflow.sdk.log`` from 3.1.
* ``redact``: ``airflow.sdk.execution_time.secrets_masker`` on 3.0 (the ``SecretsMasker`` filter of the
  ``airflow.task`` logger), ``airflow.sdk._shared.secrets_masker`` from 3.1. Looking only in the newer
  places made redaction on 3.0 return text unredacted.
* ``CronDataIntervalTimetable``: ``airflow.timetables.interval`` on 3.0/3.1, ``airflow.sdk`` from 3.2.
* async connection look-up (triggers): the common-compat provider's ``get_async_connection`` where
  installed, else ``BaseHook.aget_connection`` (3.1+), else the sync look-up in a thread (3.0).
* ``RetryPolicy`` / ``RetryDecision``: only from 3.3 (``RETRY_POLICY_SUPPORTED``).
* ``context["task_state_store"]``: only from 3.3 (``TASK_STATE_STORE_SUPPORTED``).

``AIRFLOW_VERSION`` is the installed Airflow's ``(major, minor, micro)``; the ``*_SUPPORTED`` flags
say whether a feature exists at all on it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow import __version__ as _airflow_version

__all__ = [
    "AIRFLOW_VERSION",
    "RETRY_POLICY_SUPPORTED",
    "TASK_STATE_STORE_SUPPORTED",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "CronDataIntervalTimetable",
    "RetryDecision",
    "RetryPolicy",
    "TaskDeferred",
    "aget_connection",
    "airflow_conf",
    "mask_secret",
    "redact",
    "xcom_backend",
]


def _version_tuple(text: str) -> tuple[int, int, int]:
    """``"3.0.6"`` -> ``(3, 0, 6)``; pre-release and local suffixes are ignored."""
    numbers = [int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3]]
    numbers += [0] * (3 - len(numbers))
    return numbers[0], numbers[1], numbers[2]


AIRFLOW_VERSION: tuple[int, int, int] = _version_tuple(_airflow_version)

if TYPE_CHECKING:  # type-check against the newest line's layout
    from airflow.sdk import BaseHook, CronDataIntervalTimetable
    from airflow.sdk.configuration import conf as airflow_conf
    from airflow.sdk.definitions.connection import Connection
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
else:
    if AIRFLOW_VERSION >= (3, 1):
        from airflow.sdk import BaseHook
    else:
        from airflow.hooks.base import BaseHook

    if AIRFLOW_VERSION >= (3, 2):
        from airflow.sdk import CronDataIntervalTimetable
        from airflow.sdk.configuration import conf as airflow_conf
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            TaskDeferred,
        )
    else:
        from airflow.configuration import conf as airflow_conf
        from airflow.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            TaskDeferred,
        )
        from airflow.timetables.interval import CronDataIntervalTimetable

#: Airflow 3.3+: ``context["task_state_store"]`` (durable per-task state kept across retries).
TASK_STATE_STORE_SUPPORTED: bool = AIRFLOW_VERSION >= (3, 3)

#: Airflow 3.3+: task retry policies (``airflow.sdk.RetryPolicy``); detected by importing them.
RETRY_POLICY_SUPPORTED: bool
try:
    from airflow.sdk.definitions.retry_policy import RetryDecision, RetryPolicy

    RETRY_POLICY_SUPPORTED = True
except ImportError:  # Airflow < 3.3
    RETRY_POLICY_SUPPORTED = False
    RetryPolicy = object  # type: ignore[assignment,misc]  # a base class the provider's policy can name
    RetryDecision = None  # type: ignore[assignment,misc]


@cache
def _mask_secret() -> Callable[..., None]:
    if AIRFLOW_VERSION >= (3, 1):
        from airflow.sdk.log import mask_secret as found
    else:
        from airflow.sdk.execution_time.secrets_masker import mask_secret as found  # type: ignore[no-redef]
    return found


@cache
def _redact() -> Callable[[Any], Any]:
    if AIRFLOW_VERSION >= (3, 1):
        from airflow.sdk._shared.secrets_masker import redact as found
    else:
        from airflow.sdk.execution_time.secrets_masker import redact as found  # type: ignore[no-redef]
    return found


def mask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's log masker (this process's, and the task supervisor's).

    Airflow then shows ``***`` for it in task logs. Resolved on first use, so importing this module
    stays cheap. Empty values are ignored.
    """
    if secret:
        _mask_secret()(secret)


def redact(text: str) -> str:
    """``text`` with every secret Airflow's masker knows replaced by ``***``.

    On Airflow 3.0 the masker is the ``SecretsMasker`` filter that Airflow's logging configuration
    puts on the ``airflow.task`` logger; if logging was configured without one, no secret can have
    been registered either (``mask_secret`` needs the same filter), so the text is returned as is.
    """
    try:
        return str(_redact()(text))
    except RuntimeError:  # Airflow 3.0: "No SecretsMasker found" (custom logging without the filter)
        return text


async def aget_connection(conn_id: str) -> Connection:
    """Look up an Airflow Connection from async code (a trigger) without blocking the event loop.

    Uses the common-compat provider's ``get_async_connection`` where installed, else
    ``BaseHook.aget_connection`` (3.1+), else (3.0) the sync lookup in a worker thread.

    :raises airflow.exceptions.AirflowNotFoundException: no such connection.
    """
    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # an older common-compat provider
        pass
    else:
        return await get_async_connection(conn_id)
    if hasattr(BaseHook, "aget_connection"):
        return await BaseHook.aget_connection(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)  # pragma: no cover - Airflow 3.0


def xcom_backend() -> Any:
    """The configured XCom backend class, as the task SDK resolves it (``get_value`` and friends)."""
    from airflow.sdk.execution_time.xcom import XCom

    return XCom
