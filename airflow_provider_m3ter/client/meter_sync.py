"""Meters as code: plan a sync of meter definitions against m3ter (applying it is in ``meter_apply``).

Plain Python (no Airflow). :func:`plan_meter_sync` only reads (one list call per 100 codes, or the
whole meter list when deleting what the definitions omit) and says field by field what would
change; :func:`~airflow_provider_m3ter.client.meter_apply.apply_meter_plan` writes: creates, then
updates (whole entity, current ``version``, one re-read and re-plan on a version conflict), then
deletes. Definitions come from
:mod:`airflow_provider_m3ter.client.meter_definitions`; the comparison from
:mod:`airflow_provider_m3ter.client.meter_diff`.
"""

from __future__ import annotations

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
)

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


def _by_code(client: MeterApi, path: str, codes: Sequence[str], page_size: int) -> dict[str, dict[str, Any]]:
    """Entities of ``path`` whose code is exactly one of ``codes``.

    Plain codes go in the ``codes`` filter (repeated parameters, one filtered list call per 100
    codes); a code with a comma (``api,calls``, ``,lead``: legal in m3ter) is matched by one scan
    of the whole list, so a server that splits filter values on commas cannot hide it. Equality
    decides in both cases: the filter only narrows the list.
    """
    plain = list(dict.fromkeys(code for code in codes if "," not in code))
    odd = {code for code in codes if "," in code}
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(plain), CODES_PER_LIST_CALL):
        chunk = plain[start : start + CODES_PER_LIST_CALL]
        wanted = set(chunk)
        for item in client.paginate(path, params={"codes": chunk}, page_size=page_size):
            if item.get("code") in wanted:
                found[item["code"]] = item
    if odd:
        for item in client.paginate(path, page_size=page_size):
            if item.get("code") in odd:
                found[item["code"]] = item
    return found


def read_meters_by_code(client: MeterApi, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Current meters with these codes: filtered list calls, never a GET per meter (see :func:`_by_code`)."""
    return _by_code(client, "meters", codes, PAGE_SIZE)


def _resolve_products(client: MeterApi, definitions: Sequence[MeterDefinition]) -> dict[str, str]:
    """Product code -> id for the product codes the definitions use (one filtered list call)."""
    wanted = sorted({d.product for d in definitions if d.product})
    # The spec documents only an ``ids`` filter; the codes are matched exactly as well, so a
    # server that ignores ``codes`` (and pages through every product) still gives the right map.
    ids = {
        code: product["id"]
        for code, product in _by_code(client, "products", wanted, PRODUCT_PAGE_SIZE).items()
    }
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


def aggregation_label(aggregation: Mapping[str, Any]) -> str:
    """How messages name an aggregation: its code (or name, or id) and the field it targets."""
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
            labels = [aggregation_label(a) for a in used.get(other["id"], [])]
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
