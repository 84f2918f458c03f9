"""The client's error taxonomy: what failed, where, and whether retrying could ever help.

Every error carries the HTTP ``status`` (``None`` for network failures), the ``method`` and URL
``path`` of the call, m3ter's own ``message``, how many HTTP ``attempts`` were made and the
server's ``retry_after`` hint in seconds. None of them ever carries headers or tokens.
"""

from __future__ import annotations

import re
from http import HTTPStatus

from airflow_provider_m3ter.client.redaction import redact

__all__ = [
    "M3terBreaksConfigurationError",
    "M3terConfigurationError",
    "M3terError",
    "M3terFinalError",
    "M3terPayloadTooLargeError",
    "M3terTransientError",
    "error_for_status",
    "reason_phrase",
]

# m3ter documents this 400 as "request breaks configuration"; match its wording loosely.
_BREAKS_CONFIGURATION = re.compile(r"break(s|ing)?\s+(the\s+)?configuration", re.IGNORECASE)


def reason_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status (``Not Found``), or '' for a non-standard code.

    :param status: an HTTP status code.
    """
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class M3terError(Exception):
    """Base class of every error raised by the m3ter client.

    :attr:`retryable` is decided here, once, by the error's class: the client's retry rules, the
    hook, ``M3terRetryPolicy``, the sensors and the triggers all read it instead of re-classifying.

    :param status: HTTP status code of the last response, or ``None`` when no response arrived.
    :param method: HTTP method of the call, e.g. ``GET``.
    :param path: URL path of the call (no host, no query string), e.g. ``/organizations/<org>/meters``.
    :param message: m3ter's ``message`` from the error body, or a description of the failure.
    :param attempts: how many HTTP requests were sent for this call.
    :param retry_after: the server's ``Retry-After`` in seconds, when it sent one.
    :param note: an extra sentence for humans, such as why retrying stopped.
    """

    def __init__(
        self,
        status: int | None,
        method: str | None,
        path: str | None,
        message: str,
        attempts: int = 1,
        retry_after: float | None = None,
        *,
        note: str | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        # a server may echo what it was sent: no registered secret survives into the message
        self.message = redact(message)
        self.attempts = attempts
        self.retry_after = retry_after
        self.note = note
        super().__init__(str(self))

    #: whether a later attempt of the same call may succeed (5XX, 429, network, deadline); only
    #: :class:`M3terTransientError` says yes
    retryable: bool = False

    def __str__(self) -> str:
        call = f"{self.method} {self.path}" if self.method else (self.path or "request")
        tries = f"{self.attempts} attempt{'' if self.attempts == 1 else 's'}"
        if self.status is None:
            head = f"m3ter request {call} failed after {tries}"
        else:
            reason = reason_phrase(self.status)
            shown = f"{self.status} {reason}" if reason else str(self.status)
            head = f"m3ter returned {shown} for {call} after {tries}"
        text = f"{head}: {self.message}" if self.message else head
        return f"{text} ({self.note})" if self.note else text

    def __reduce__(self) -> tuple[object, ...]:
        # Exception pickling replays ``args``; replay the real constructor arguments instead.
        args = (self.status, self.method, self.path, self.message, self.attempts, self.retry_after)
        return (type(self), args, self.__dict__)


class M3terFinalError(M3terError):
    """A 4XX that the same call can never fix by retrying (400, 403, 404, 409 ...)."""


class M3terBreaksConfigurationError(M3terFinalError):
    """A 400 refusing a change that would break configuration (e.g. removing a field an Aggregation uses)."""


class M3terTransientError(M3terError):
    """5XX, 429, a network failure or the deadline: retries were spent, but a later attempt may succeed."""

    retryable = True


class M3terPayloadTooLargeError(M3terError):
    """413 (or 403 for an over-size ingest body): the caller must shrink the request and try again."""


class M3terConfigurationError(M3terError, ValueError):
    """Invalid client settings (missing org id, insecure URL, ...), raised before any request.

    :param message: what is wrong and where, e.g. ``ClientSettings.config_url: ...``.
    :param field: the name of the offending setting, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(None, None, None, message, attempts=0)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message,), self.__dict__)


def error_for_status(
    status: int,
    method: str,
    path: str,
    message: str,
    attempts: int = 1,
    retry_after: float | None = None,
    *,
    note: str | None = None,
) -> M3terError:
    """Build the error class that matches an HTTP error status and m3ter's message.

    :param status: the HTTP status (>= 400) of the last response.
    :param method: HTTP method of the call.
    :param path: URL path of the call.
    :param message: m3ter's ``message``.
    :param attempts: HTTP requests sent for the call.
    :param retry_after: the parsed ``Retry-After`` in seconds, if any.
    :param note: an extra sentence for humans.
    """
    cls: type[M3terError]
    if status == 413:
        cls = M3terPayloadTooLargeError
    elif status == 429 or status >= 500:
        cls = M3terTransientError
    elif status == 400 and _BREAKS_CONFIGURATION.search(message or ""):
        cls = M3terBreaksConfigurationError
    else:
        cls = M3terFinalError
    return cls(status, method, path, message, attempts, retry_after, note=note)
