"""Comparing a meter definition with the meter m3ter holds, and the body that makes them equal.

Plain Python (no Airflow, no I/O). Both sides are normalized first (server attributes dropped,
absent and empty optional values made equal, fields keyed by code because m3ter gives their order
no meaning), so a definition that m3ter already matches shows no difference at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_m3ter.client.meter_definitions import MeterDefinition

#: Response-only attributes: never compared, never sent back.
SERVER_FIELDS = frozenset({"id", "version", "dtCreated", "dtLastModified", "createdBy", "lastModifiedBy"})
_FIELD_ATTRS = ("category", "name", "unit", "calculation")


def comparable_meter(meter: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize a meter (m3ter response or request body) into the form that plans compare.

    Server attributes are dropped, absent/empty optional values become None or empty, and fields are
    keyed by code because their order carries no meaning in m3ter.
    """

    def fields(items: Any) -> dict[str, dict[str, Any]]:
        out = {}
        for item in items or []:
            attrs = {a: item.get(a) for a in _FIELD_ATTRS if item.get(a) not in (None, "")}
            out[item.get("code")] = attrs
        return out

    return {
        "name": meter.get("name"),
        "productId": meter.get("productId") or None,
        "groupId": meter.get("groupId") or None,
        "dataFields": fields(meter.get("dataFields")),
        "derivedFields": fields(meter.get("derivedFields")),
        "customFields": dict(meter.get("customFields") or {}),
    }


def desired_comparable(meter: MeterDefinition, product_id: str | None) -> dict[str, Any]:
    """The comparable form of a definition; keys it does not manage are left out (never diffed)."""
    out = comparable_meter(
        {
            "name": meter.name,
            "productId": product_id,
            "groupId": meter.group_id,
            "dataFields": meter.data_fields,
            "derivedFields": meter.derived_fields,
            "customFields": meter.custom_fields,
        }
    )
    if not meter.manages_group:
        del out["groupId"]
    if meter.custom_fields is None:
        del out["customFields"]
    return out


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def diff_meter(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """Field-level differences between two comparable meters, e.g. ``dataFields[x].unit: "a" -> "b"``.

    :param current: :func:`comparable_meter` of what m3ter holds.
    :param desired: :func:`desired_comparable` of the definition; only its keys are compared.
    """
    changes: list[str] = []
    for key in ("name", "productId", "groupId"):
        if key in desired and current.get(key) != desired[key]:
            changes.append(f"{key}: {_show(current.get(key))} -> {_show(desired[key])}")
    for kind in ("dataFields", "derivedFields"):
        old, new = current.get(kind, {}), desired[kind]
        for code in sorted(old.keys() | new.keys(), key=str):
            if code not in old:
                changes.append(f"{kind}[{code}]: added")
            elif code not in new:
                changes.append(f"{kind}[{code}]: removed")
            else:
                for attr in _FIELD_ATTRS:
                    if old[code].get(attr) != new[code].get(attr):
                        before, after = _show(old[code].get(attr)), _show(new[code].get(attr))
                        changes.append(f"{kind}[{code}].{attr}: {before} -> {after}")
    if "customFields" in desired:
        old, new = current.get("customFields", {}), desired["customFields"]
        for name in sorted(old.keys() | new.keys()):
            if old.get(name) != new.get(name) or (name in old) != (name in new):
                changes.append(f"customFields.{name}: {_show(old.get(name))} -> {_show(new.get(name))}")
    return changes


def request_body(
    meter: MeterDefinition, product_id: str | None, current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Create/Update Meter body: the whole entity, so a PUT loses nothing the spec leaves out.

    :param meter: the definition.
    :param product_id: the resolved product id (None: a global meter).
    :param current: the meter as m3ter holds it (an update); its version and any attribute the
        definition does not manage (custom fields, group, unknown newer attributes) are carried over.
    """
    body = {k: v for k, v in (current or {}).items() if k not in SERVER_FIELDS}
    body.update(
        code=meter.code,
        name=meter.name,
        dataFields=[dict(f) for f in meter.data_fields],
        derivedFields=[dict(f) for f in meter.derived_fields],
    )
    for key, value, managed in (
        ("productId", product_id, True),
        ("groupId", meter.group_id, meter.manages_group),
        ("customFields", meter.custom_fields, meter.custom_fields is not None),
    ):
        if managed and value is None:
            body.pop(key, None)
        elif managed:
            body[key] = value
    if current is not None:
        body["version"] = current.get("version")
    return body
