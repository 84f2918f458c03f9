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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_m3ter.client.deadline import time_limit
from airflow_provider_m3ter.client.errors import M3terError
from airflow_provider_m3ter.client.jobs import CheckResult
from airflow_provider_m3ter.compat import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    airflow_conf,
)
from airflow_provider_m3ter.exceptions import M3terCheckFailure, M3terFailure, to_airflow_failure
from airflow_provider_m3ter.links import M3terConsoleLink, link_task_to_console
from airflow_provider_m3ter.manual_runs import IntervalTemplatesGuard
from airflow_provider_m3ter.triggers.base import error_from_dict

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_m3ter.hooks.m3ter import M3terHook

__all__ = ["M3terBaseSensor"]

# the triggerer's own timeout fires only if the trigger's deadline event somehow does not
_DEFER_TIMEOUT_GRACE = 120.0


@dataclass(frozen=True)
class WaitLimit:
    """When a wait must end, shared by the sensors (every mode) and ``M3terFileUploadOperator``.

    The deadline is absolute (epoch seconds) and fixed before the first check, so a deferral carries
    it unchanged. Every check runs inside :meth:`bounding`: the client's retries of that check
    (5XX, 429 with or without ``Retry-After``, silence) end by the deadline too.

    :param deadline: end of the wait, epoch seconds.
    :param what: the limit in words for messages, e.g. ``"the sensor's 600 s timeout"``.
    """

    deadline: float
    what: str

    @classmethod
    def start(
        cls,
        seconds: float,
        what: str,
        *,
        started: float | None = None,
        execution_timeout: timedelta | None = None,
    ) -> WaitLimit:
        """The limit of a wait of ``seconds`` that began at ``started``, cut by the task's execution_timeout.

        :param seconds: the wait's own limit (sensor ``timeout``, upload ``wait_timeout``).
        :param what: the wait's limit in words.
        :param started: when the wait began (epoch seconds; the first reschedule in reschedule mode);
            now by default.
        :param execution_timeout: the task's ``execution_timeout``, counted from now (this try).
        """
        now = time.time()
        limit = cls((started if started is not None else now) + float(seconds), what)
        if execution_timeout is not None:
            task_end = now + execution_timeout.total_seconds()
            if task_end < limit.deadline:
                limit = cls(task_end, f"the task's {execution_timeout.total_seconds():g} s execution_timeout")
        return limit

    def left(self) -> float:
        """Seconds until the deadline (negative once passed)."""
        return self.deadline - time.time()

    @contextmanager
    def bounding(self) -> Iterator[None]:
        """Bound every m3ter call inside the block (and its retries) by the time left."""
        with time_limit(self.left(), self.what):
            yield

    def defer_timeout(self) -> timedelta:
        """The deferral's own timeout: the time left plus a grace (the trigger ends first, with its event)."""
        return timedelta(seconds=max(0.0, self.left()) + _DEFER_TIMEOUT_GRACE)


def check_then_defer(
    task: Any,
    limit: WaitLimit,
    check: Callable[[], Any],
    is_done: Callable[[Any], bool],
    trigger: Callable[[float], BaseTrigger],
    timed_out: Callable[[], BaseException],
    *,
    method_name: str = "execute_complete",
    kwargs: dict[str, Any] | None = None,
) -> Any:
    """Deferrable waiting, once for every m3ter task: one check in the worker, then defer to the trigger.

    A retryable failure of that first check (m3ter stayed unavailable within the time left) is
    logged and the wait goes on in the trigger, as it would after any later check.

    :param task: the operator or sensor (its ``defer`` and ``log`` are used).
    :param limit: the wait's limit, computed before this first check.
    :param check: the first check (runs inside ``limit.bounding()``).
    :param is_done: whether the check's answer ends the wait.
    :param trigger: builds the trigger for the absolute deadline.
    :param timed_out: the wait's own timeout failure, raised when the limit passed during the check.
    :param method_name: the method the task resumes in.
    :param kwargs: extra arguments for that method.
    :return: the first check's answer when it ends the wait (else this defers or raises).
    """
    try:
        with limit.bounding():
            first = check()
    except (M3terError, M3terFailure) as error:
        if not error.retryable:
            raise
        task.log.warning("m3ter stayed unavailable for the first check (%s); waiting in the triggerer", error)
    else:
        if is_done(first):
            return first
    if limit.left() <= 0:
        raise timed_out()
    task.defer(
        trigger=trigger(limit.deadline),
        method_name=method_name,
        kwargs=kwargs,
        timeout=limit.defer_timeout(),
    )
    raise AssertionError("defer() returned")  # pragma: no cover - defer always raises


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
        self._m3ter_hook: M3terHook | None = None
        self._limit: WaitLimit | None = None

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
        """This try's hook: one client (one connection pool) for every poke of the try."""
        if self._m3ter_hook is None:
            from airflow_provider_m3ter.hooks.m3ter import M3terHook

            self._m3ter_hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
        return self._m3ter_hook

    def _close_hook(self) -> None:
        """Close this try's client (the try is ending: done, failed, rescheduled or deferred)."""
        hook, self._m3ter_hook = self._m3ter_hook, None
        if hook is not None:
            hook.close()

    def _wait_limit(self, context: Context) -> WaitLimit:
        """The wait's limit: ``timeout`` from the first poke (first reschedule in reschedule mode),
        cut by this try's ``execution_timeout``."""
        started = None
        if self.reschedule and not self.deferrable:
            first = context["ti"].get_first_reschedule_date(context)
            started = first.timestamp() if first else None
        return WaitLimit.start(
            self.timeout,
            f"the sensor's {self.timeout:g} s timeout",
            started=started,
            execution_timeout=self.execution_timeout,
        )

    def _get_next_poke_interval(self, started_at: Any, run_duration: Any, poke_count: int) -> float:
        """Airflow's interval, but never sleeping past the wait's limit (a 60 s interval with 10 s
        left sleeps 10 s, then the sensor times out on time)."""
        interval = float(super()._get_next_poke_interval(started_at, run_duration, poke_count))
        if self._limit is not None:
            # a little past the limit, so that Airflow's own duration check (started a moment later) fires
            interval = min(interval, max(0.0, self._limit.left()) + 0.05)
        return interval

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
        if self._limit is None:
            self._limit = self._wait_limit(context)
        try:
            with hook.translate_errors(), self._limit.bounding():
                result = self.check(hook.get_client(), context)
        except M3terFailure as failure:
            if not failure.retryable:
                raise
            self.log.warning("m3ter stayed unavailable for this check (%s); checking again later", failure)
            outcome = PokeReturnValue(False)
        else:
            outcome = self.conclude(result, context)
        if not outcome.is_done and self._limit.left() <= 0:
            # the limit passed during this check: end now, not after another poke or reschedule
            raise self._timed_out()
        return outcome

    def _timed_out(self) -> AirflowSensorTimeout:
        """The sensor's own timeout failure."""
        what = self._limit.what if self._limit is not None else f"the sensor's {self.timeout:g} s timeout"
        return AirflowSensorTimeout(f"Sensor has timed out: {what} passed")

    def execute(self, context: Context) -> Any:
        """Poke (or reschedule) until done; in deferrable mode check once, then defer.

        One client serves every poke of this try and is closed when the try ends.
        """
        # the wait's limit is fixed before the first check (deferrable mode defers with it)
        self._limit = self._wait_limit(context)
        try:
            self.prepare(context)
            # link before the first check: the task's extra link is read even if it ends early
            self._link(context, *self.link_target())
            if not self.deferrable:
                return super().execute(context)
            try:
                # a job that already finished needs no round trip through the triggerer
                first = check_then_defer(
                    self,
                    self._limit,
                    lambda: self.poke(context),
                    lambda outcome: outcome.is_done,
                    lambda deadline: self.build_trigger(context, deadline),
                    self._timed_out,
                )
            except (AirflowFailException, AirflowSensorTimeout) as exc:
                self._skip_if_soft(exc)
                raise
            return first.xcom_value
        finally:
            self._close_hook()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: the same outcome ``poke`` would have reached.

        :param context: the task context.
        :param event: the trigger's event payload (see :mod:`airflow_provider_m3ter.triggers.base`).
        """
        if event is None:
            # resumed without the trigger's answer (the deferral was interrupted): start the wait again
            self.log.warning("Resumed without a trigger event; checking again")
            return self.execute(context)
        try:
            return self._resume(context, event)
        finally:
            self._close_hook()

    def _resume(self, context: Context, event: dict[str, Any]) -> Any:
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
