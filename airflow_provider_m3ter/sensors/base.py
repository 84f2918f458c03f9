"""What every m3ter sensor shares: one check decides, in poke, reschedule and deferrable mode alike.

A sensor names a plain-Python check (:meth:`M3terBaseSensor.check`) and the trigger that runs the
same check asynchronously (:meth:`M3terBaseSensor.build_trigger`). ``poke`` runs the check through
the hook; deferrable mode checks once, then defers to the trigger; ``execute_complete`` turns the
trigger's event back into the very outcome ``poke`` would have produced:

- succeeded: the check's details are the task's XCom value;
- failed (a failed job, ingest validation failures ...):
  :class:`~airflow_provider_m3ter.exceptions.M3terCheckFailure`, which fails the task without
  retries (retrying cannot change a finished job);
- a final m3ter error (4XX, bad connection): ``M3terFinalFailure``;
- the timeout: ``AirflowSensorTimeout``.

A transient error that outlasted the client's retries is logged and checked again at the next poke.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.compat import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    airflow_conf,
)
from airflow_provider_m3ter.exceptions import M3terCheckFailure, M3terTransientFailure, to_airflow_failure
from airflow_provider_m3ter.links import M3terConsoleLink, link_task_to_console
from airflow_provider_m3ter.manual_runs import IntervalTemplatesGuard
from airflow_provider_m3ter.triggers.base import error_from_dict

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_m3ter.hooks.m3ter import M3terHook

__all__ = ["M3terBaseSensor", "default_deferrable"]

# the triggerer's own timeout fires only if the trigger's deadline event somehow does not
_DEFER_TIMEOUT_GRACE = 120.0


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from the Airflow configuration (False when unset)."""
    return airflow_conf.getboolean("operators", "default_deferrable", fallback=False)


class M3terBaseSensor(IntervalTemplatesGuard, BaseSensorOperator):
    """Base of the m3ter sensors; subclasses provide :meth:`check` and :meth:`build_trigger`.

    :param m3ter_conn_id: the Airflow connection to m3ter (templated).
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``. The outcome is the same in every mode.
    :param poke_interval: seconds between checks (every mode).
    :param kwargs: the ``BaseSensorOperator`` arguments (``timeout``, ``mode``, ``soft_fail`` ...).
    """

    template_fields: Sequence[str] = ("m3ter_conn_id",)
    operator_extra_links = (M3terConsoleLink(),)
    ui_color = "#d8ecf3"
    #: the Console section the link points at (``client.jobs`` kind names)
    console_kind: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        m3ter_conn_id: str = "m3ter_default",
        deferrable: bool | None = None,
        poke_interval: timedelta | float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.m3ter_conn_id = m3ter_conn_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self._linked: str | None = None

    # -- what subclasses provide ---------------------------------------------------------------

    def check(self, client: Any, context: Context) -> CheckResult:
        """One check through an ``M3terClient``; the only place that decides the outcome."""
        raise NotImplementedError

    def build_trigger(self, context: Context, deadline: float) -> BaseTrigger:
        """The trigger that runs the same check asynchronously until ``deadline`` (epoch seconds)."""
        raise NotImplementedError

    def prepare(self, context: Context) -> None:
        """Validate and normalize rendered arguments before the first check (override as needed)."""

    def xcom_value(self, result: CheckResult) -> Any:
        """What a successful sensor returns as XCom: the check's details."""
        return dict(result.detail)

    # -- shared machinery ----------------------------------------------------------------------

    def _hook(self) -> M3terHook:
        from airflow_provider_m3ter.hooks.m3ter import M3terHook

        return M3terHook(m3ter_conn_id=self.m3ter_conn_id)

    def conclude(self, result: CheckResult, context: Context) -> PokeReturnValue:
        """Apply a check's answer: keep waiting, succeed with its details, or raise its failure.

        :param result: the check's answer (from ``poke`` or from the trigger's event).
        :param context: the task context (for the Console link).
        """
        if result.detail.get("id"):
            self._link(context, self.console_kind or result.detail.get("kind"), result.detail["id"])
        if result.state == "failed":
            raise M3terCheckFailure(result)
        self.report(result)
        if result.state == "pending":
            return PokeReturnValue(False)
        return PokeReturnValue(True, self.xcom_value(result))

    def report(self, result: CheckResult) -> None:
        """Log a check's answer (one line per check)."""
        self.log.info("%s", result.message)

    def link_target(self) -> tuple[str | None, str | None]:
        """The Console kind and id to link to before the first check (override as needed)."""
        return self.console_kind, None

    def _link(self, context: Context, kind: Any, entity_id: Any = None) -> None:
        """Store the Console link for ``kind`` (and ``entity_id`` once known), once per target."""
        key = f"{kind}:{entity_id}"
        if not kind or self._linked == key:
            return
        try:
            settings = self._hook().get_client().settings
        except Exception as exc:  # a link is a convenience: never fail the wait for it
            self.log.debug("no m3ter Console link: %s", exc)
            return
        link_task_to_console(context, settings, str(kind), entity_id, log=self.log)
        self._linked = key

    def poke(self, context: Context) -> PokeReturnValue:
        """Run the check once through the hook's client."""
        hook = self._hook()
        try:
            with hook.translate_errors():
                result = self.check(hook.get_client(), context)
        except M3terTransientFailure as failure:
            self.log.warning("m3ter stayed unavailable for this check (%s); checking again later", failure)
            return PokeReturnValue(False)
        return self.conclude(result, context)

    def execute(self, context: Context) -> Any:
        """Poke (or reschedule) until done; in deferrable mode check once, then defer."""
        self.prepare(context)
        # link before the first check: the task's extra link is read even if it ends early
        self._link(context, *self.link_target())
        if not self.deferrable:
            return super().execute(context)
        try:
            # a job that already finished needs no round trip through the triggerer
            first = self.poke(context)
        except AirflowFailException as exc:
            self._skip_if_soft(exc)
            raise
        if first.is_done:
            return first.xcom_value
        deadline = time.time() + self.timeout
        self.defer(
            trigger=self.build_trigger(context, deadline),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + _DEFER_TIMEOUT_GRACE),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: the same outcome ``poke`` would have reached.

        :param context: the task context.
        :param event: the trigger's event payload (see :mod:`airflow_provider_m3ter.triggers.base`).
        """
        if event is None:
            # resumed without the trigger's answer (the deferral was interrupted): start the wait again
            self.log.warning("Resumed without a trigger event; checking again")
            return self.execute(context)
        status = event.get("status")
        if status == "done":
            outcome = self.conclude(CheckResult.from_dict(event["result"]), context)
            if not outcome.is_done:
                raise AirflowException(f"the trigger ended while the check was still pending: {event!r}")
            return outcome.xcom_value
        if status == "timeout":
            raise AirflowSensorTimeout(f"Sensor has timed out: {event.get('message')}")
        if status == "error":
            error = error_from_dict(event["error"])
            raise to_airflow_failure(error) from error
        raise AirflowException(f"unexpected trigger event: {event!r}")

    def _skip_if_soft(self, exc: BaseException) -> None:
        """Mirror ``BaseSensorOperator``: ``soft_fail``/``never_fail`` turn a failure into a skip."""
        if self.soft_fail or getattr(self, "never_fail", False):
            raise AirflowSkipException(f"Skipping: {exc}") from exc
