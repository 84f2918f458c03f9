"""Meters as code: plan a sync of meter definitions against m3ter, then apply it safely.

Plain Python (no Airflow). :func:`plan_meter_sync` only reads (one list call per 100 codes, or the
whole meter list when deleting what the definitions omit) and says field by field what would
change; :func:`apply_meter_plan` writes: creates, then updates (whole entity, current ``version``,
one re-read and re-plan on a version conflict), then deletes. Definitions come from
:mod:`airflow_provider_m3ter.client.meter_definitions`; the comparison from
:mod:`airflow_provider_m3ter.client.meter_diff`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_m3ter.client.errors import (
    M3terBreaksConfigurationError,
    M3terError,
    M3terFinalError,
)
from airflow_provider_m3ter.client.meter_definitions import (
    DefinitionProblem,
    MeterDefinition,
    MeterDefinitionError,
)
from airflow_provider_m3ter.client.meter_diff import (
    comparable_meter,
    desired_comparable,
    diff_meter,
    request_body,
)

log = logging.getLogger(__name__)

#: m3ter's list endpoints take at most 100 codes per filter and 100 meters per page.
CODES_PER_LIST_CALL = 100
PAGE_SIZE = 100
PRODUCT_PAGE_SIZE = 200
CREATE, UPDATE, UNCHANGED, DELETE, BLOCKED = "create", "update", "unchanged", "delete", "blocked"
ACTIONS = (CREATE, UPDATE, UNCHANGED, DELETE, BLOCKED)


class MeterApi(Protocol):
    """The two client calls a sync needs (``M3terClient`` provides them)."""

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None) -> Any:
        """Send one Config API call and return its decoded JSON."""

    def paginate(self, path: str, *, params: Any = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Yield every item of a list endpoint, following ``nextToken``."""


class MeterSyncError(M3terFinalError):
    """A meter sync cannot go on, and running it again unchanged cannot help.

    :param message: what happened, naming the meter(s), field(s) and aggregation(s) involved.
    :param cause: the m3ter error behind it, whose status, method and path are kept.
    """

    def __init__(self, message: str, *, cause: M3terError | None = None) -> None:
        super().__init__(
            getattr(cause, "status", None),
            getattr(cause, "method", None),
            getattr(cause, "path", None),
            message,
            getattr(cause, "attempts", 0),
        )

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message,), self.__dict__)


class MeterDeleteBlockedError(MeterSyncError):
    """``delete_missing`` would delete meters that aggregations still use; nothing was written."""


class MeterSyncConflictError(MeterSyncError):
    """A meter kept changing concurrently: its version moved again after one re-read and re-plan."""


class MeterBreaksConfigurationError(MeterSyncError, M3terBreaksConfigurationError):
    """m3ter refused an update that removes fields aggregations use ("request breaks configuration")."""


# --------------------------------------------------------------------------- plan


@dataclass
class MeterChange:
    """What a sync does to one meter.

    :param code: the meter code.
    :param action: ``create``, ``update``, ``unchanged``, ``delete`` or ``blocked`` (a delete that
        aggregations prevent).
    :param changes: the field-level differences (update), or a one-line description.
    :param definition: the desired state (None for meters that are not in the definitions).
    :param product_id: the definition's resolved product id.
    :param current: the meter as m3ter holds it (None for a create).
    :param aggregations: for ``blocked``: the aggregations that use the meter.
    """

    code: str
    action: str
    changes: list[str] = field(default_factory=list)
    definition: MeterDefinition | None = None
    product_id: str | None = None
    current: dict[str, Any] | None = None
    aggregations: list[str] = field(default_factory=list)


@dataclass
class MeterPlan:
    """The outcome of :func:`plan_meter_sync`: one :class:`MeterChange` per meter involved.

    :param changes: in definition order, then meters not in the definitions (``delete_missing``).
    :param delete_missing: whether meters absent from the definitions were considered for deletion.
    """

    changes: list[MeterChange]
    delete_missing: bool = False

    def of(self, action: str) -> list[MeterChange]:
        """The changes with one action (``create``, ``update``, ...)."""
        return [c for c in self.changes if c.action == action]

    @property
    def writes(self) -> int:
        """How many write calls applying the plan takes (when nothing changes concurrently)."""
        return sum(1 for c in self.changes if c.action in (CREATE, UPDATE, DELETE))

    def summary(self) -> dict[str, int]:
        """Counts per action."""
        return {action: len(self.of(action)) for action in ACTIONS}

    def to_dict(self) -> dict[str, Any]:
        """A compact, JSON-ready form for XCom: codes per action, diffs for updates."""
        return {
            "summary": self.summary(),
            "create": [c.code for c in self.of(CREATE)],
            "update": {c.code: c.changes for c in self.of(UPDATE)},
            "unchanged": [c.code for c in self.of(UNCHANGED)],
            "delete": [c.code for c in self.of(DELETE)],
            "blocked": {c.code: c.aggregations for c in self.of(BLOCKED)},
        }

    def format_table(self, max_unchanged: int = 20) -> str:
        """The plan as a readable table for task logs; unchanged meters share one row."""
        counts = self.summary()
        head = ", ".join(f"{counts[a]} {a}" for a in ACTIONS)
        rows: list[tuple[str, str, str]] = []
        for change in self.changes:
            if change.action == UNCHANGED:
                continue
            for i, line in enumerate(change.changes or ["-"]):
                rows.append((change.action if i == 0 else "", change.code if i == 0 else "", line))
        unchanged = [c.code for c in self.of(UNCHANGED)]
        if unchanged:
            more = len(unchanged) - max_unchanged
            shown = ", ".join(unchanged[:max_unchanged]) + (f" and {more} more" if more > 0 else "")
            rows.append((UNCHANGED, f"({len(unchanged)} meters)", shown))
        width_a = max([len("ACTION"), *(len(r[0]) for r in rows)])
        width_m = max([len("METER"), *(len(r[1]) for r in rows)])
        lines = [f"Meter sync plan: {head}", f"{'ACTION':<{width_a}}  {'METER':<{width_m}}  CHANGES"]
        lines += [f"{a:<{width_a}}  {m:<{width_m}}  {text}" for a, m, text in rows]
        return "\n".join(lines)


def read_meters_by_code(client: MeterApi, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Current meters with these codes: one filtered list call per 100 codes, never a GET per meter."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(codes), CODES_PER_LIST_CALL):
        chunk = list(codes[start : start + CODES_PER_LIST_CALL])
        wanted = set(chunk)
        for meter in client.paginate("meters", params={"codes": chunk}, page_size=PAGE_SIZE):
            if meter.get("code") in wanted:
                found[meter["code"]] = meter
    return found


def _resolve_products(client: MeterApi, definitions: Sequence[MeterDefinition]) -> dict[str, str]:
    """Product code -> id for the product codes the definitions use (one filtered list call)."""
    wanted = sorted({d.product for d in definitions if d.product})
    ids: dict[str, str] = {}
    for start in range(0, len(wanted), CODES_PER_LIST_CALL):
        chunk = wanted[start : start + CODES_PER_LIST_CALL]
        # The spec documents only an ``ids`` filter; the codes are checked here as well, so a
        # server that ignores ``codes`` (and pages through every product) still gives the right map.
        params = {"codes": chunk}
        for product in client.paginate("products", params=params, page_size=PRODUCT_PAGE_SIZE):
            if product.get("code") in chunk:
                ids[product["code"]] = product["id"]
    missing = [d for d in definitions if d.product and d.product not in ids]
    if missing:
        raise MeterDefinitionError(
            [
                DefinitionProblem(d.source, d.code, "product", f"no product with code {d.product!r} in m3ter")
                for d in missing
            ]
        )
    return ids


def aggregations_by_meter(client: MeterApi, meter_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Aggregations that use each of these meters, looked up by ``meterId``."""
    wanted = sorted(set(meter_ids))
    found: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(wanted), CODES_PER_LIST_CALL):
        chunk = wanted[start : start + CODES_PER_LIST_CALL]
        # ``meterId`` is not in the published spec either: matched here too, so ignoring it is safe.
        for aggregation in client.paginate("aggregations", params={"meterId": chunk}, page_size=PAGE_SIZE):
            if aggregation.get("meterId") in chunk:
                found.setdefault(aggregation["meterId"], []).append(aggregation)
    return found


def _aggregation_label(aggregation: Mapping[str, Any]) -> str:
    name = aggregation.get("code") or aggregation.get("name") or aggregation.get("id")
    return f"'{name}' (targetField {aggregation.get('targetField')})"


def plan_meter_sync(
    client: MeterApi, definitions: Sequence[MeterDefinition], *, delete_missing: bool = False
) -> MeterPlan:
    """Compare the definitions with m3ter and say what a sync would do, without writing anything.

    :param client: an ``M3terClient`` (or anything with its ``request`` and ``paginate``).
    :param definitions: validated definitions, e.g. from ``load_meter_definitions``.
    :param delete_missing: also plan deleting meters that are not in the definitions. This reads
        every meter of the organization (paginated) and, if any would be deleted, the aggregations
        list, so that a meter an aggregation uses is marked ``blocked`` instead.
    :raises MeterDefinitionError: a ``product`` code does not exist in m3ter.
    """
    product_ids = _resolve_products(client, definitions)
    if delete_missing:
        current = {m["code"]: m for m in client.paginate("meters", page_size=PAGE_SIZE)}
    else:
        current = read_meters_by_code(client, [d.code for d in definitions])
    changes: list[MeterChange] = []
    for meter in definitions:
        product_id = product_ids[meter.product] if meter.product else meter.product_id
        existing = current.get(meter.code)
        if existing is None:
            fields = f"{len(meter.data_fields)} data field(s), {len(meter.derived_fields)} derived field(s)"
            scope = f"product {meter.product or product_id}" if product_id else "global"
            changes.append(
                MeterChange(meter.code, CREATE, [f"new meter: {fields}, {scope}"], meter, product_id)
            )
            continue
        diff = diff_meter(comparable_meter(existing), desired_comparable(meter, product_id))
        action = UPDATE if diff else UNCHANGED
        changes.append(MeterChange(meter.code, action, diff, meter, product_id, existing))
    if delete_missing:
        wanted = {d.code for d in definitions}
        extra = [current[code] for code in sorted(current) if code not in wanted]
        used = aggregations_by_meter(client, [m["id"] for m in extra]) if extra else {}
        for other in extra:
            labels = [_aggregation_label(a) for a in used.get(other["id"], [])]
            action, reason = (
                (BLOCKED, "not in the definitions, but used by aggregation(s) ")
                if labels
                else (DELETE, "not in the definitions")
            )
            changes.append(
                MeterChange(
                    other["code"], action, [reason + ", ".join(labels)], current=other, aggregations=labels
                )
            )
    return MeterPlan(changes, delete_missing)


# --------------------------------------------------------------------------- apply


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


def _reread(client: MeterApi, code: str, current: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The meter as m3ter holds it now (None if it does not exist)."""
    if current is None:
        return read_meters_by_code(client, [code]).get(code)
    return client.request("GET", f"meters/{current['id']}")


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
                _aggregation_label(aggregation)
            )
    if by_field:
        details = "; ".join(f"{f} is targeted by aggregation(s) {', '.join(a)}" for f, a in by_field.items())
    else:  # m3ter saw a use this look-up cannot (e.g. a segment): say all we know
        used_by = ", ".join(map(_aggregation_label, aggregations)) or "(none found)"
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
                client.request("PUT", f"meters/{current['id']}", json=body)
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
        client.request("DELETE", f"meters/{meter_id}")
    except M3terFinalError as error:
        if error.status != 400:
            raise
        labels = [_aggregation_label(a) for a in aggregations_by_meter(client, [meter_id]).get(meter_id, [])]
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
