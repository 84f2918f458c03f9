"""``M3terRetryPolicy``: Airflow 3.3 task retries that know which m3ter errors are worth retrying.

Airflow 3.3 lets a task carry a ``retry_policy`` that sees the real exception in the worker and
decides: fail now, retry after a chosen delay, or fall back to the task's own settings. This
policy applies m3ter's rules:

* **FAIL at once** on a final error: a 4XX that the same call will hit again (400 bad request or
  "request breaks configuration", 403, 404 ...), a payload m3ter refuses as too large, or invalid
  connection settings. Retrying would only repeat the failure (and, for ingest, re-bill nothing but
  waste the task's retries).
* **RETRY** a transient error (5XX, 429, network faults that outlasted the client's own attempts),
  waiting the ``Retry-After`` m3ter sent when it sent one, else an exponential schedule:
  ``first_delay``, then ``first_delay * multiplier`` and so on, capped at ``max_delay``.
* **DEFAULT** (the task's ``retry_delay`` / ``retry_exponential_backoff``) for anything else.

The error may be the raised exception itself or anywhere on its ``__cause__`` / ``__context__``
chain, so a task that wraps a client error in its own exception is still classified correctly.
Both the client's errors and the hook's :mod:`~airflow_provider_m3ter.exceptions` count.

The policy can shorten but never extend a task's tries: ``retries`` stays the ceiling.

Example::

    from datetime import timedelta

    from airflow.sdk import task

    from airflow_provider_m3ter.hooks.m3ter import M3terHook
    from airflow_provider_m3ter.retry_policy import M3terRetryPolicy

    @task(retries=4, retry_policy=M3terRetryPolicy(first_delay=timedelta(seconds=30)))
    def list_meters() -> int:
        return sum(1 for _ in M3terHook().paginate("meters"))

On Airflow before 3.3 ``airflow.sdk`` has no ``RetryPolicy``. The class is still importable there
(so shared DAG code does not break) but it is inert: :meth:`M3terRetryPolicy.evaluate` returns
``None`` and Airflow's operators of that version do not accept a ``retry_policy`` argument at all.
Check :data:`RETRY_POLICY_SUPPORTED` before passing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_m3ter.compat import RETRY_POLICY_SUPPORTED, RetryDecision, RetryPolicy

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

__all__ = ["RETRY_POLICY_SUPPORTED", "M3terRetryPolicy"]

_SERIALIZED_TYPE = "airflow_provider_m3ter.retry_policy.M3terRetryPolicy"


def _chain(exception: BaseException) -> Iterator[BaseException]:
    """The exception, then its causes/contexts as Python would print them (cycle-safe)."""
    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None


def find_m3ter_error(exception: BaseException) -> tuple[str, BaseException] | None:
    """Find the nearest m3ter error on an exception's chain and classify it.

    :param exception: what the task raised.
    :return: ``("final", error)`` or ``("transient", error)`` for the first m3ter error found
        (client or hook class), or None when no m3ter error is involved.
    """
    # imported here so that parsing a DAG that merely builds a policy stays cheap
    from airflow_provider_m3ter.client.errors import M3terError
    from airflow_provider_m3ter.exceptions import M3terFailure

    for link in _chain(exception):
        if isinstance(link, (M3terError, M3terFailure)):
            # the error decided its retryability once; an error without a retry rule is final
            return ("transient" if link.retryable else "final"), link
    return None


class M3terRetryPolicy(RetryPolicy):
    """Fail at once on m3ter's final errors; retry transient ones after ``Retry-After`` or a back-off.

    :param first_delay: delay before the first retry of a transient error without ``Retry-After``.
    :param multiplier: factor applied to the delay for each further try (1 keeps it constant).
    :param max_delay: upper bound of any delay this policy chooses, ``Retry-After`` included.
    :param honour_retry_after: use m3ter's ``Retry-After`` (seconds) when the error carries one.
    """

    def __init__(
        self,
        first_delay: timedelta = timedelta(seconds=30),
        multiplier: float = 2.0,
        max_delay: timedelta = timedelta(minutes=10),
        honour_retry_after: bool = True,
    ) -> None:
        if first_delay < timedelta(0):
            raise ValueError(f"M3terRetryPolicy: first_delay must not be negative, got {first_delay}")
        if multiplier < 1:
            raise ValueError(f"M3terRetryPolicy: multiplier must be >= 1, got {multiplier}")
        if max_delay < first_delay:
            raise ValueError(
                f"M3terRetryPolicy: max_delay ({max_delay}) must be at least first_delay ({first_delay})"
            )
        self.first_delay = first_delay
        self.multiplier = multiplier
        self.max_delay = max_delay
        self.honour_retry_after = honour_retry_after

    def __repr__(self) -> str:
        return (
            f"M3terRetryPolicy(first_delay={self.first_delay!r}, multiplier={self.multiplier!r}, "
            f"max_delay={self.max_delay!r}, honour_retry_after={self.honour_retry_after!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, M3terRetryPolicy) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.serialize().items())))

    def delay_for(self, try_number: int, retry_after: float | None = None) -> timedelta:
        """The delay before the next try after try ``try_number`` failed transiently.

        :param try_number: the try that just failed (1-based, as Airflow counts).
        :param retry_after: seconds m3ter asked to wait, if any.
        """
        if self.honour_retry_after and retry_after is not None and retry_after >= 0:
            # cap before building the timedelta: a huge Retry-After would overflow it
            delay = timedelta(seconds=min(retry_after, self.max_delay.total_seconds()))
        else:
            # cap the exponent too, so a very late try cannot overflow timedelta
            exponent = min(max(try_number - 1, 0), 64)
            seconds = self.first_delay.total_seconds() * self.multiplier**exponent
            delay = timedelta(seconds=min(seconds, self.max_delay.total_seconds()))
        return min(delay, self.max_delay)

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        """Decide FAIL, RETRY (with a delay) or DEFAULT for the exception a task raised.

        :param exception: what the task raised.
        :param try_number: the try that failed (1-based).
        :param max_tries: the task's configured maximum; the policy cannot exceed it.
        :param context: the task context (unused).
        :return: the decision; ``None`` on Airflow before 3.3 (inert).
        """
        if not RETRY_POLICY_SUPPORTED:  # pragma: no cover - Airflow < 3.3
            return None  # type: ignore[return-value]
        found = find_m3ter_error(exception)
        if found is None:
            return RetryDecision.default()
        kind, error = found
        summary = _summary(error)
        if kind == "final":
            return RetryDecision.fail(reason=f"m3ter final error, retrying cannot help: {summary}")
        retry_after = getattr(error, "retry_after", None)
        delay = self.delay_for(try_number, retry_after)
        source = "Retry-After" if self.honour_retry_after and retry_after is not None else "back-off"
        return RetryDecision.retry(
            delay=delay,
            reason=f"m3ter transient error, retrying in {delay.total_seconds():g} s ({source}): {summary}",
        )

    def serialize(self) -> dict[str, Any]:
        """JSON-friendly form (Airflow's DAG serialization itself stores only a has-policy flag)."""
        return {
            "__type": _SERIALIZED_TYPE,
            "first_delay": self.first_delay.total_seconds(),
            "multiplier": self.multiplier,
            "max_delay": self.max_delay.total_seconds(),
            "honour_retry_after": self.honour_retry_after,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> M3terRetryPolicy:
        """Rebuild a policy from :meth:`serialize` output.

        :param data: the dict :meth:`serialize` returned.
        """
        kind = data.get("__type", _SERIALIZED_TYPE)
        if kind != _SERIALIZED_TYPE:
            raise ValueError(f"M3terRetryPolicy.deserialize: unexpected __type {kind!r}")
        return cls(
            first_delay=timedelta(seconds=float(data["first_delay"])),
            multiplier=float(data["multiplier"]),
            max_delay=timedelta(seconds=float(data["max_delay"])),
            honour_retry_after=bool(data["honour_retry_after"]),
        )


def _summary(error: BaseException) -> str:
    """The error's one-line description (masked), shortened to fit Airflow's 500-char reason."""
    from airflow_provider_m3ter.exceptions import describe_error

    error = getattr(error, "error", error)  # a hook failure wraps the client error
    text = describe_error(error)
    return text if len(text) <= 400 else text[:397] + "..."
