"""The one error type the emulator's handlers raise; it becomes m3ter's ``{"message": ...}`` body."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error response in m3ter's shape.

    :param status: the HTTP status code to answer with.
    :param message: the text of the ``message`` field.
    :param headers: extra response headers (for example ``Retry-After``).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    """A 400 Bad Request with ``message``.

    :param message: what is wrong, naming the field.
    """
    return ApiError(400, message)


def not_found(kind: str, entity_id: str) -> ApiError:
    """A 404 for an entity of ``kind`` that does not exist.

    :param kind: the m3ter entity name, for example ``Meter``.
    :param entity_id: the id that was asked for.
    """
    return ApiError(404, f"{kind} not found with id {entity_id!r}")
