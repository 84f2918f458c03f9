"""Airflow-facing exceptions: what a task raises when a call to m3ter fails.

The plain-Python client raises its own error taxonomy (``airflow_provider_m3ter.client.errors``).
:class:`~airflow_provider_m3ter.hooks.m3ter.M3terHook` turns those into the two classes here, at one
boundary, so that Airflow's retry machinery sees the right thing:

* :class:`M3terFinalFailure` is an ``AirflowFailException``: retrying the task cannot help (a 4XX,
  an over-size payload, invalid connection settings), so Airflow fails it at once, whatever
  ``retries`` says.
* :class:`M3terTransientFailure` is a plain ``AirflowException``: the client already spent its own
  attempts on a 5XX, 429 or network fault, and a later task try may well succeed.

Both keep the client error as ``.error`` and as ``__cause__``.

:class:`M3terCheckFailure` is what a sensor (or the file-upload operator) raises when the thing it
waited for ended badly: it is an ``AirflowFailException`` too, since retrying cannot change a
finished job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_m3ter.compat import AirflowException, AirflowFailException, redact

if TYPE_CHECKING:
    from airflow_provider_m3ter.client.errors import M3terError
    from airflow_provider_m3ter.client.jobs import CheckResult

__all__ = ["M3terCheckFailure", "M3terFailure", "M3terFinalFailure", "M3terTransientFailure"]


def _redact(text: str) -> str:
    """Replace every secret the masker knows (API secret, tokens) with ``***``."""
    return redact(text)


def describe_error(error: BaseException) -> str:
    """One line saying what failed: for a client error, status, method, path, m3ter's message, attempts.

    :param error: a client error (``M3terError``, whose text already names all of those) or any
        other exception (then prefixed with its class name).
    :return: the description with every secret registered with Airflow's masker shown as ``***``.
    """
    text = str(error)
    if getattr(error, "method", None) is None and getattr(error, "status", None) is None:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return _redact(text)


class M3terFailure(AirflowException):
    """Common base of the provider's Airflow-facing failures (never raised itself).

    :param error: the client error this failure translates.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(describe_error(error))
        self.error = error
        # ``raise ... from error`` sets this too; set it here so a bare raise keeps the chain
        self.__cause__ = error

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuild from the client error, not from the formatted message
        return (type(self), (self.error,))

    @property
    def status(self) -> int | None:
        """HTTP status of the failed call, or None (network fault, invalid settings)."""
        return getattr(self.error, "status", None)

    @property
    def retry_after(self) -> float | None:
        """Seconds m3ter asked to wait (``Retry-After``) on the last attempt, or None."""
        return getattr(self.error, "retry_after", None)

    @property
    def retryable(self) -> bool:
        """The client error's own verdict: whether a later try may succeed."""
        return bool(getattr(self.error, "retryable", False))


class M3terFinalFailure(M3terFailure, AirflowFailException):
    """A call to m3ter failed in a way retrying cannot fix; the task fails without further tries.

    Raised for ``M3terFinalError`` (400, 403, 404 ... including "request breaks configuration"),
    ``M3terPayloadTooLargeError`` that reached the task, and ``M3terConfigurationError``.

    :param error: the client error this failure translates.
    """


class M3terTransientFailure(M3terFailure):
    """A call to m3ter kept failing with 5XX, 429 or network errors; a later task try may succeed.

    :param error: the client's ``M3terTransientError`` (its ``retry_after`` is kept).
    """


class M3terCheckFailure(AirflowFailException):
    """What the sensor waited for ended badly: a failed job, failed rows, validation failures.

    Fails the task without retries. :attr:`result` keeps the check's JSON-friendly details.

    :param result: the failed check.
    """

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


def to_airflow_failure(error: M3terError) -> M3terFailure:
    """Map one client error to the Airflow-facing failure a task should raise.

    A retryable error (``error.retryable``: 5XX, 429, network, deadline) becomes
    :class:`M3terTransientFailure`; everything else (final HTTP errors, payload too large,
    configuration errors, an unknown ``M3terError``) becomes :class:`M3terFinalFailure`.

    :param error: the client error.
    """
    if getattr(error, "retryable", False):
        return M3terTransientFailure(error)
    return M3terFinalFailure(error)
