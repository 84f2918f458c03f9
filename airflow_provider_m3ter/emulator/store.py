"""In-memory entity collections with m3ter's list semantics (newest first, ``nextToken`` paging)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from airflow_provider_m3ter.emulator.errors import ApiError, bad_request, not_found


def now_iso(moment: float | None = None) -> str:
    """An ISO-8601 UTC timestamp with milliseconds, as m3ter writes them.

    :param moment: epoch seconds (default: now).
    """
    when = datetime.now(timezone.utc) if moment is None else datetime.fromtimestamp(moment, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def new_id() -> str:
    """A fresh entity id (a UUID, as m3ter uses)."""
    return str(uuid.uuid4())


def parse_page_size(raw: str | None, maximum: int = 100, default: int = 10) -> int:
    """Validate the ``pageSize`` query parameter.

    :param raw: the parameter as received (None when absent).
    :param maximum: the largest page the endpoint allows.
    :param default: the page size used when the parameter is absent.
    """
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        raise bad_request(f"pageSize: must be an integer between 1 and {maximum}, got {raw!r}") from None
    if not 1 <= size <= maximum:
        raise bad_request(f"pageSize: must be between 1 and {maximum}, got {size}")
    return size


def multi_values(params: Iterable[tuple[str, str]], name: str) -> list[str] | None:
    """Collect a list parameter given as repeated keys (``codes=a&codes=b``).

    m3ter's spec declares these filters ``style: form, explode: true``: every value is one whole item,
    so a comma belongs to the item (a meter code may be ``api,calls``) and is never a separator.

    :param params: the query parameters as (key, value) pairs.
    :param name: the parameter to collect.
    """
    values: list[str] | None = None
    for key, value in params:
        if key == name:
            values = values or []
            if value:
                values.append(value)
    return values


class EntityStore:
    """One kind of entity (meters, accounts ...) kept in creation order.

    :param kind: the m3ter entity name used in messages, for example ``Meter``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.items: dict[str, dict[str, Any]] = {}
        self.sequence: dict[str, int] = {}
        self._next_seq = 1

    def add(self, entity: dict[str, Any]) -> dict[str, Any]:
        """Store a new entity (which must carry an ``id``) as the newest one.

        :param entity: the entity as it will be returned.
        """
        self.items[entity["id"]] = entity
        self.sequence[entity["id"]] = self._next_seq
        self._next_seq += 1
        return entity

    def get(self, entity_id: str) -> dict[str, Any]:
        """Return the entity or raise a 404.

        :param entity_id: the id asked for.
        """
        try:
            return self.items[entity_id]
        except KeyError:
            raise not_found(self.kind, entity_id) from None

    def replace(self, entity: dict[str, Any]) -> dict[str, Any]:
        """Replace a stored entity in place (keeps its position in the list order).

        :param entity: the new version, with the same ``id``.
        """
        self.items[entity["id"]] = entity
        return entity

    def delete(self, entity_id: str) -> dict[str, Any]:
        """Remove and return the entity, or raise a 404.

        :param entity_id: the id to delete.
        """
        entity = self.get(entity_id)
        del self.items[entity_id]
        del self.sequence[entity_id]
        return entity

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Every entity for which ``predicate`` is true, oldest first.

        :param predicate: the filter.
        """
        return [entity for entity in self.items.values() if predicate(entity)]

    def page(
        self,
        page_size: int,
        next_token: str | None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """One page of a list call: ``{"data": [...], "nextToken"?: ...}``, newest first.

        The token names the last entity returned, so creating entities between pages never
        repeats or skips one.

        :param page_size: the largest number of entities to return.
        :param next_token: the token from the previous page (None for the first page).
        :param predicate: an optional filter applied before paging.
        """
        below = self._decode_token(next_token) if next_token else None
        chosen: list[dict[str, Any]] = []
        more = False
        for entity_id in reversed(self.items):
            seq = self.sequence[entity_id]
            if below is not None and seq >= below:
                continue
            entity = self.items[entity_id]
            if predicate is not None and not predicate(entity):
                continue
            if len(chosen) == page_size:
                more = True
                break
            chosen.append(entity)
        result: dict[str, Any] = {"data": chosen}
        if more:
            result["nextToken"] = self._encode_token(self.sequence[chosen[-1]["id"]])
        return result

    def _encode_token(self, seq: int) -> str:
        return base64.urlsafe_b64encode(f"{self.kind}:{seq}".encode()).decode().rstrip("=")

    def _decode_token(self, token: str) -> int:
        try:
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            kind, _, seq = text.partition(":")
            if kind != self.kind:
                raise ValueError(kind)
            return int(seq)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, f"nextToken: {token!r} is not a valid token for this list") from None

    def dump(self) -> list[dict[str, Any]]:
        """Every entity, oldest first (for snapshots)."""
        return list(self.items.values())

    def load(self, entities: list[dict[str, Any]]) -> None:
        """Replace the contents with ``entities`` (oldest first), as saved by :meth:`dump`.

        :param entities: the saved entities.
        """
        self.items.clear()
        self.sequence.clear()
        self._next_seq = 1
        for entity in entities:
            self.add(entity)
