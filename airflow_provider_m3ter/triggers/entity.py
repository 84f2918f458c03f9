"""Trigger that waits for an m3ter entity (meter, account, ...) with a code to exist and qualify."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_m3ter.client.jobs import CheckResult, check_entity, get_entity_kind
from airflow_provider_m3ter.triggers.base import M3terPollingTrigger

__all__ = ["M3terEntityTrigger"]


class M3terEntityTrigger(M3terPollingTrigger):
    """Wait until an entity with ``code`` exists and meets the conditions (``client.jobs.check_entity``).

    :param entity_kind: ``"meter"``, ``"account"``, ``"product"``, ``"aggregation"``, ``"plan"`` ...
    :param code: the entity's code.
    :param required_fields: fields that must be present (meters: ``"measure.requests"``).
    :param min_version: the entity's ``version`` must be at least this.
    :param where: dotted path -> value equality conditions (JSON values).
    :param m3ter_conn_id: the Airflow connection to m3ter.
    :param deadline: absolute end of the wait, epoch seconds.
    :param poll_interval: seconds between checks.
    """

    def __init__(
        self,
        *,
        entity_kind: str,
        code: str,
        required_fields: Sequence[str] = (),
        min_version: int | None = None,
        where: Mapping[str, Any] | None = None,
        m3ter_conn_id: str,
        deadline: float,
        poll_interval: float = 60.0,
    ) -> None:
        super().__init__(m3ter_conn_id=m3ter_conn_id, deadline=deadline, poll_interval=poll_interval)
        self.entity_kind = get_entity_kind(entity_kind).name
        self.code = code
        self.required_fields = list(required_fields)
        self.min_version = min_version
        self.where = dict(where or {})

    def check(self, client: Any) -> CheckResult:
        """Look the entity up once and check the conditions."""
        return check_entity(
            client,
            self.entity_kind,
            self.code,
            required_fields=self.required_fields,
            min_version=self.min_version,
            where=self.where,
        )

    def check_kwargs(self) -> dict[str, Any]:
        """Kind, code and conditions."""
        return {
            "entity_kind": self.entity_kind,
            "code": self.code,
            "required_fields": list(self.required_fields),
            "min_version": self.min_version,
            "where": dict(self.where),
        }
