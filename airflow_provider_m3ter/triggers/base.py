"""The polling loop every m3ter trigger shares, and the JSON form of a client error.

A trigger runs one plain-Python check (``client.jobs``, ``client.events``) in a thread
(``asyncio.to_thread``) with a client built from the Airflow connection, so the deferrable path uses
the same HTTP code, retry rules and outcome logic as the sensor's ``poke``. It carries only JSON
values and an absolute deadline (epoch seconds): re-creating it from :meth:`serialize` after a
triggerer restart never extends the wait.

Events it fires (``TriggerEvent.payload``):

- ``{"status": "done", "result": CheckResult.to_dict()}``: succeeded or failed, as the check said;
- ``{"status": "timeout", "message": ..., "last": CheckResult.to_dict() | None}``: deadline passed;
- ``{"status": "error", "error": error_to_dict(err)}``: a final m3ter error (4XX, bad settings).

A trigger built with ``carry`` adds ``"carry": carry`` to each of these events: what the task needs
when it resumes travels with the event itself. Runners differ in what else they pass back: a real
triggerer resumes the task with the deferral's ``kwargs`` plus the event, ``airflow dags test``
(every Airflow 3 line) with the event alone, so anything the task needs must be in the event for
every runner to reach the same outcome and XCom.

A transient error that outlasted the client's own retries is logged and polled again, until the
deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_m3ter.client import errors as client_errors
from airflow_provider_m3ter.client.deadline import time_limit
from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.compat import aget_connection

__all__ = ["M3terPollingTrigger"]

_ERROR_FIELDS = ("status", "method", "path", "message", "attempts", "retry_after")


def error_to_dict(error: client_errors.M3terError) -> dict[str, Any]:
    """A client error as JSON values (class name and fields; never headers or tokens).

    :param error: the client error.
    """
    data: dict[str, Any] = {"type": type(error).__name__}
    data.update({name: getattr(error, name, None) for name in _ERROR_FIELDS})
    return data


def error_from_dict(data: dict[str, Any]) -> client_errors.M3terError:
    """Rebuild the client error :func:`error_to_dict` described (same class, same fields).

    :param data: output of :func:`error_to_dict`; an unknown type becomes ``M3terFinalError``.
    """
    cls = getattr(client_errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, client_errors.M3terError)):
        cls = client_errors.M3terFinalError
    message = str(data.get("message") or "")
    if issubclass(cls, client_errors.M3terConfigurationError):
        return cls(message)
    return cls(
        data.get("status"),
        data.get("method"),
        data.get("path"),
        message,
        int(data.get("attempts") or 1),
        data.get("retry_after"),
    )


async def get_connection_async(conn_id: str) -> Any:
    """Fetch an Airflow connection without blocking the triggerer's event loop.

    :param conn_id: the connection id.
    """
    return await aget_connection(conn_id)


class M3terPollingTrigger(BaseTrigger):
    """Base of the m3ter triggers: poll :meth:`check` until it is done or the deadline passes.

    Subclasses implement :meth:`check` (sync, runs in a thread) and :meth:`check_kwargs` (the
    JSON-friendly arguments that :meth:`serialize` adds to the common ones).

    :param m3ter_conn_id: the Airflow connection to m3ter.
    :param deadline: absolute end of the wait, epoch seconds (``time.time()`` scale).
    :param poll_interval: seconds between checks.
    :param carry: JSON values returned unchanged in every event (``"carry"``), for the task's resume
        method; stored with the trigger, so never secrets. None (the default) adds nothing.
    """

    def __init__(
        self,
        *,
        m3ter_conn_id: str,
        deadline: float,
        poll_interval: float = 30.0,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.m3ter_conn_id = m3ter_conn_id
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        self.carry = dict(carry) if carry is not None else None

    # -- what subclasses provide ---------------------------------------------------------------

    def check(self, client: Any) -> CheckResult:
        """One check through ``client`` (runs in a worker thread)."""
        raise NotImplementedError

    def check_kwargs(self) -> dict[str, Any]:
        """The subclass's own constructor arguments, as JSON values."""
        return {}

    # -- the trigger protocol ------------------------------------------------------------------

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and JSON-friendly kwargs; the deadline stays absolute."""
        kwargs = {
            "m3ter_conn_id": self.m3ter_conn_id,
            "deadline": self.deadline,
            "poll_interval": self.poll_interval,
            **self.check_kwargs(),
        }
        if self.carry is not None:
            kwargs["carry"] = self.carry
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def remaining(self) -> float:
        """Seconds left until the deadline (negative once it has passed)."""
        return self.deadline - time.time()

    def _bounded_check(self, client: Any) -> CheckResult:
        """One check whose calls (retries included) end by the trigger's deadline."""
        with time_limit(self.remaining(), "the wait's deadline"):
            return self.check(client)

    async def _client(self) -> Any:
        from airflow_provider_m3ter.client.auth import PROCESS_TOKENS
        from airflow_provider_m3ter.client.core import M3terClient
        from airflow_provider_m3ter.hooks.m3ter import M3terHook, register_secret, register_settings_secrets

        conn = await get_connection_async(self.m3ter_conn_id)
        # reading the connection's extras may talk to the supervisor synchronously: keep it off the loop
        settings = await asyncio.to_thread(M3terHook.settings_from_connection, conn)
        # the triggerer's logs are masked too: the API secret before any request, then each token
        register_settings_secrets(settings)
        return M3terClient(settings, on_secret=register_secret, token_store=PROCESS_TOKENS)

    def _event(self, payload: dict[str, Any]) -> TriggerEvent:
        """One event: ``payload`` plus the ``carry`` this trigger was built with."""
        if self.carry is not None:
            payload = {**payload, "carry": self.carry}
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the check is done (``done``), the deadline passes (``timeout``) or m3ter
        answers with a final error (``error``)."""
        client = None
        last: CheckResult | None = None
        try:
            try:
                client = await self._client()
            except client_errors.M3terError as error:  # invalid connection settings
                yield self._event({"status": "error", "error": error_to_dict(error)})
                return
            while True:
                try:
                    last = await asyncio.to_thread(self._bounded_check, client)
                except client_errors.M3terError as error:
                    if not error.retryable:
                        yield self._event({"status": "error", "error": error_to_dict(error)})
                        return
                    self.log.warning("m3ter stayed unavailable for this check (%s); polling again", error)
                else:
                    if last.done:
                        yield self._event({"status": "done", "result": last.to_dict()})
                        return
                    self.log.info("%s", last.message)
                remaining = self.remaining()
                if remaining <= 0:
                    message = f"gave up waiting at the deadline ({last.message if last else 'no answer yet'})"
                    yield self._event(
                        {"status": "timeout", "message": message, "last": last.to_dict() if last else None}
                    )
                    return
                await asyncio.sleep(min(self.poll_interval, remaining))
        finally:
            if client is not None:
                # the client is ours; the job or entity being watched is not, so nothing else is touched
                client.close()
