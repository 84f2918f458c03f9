"""Meter sync is idempotent for every code m3ter accepts, commas and all, against the emulator.

m3ter's spec declares the ``codes`` list filter ``style: form, explode: true`` (repeated parameters,
each value one whole code), and the emulator follows it. Whether the real service also splits a
value on commas is not documented, so the client never relies on the filter for such codes: it
scans the list and matches exactly. ``SplittingServer`` plays a server that does split, to show the
sync stays right either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_m3ter.client.jobs import check_entity
from airflow_provider_m3ter.client.meter_apply import apply_meter_plan
from airflow_provider_m3ter.client.meter_definitions import load_meter_definitions
from airflow_provider_m3ter.client.meter_sync import plan_meter_sync, read_meters_by_code
from tests.meters.conftest import meter_writes

LEGAL_CODES = [
    "api,calls",
    "a,,b",
    ",lead",
    "trail,",
    ",",
    "a, b",
    "x%2Cy",
    "a&codes=b",
    "naïve,€",
    "a;b",
    "50%",
]


def _meter(code: str, product: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "code": code,
        "name": f"Meter {code}",
        "dataFields": [{"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "{request}"}],
    }
    if product:
        raw["product"] = product
    return raw


class SplittingServer:
    """The client, but list filters behave as if the server split each value on commas."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.filtered_calls = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self._client.request(*args, **kwargs)

    def paginate(self, path: str, *, params: Any = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        params = dict(params or {})
        codes = params.pop("codes", None)
        if codes is None:
            yield from self._client.paginate(path, params=params, page_size=page_size)
            return
        self.filtered_calls += 1
        values = [codes] if isinstance(codes, str) else list(codes)
        split = {part for value in values for part in value.split(",") if part}
        for item in self._client.paginate(path, params=params, page_size=page_size):
            if item.get("code") in split:
                yield item


@pytest.mark.parametrize("splitting", [False, True], ids=["spec-server", "comma-splitting-server"])
def test_sync_of_meters_with_commas_in_their_codes_is_idempotent(m3ter_emulator, client, splitting) -> None:
    api = SplittingServer(client) if splitting else client
    raw = [_meter(code) for code in [*LEGAL_CODES, "api", "calls", "lead"]]
    first = plan_meter_sync(api, load_meter_definitions(raw))
    assert first.summary()["create"] == len(raw)
    apply_meter_plan(api, first)
    writes = meter_writes(m3ter_emulator.stats())
    for _ in range(2):
        again = plan_meter_sync(api, load_meter_definitions(raw))
        assert again.summary()["unchanged"] == len(raw), again.render()
        apply_meter_plan(api, again)
    assert meter_writes(m3ter_emulator.stats()) == writes  # nothing written after the first sync
    found = read_meters_by_code(api, LEGAL_CODES)
    assert sorted(found) == sorted(LEGAL_CODES)
    assert all(found[code]["code"] == code for code in LEGAL_CODES)


def test_a_code_with_a_comma_never_matches_its_parts(m3ter_emulator, client) -> None:
    apply_meter_plan(
        client, plan_meter_sync(client, load_meter_definitions([_meter("api"), _meter("calls")]))
    )
    assert read_meters_by_code(client, ["api,calls"]) == {}
    plan = plan_meter_sync(client, load_meter_definitions([_meter("api,calls")]))
    assert plan.summary()["create"] == 1


def test_products_with_commas_in_their_codes_resolve(m3ter_emulator, client) -> None:
    for code in ("pro,plus", "pro"):
        client.request("POST", "products", json={"name": code, "code": code})
    for api in (client, SplittingServer(client)):
        plan = plan_meter_sync(api, load_meter_definitions([_meter("m1", product="pro,plus")]))
        [change] = plan.changes
        pro_plus = next(p for p in client.paginate("products") if p["code"] == "pro,plus")
        assert change.product_id == pro_plus["id"]


@pytest.mark.parametrize("code", ["api,calls", ",lead", "a,,b"])
def test_the_entity_check_finds_a_meter_whose_code_has_a_comma(m3ter_emulator, client, code) -> None:
    apply_meter_plan(client, plan_meter_sync(client, load_meter_definitions([_meter(code), _meter("api")])))
    for api in (client, SplittingServer(client)):
        result = check_entity(api, "meter", code)
        assert result.state == "succeeded", result.message
        assert result.detail["code"] == code


def test_client_lookups_find_codes_with_commas(m3ter_emulator, client) -> None:
    apply_meter_plan(
        client, plan_meter_sync(client, load_meter_definitions([_meter(c) for c in LEGAL_CODES]))
    )
    found = client.find_meters_by_codes([*LEGAL_CODES, "missing"])
    assert sorted(found) == sorted(LEGAL_CODES)
    assert client.find_meter_by_code("a,,b")["code"] == "a,,b"
