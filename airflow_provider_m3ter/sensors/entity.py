"""Sensor that waits for an m3ter entity with a given code to exist and meet conditions."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_m3ter.client.jobs import CheckResult, check_entity, entity_problems, get_entity_kind
from airflow_provider_m3ter.sensors.base import M3terBaseSensor
from airflow_provider_m3ter.triggers.entity import M3terEntityTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["M3terEntitySensor"]


class M3terEntitySensor(M3terBaseSensor):
    """Wait until a meter, account, product, aggregation or plan with ``code`` exists.

    Optionally it must also meet conditions, all JSON-friendly so the deferrable trigger carries
    them: ``required_fields`` (for a meter, data or derived fields such as ``"measure.requests"``;
    for other kinds, dotted attribute paths), ``min_version`` and ``where`` (dotted path -> value
    equality, e.g. ``{"customFields.region": "eu"}``). An entity that never appears or never
    qualifies ends in the sensor timeout. Returns (XCom) ``{"kind", "code", "id", "version"}``.

    :param entity_kind: ``"meter"``, ``"account"``, ``"product"``, ``"aggregation"``,
        ``"compound_aggregation"``, ``"counter"`` or ``"plan"`` (templated).
    :param code: the entity's code (templated).
    :param required_fields: fields that must be present (templated).
    :param min_version: the entity's ``version`` must be at least this.
    :param where: equality conditions on the entity's fields (templated).
    :param poke_interval: seconds between checks (default 60).
    :param kwargs: :class:`~airflow_provider_m3ter.sensors.base.M3terBaseSensor` arguments.
    """

    template_fields: Sequence[str] = ("m3ter_conn_id", "entity_kind", "code", "required_fields", "where")

    def __init__(
        self,
        *,
        entity_kind: str,
        code: str,
        required_fields: Sequence[str] = (),
        min_version: int | None = None,
        where: Mapping[str, Any] | None = None,
        poke_interval: timedelta | float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.entity_kind = entity_kind
        self.code = code
        self.required_fields = required_fields
        self.min_version = min_version
        self.where = where

    def prepare(self, context: Context) -> None:
        """Validate the rendered kind, code and conditions (a bad condition fails before any call)."""
        self.entity_kind = get_entity_kind(str(self.entity_kind).strip()).name
        self.code = str(self.code).strip()
        if isinstance(self.required_fields, str):
            self.required_fields = [part.strip() for part in self.required_fields.split(",") if part.strip()]
        self.required_fields = [str(item) for item in self.required_fields or ()]
        if isinstance(self.where, str):  # a template rendered to text
            self.where = json.loads(self.where) if self.where.strip() else None
        if self.where is not None and not isinstance(self.where, Mapping):
            raise ValueError(
                f"{self.task_id}: where must be a mapping of field path to value, got {self.where!r}"
            )
        self.where = dict(self.where) if self.where else None
        try:
            json.dumps(self.where)
        except TypeError as exc:
            raise ValueError(f"{self.task_id}: where must hold JSON values only ({exc})") from None
        self.min_version = int(self.min_version) if self.min_version is not None else None
        # exercise the condition code once on an empty entity so malformed input fails early
        entity_problems(self.entity_kind, {}, required_fields=self.required_fields, where=self.where)

    def link_target(self) -> tuple[str | None, str | None]:
        """The entity kind's Console section until the entity is found."""
        return self.entity_kind, None

    def check(self, client: Any, context: Context) -> CheckResult:
        """Look the entity up once and check the conditions."""
        return check_entity(
            client,
            self.entity_kind,
            self.code,
            required_fields=self.required_fields,
            min_version=self.min_version,
            where=self.where,
        )

    def build_trigger(self, context: Context, deadline: float) -> M3terEntityTrigger:
        """The entity trigger with this sensor's arguments."""
        return M3terEntityTrigger(
            entity_kind=self.entity_kind,
            code=self.code,
            required_fields=list(self.required_fields),
            min_version=self.min_version,
            where=self.where,
            m3ter_conn_id=self.m3ter_conn_id,
            deadline=deadline,
            poll_interval=self.poke_interval,
        )
