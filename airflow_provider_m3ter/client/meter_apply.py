"""Meters as code, second half: apply a planned sync safely.

Plain Python (no Airflow). :func:`apply_meter_plan` writes what
:func:`~airflow_provider_m3ter.client.meter_sync.plan_meter_sync` planned: creates, then updates
(whole entity, current ``version``, one re-read and re-plan on a version conflict), then deletes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_m3ter.client.errors import M3terBreaksConfigurationError, M3terError, M3terFinalError
from airflow_provider_m3ter.client.meter_definitions import MeterDefinition
from airflow_provider_m3ter.client.meter_diff import (
    comparable_meter,
    desired_comparable,
    diff_meter,
    request_body,
)
from airflow_provider_m3ter.client.meter_sync import (
    BLOCKED,
    CREATE,
    DELETE,
    UPDATE,
    MeterApi,
    MeterBreaksConfigurationError,
    MeterChange,
    MeterDeleteBlockedError,
    MeterPlan,
    MeterSyncConflictError,
    aggregation_label,
    aggregations_by_meter,
    read_meters_by_code,
)
from airflow_provider_m3ter.client.paths import uuid_segment

__all__ = ["MeterSyncResult", "apply_meter_plan"]

# the logger name these lines had before applying moved out of meter_sync; log filters may use it
log = logging.getLogger("airflow_provider_m3ter.client.meter_sync")


@dataclass
class MeterSyncResult:
    """What :func:`apply_meter_plan` did.

    :param created: codes of the meters created.
    :param updated: codes of the meters updated.
    :param deleted: codes of the meters deleted.
    :param replanned: codes whose write met a concurrent change and were re-read and re-planned once.
    :param converged: codes that needed no write after the re-plan (someone made the same change).
    """

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    replanned: list[str] = field(default_factory=list)
    converged: list[str] = field(default_factory=list)

    @property
    def writes(self) -> int:
        """Successful write calls made."""
        return len(self.created) + len(self.updated) + len(self.deleted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for XCom."""
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "replanned": self.replanned,
            "converged": self.converged,
            "writes": self.writes,
        }


def _may_be_conflict(error: M3terFinalError, creating: bool) -> bool:
    """Could this refusal come from a concurrent change (stale version, or the code now taken)?"""
    if creating:
        return error.status in (400, 409)
    return error.status == 409 or (error.status == 400 and "version" in (error.message or "").lower())


def _meter_id(meter: Mapping[str, Any]) -> str:
    """The meter's id from m3ter's answer, checked and encoded for a path (a UUID)."""
    return uuid_segment(meter.get("id"), f"id of meter {meter.get('code')!r} in m3ter's answer")


def _reread(client: MeterApi, code: str, current: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The meter as m3ter holds it now (None if it does not exist)."""
    if current is None:
        return read_meters_by_code(client, [code]).get(code)
    return client.request("GET", f"meters/{_meter_id(current)}")


def _explain_breaks(
    client: MeterApi, meter: MeterDefinition, current: Mapping[str, Any], error: M3terError
) -> MeterBreaksConfigurationError:
    """Name the meter, each removed field that aggregations target, and those aggregations."""
    desired = {f["code"] for f in (*meter.data_fields, *meter.derived_fields)}
    removed = {
        f.get("code"): f"{kind}[{f.get('code')}]"
        for kind in ("dataFields", "derivedFields")
        for f in current.get(kind) or []
        if f.get("code") not in desired
    }
    aggregations = aggregations_by_meter(client, [current["id"]]).get(current["id"], [])
    by_field: dict[str, list[str]] = {}
    for aggregation in aggregations:
        if aggregation.get("targetField") in removed:
            by_field.setdefault(removed[aggregation["targetField"]], []).append(
                aggregation_label(aggregation)
            )
    if by_field:
        details = "; ".join(f"{f} is targeted by aggregation(s) {', '.join(a)}" for f, a in by_field.items())
    else:  # m3ter saw a use this look-up cannot (e.g. a segment): say all we know
        used_by = ", ".join(map(aggregation_label, aggregations)) or "(none found)"
        details = (
            f"it removes {', '.join(removed.values()) or '(no field)'}; the meter's aggregations: {used_by}"
        )
    message = (
        f"m3ter refused to update meter '{meter.code}' because the change breaks configuration: "
        f"{details}. Keep the field(s), or change or delete those aggregations first. "
        f"m3ter said: {error.message}"
    )
    return MeterBreaksConfigurationError(message, cause=error)


def _write(client: MeterApi, change: MeterChange, result: MeterSyncResult) -> None:
    """Create or update one meter; on a concurrent change re-read, re-plan and retry once."""
    meter = change.definition
    assert meter is not None  # creates and updates always carry their definition
    current = change.current
    for attempt in (1, 2):
        try:
            if current is None:
                client.request("POST", "meters", json=request_body(meter, change.product_id))
                result.created.append(meter.code)
            else:
                body = request_body(meter, change.product_id, current)
                client.request("PUT", f"meters/{_meter_id(current)}", json=body)
                result.updated.append(meter.code)
            log.info("%s meter %s", "Created" if current is None else "Updated", meter.code)
            return
        except M3terBreaksConfigurationError as error:
            if current is None:
                raise
            raise _explain_breaks(client, meter, current, error) from error
        except M3terFinalError as error:
            if not _may_be_conflict(error, creating=current is None):
                raise
            if attempt == 2:
                raise MeterSyncConflictError(
                    f"meter '{meter.code}' changed again while it was being updated (re-read once at "
                    f"version {current and current.get('version')}); run the sync again. m3ter said: "
                    f"{error.message}",
                    cause=error,
                ) from error
            fresh = _reread(client, meter.code, current)
            if fresh is None:
                raise  # the create failed and no meter holds the code: not a concurrent change
            log.warning("Meter %s changed concurrently (%s); re-planning it once", meter.code, error.message)
            result.replanned.append(meter.code)
            current = fresh
            if not diff_meter(comparable_meter(current), desired_comparable(meter, change.product_id)):
                result.converged.append(meter.code)
                return


def _delete(client: MeterApi, change: MeterChange, result: MeterSyncResult) -> None:
    """Delete one meter; a refusal because an aggregation appeared meanwhile names that aggregation."""
    assert change.current is not None
    meter_id = change.current["id"]
    try:
        client.request("DELETE", f"meters/{_meter_id(change.current)}")
    except M3terFinalError as error:
        if error.status != 400:
            raise
        labels = [aggregation_label(a) for a in aggregations_by_meter(client, [meter_id]).get(meter_id, [])]
        raise MeterDeleteBlockedError(
            f"m3ter refused to delete meter '{change.code}', used by aggregation(s) "
            f"{', '.join(labels) or '(none found)'}. m3ter said: {error.message}",
            cause=error,
        ) from error
    result.deleted.append(change.code)
    log.info("Deleted meter %s", change.code)


def apply_meter_plan(client: MeterApi, plan: MeterPlan) -> MeterSyncResult:
    """Carry out a plan: creates, then updates, then deletes.

    Deletes come last so that nothing is removed unless every create and update succeeded (a
    renamed meter exists under its new code before the old one goes). A plan with ``blocked``
    deletes is refused before any write: the definitions and the aggregations disagree, and a
    half-applied sync would be harder to reason about than none.

    :param client: an ``M3terClient`` (or anything with its ``request`` and ``paginate``).
    :param plan: from :func:`plan_meter_sync`, made just before.
    :raises MeterDeleteBlockedError: the plan deletes meters that aggregations use (nothing written).
    :raises MeterBreaksConfigurationError: m3ter refused an update that removes aggregated fields.
    :raises MeterSyncConflictError: a meter changed concurrently twice in a row.
    """
    blocked = plan.of(BLOCKED)
    if blocked:
        details = "; ".join(f"'{c.code}' is used by {', '.join(c.aggregations)}" for c in blocked)
        raise MeterDeleteBlockedError(
            f"delete_missing would delete {len(blocked)} meter(s) that aggregations still use, so nothing "
            f"was changed: {details}. Add the meter(s) to the definitions, or delete or re-point the "
            "aggregations first."
        )
    result = MeterSyncResult()
    for change in (*plan.of(CREATE), *plan.of(UPDATE)):
        _write(client, change, result)
    for change in plan.of(DELETE):
        _delete(client, change, result)
    return result
