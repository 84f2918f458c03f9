"""Config API: meters, accounts, aggregations, products and plans under ``/organizations/{orgId}/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from airflow_provider_m3ter.emulator.errors import bad_request
from airflow_provider_m3ter.emulator.ingest import NUMERIC_CATEGORIES
from airflow_provider_m3ter.emulator.state import EmulatorState
from airflow_provider_m3ter.emulator.store import multi_values, parse_page_size
from airflow_provider_m3ter.emulator.web import (
    check_body,
    json_response,
    read_json,
    require_version,
    state_of,
)

router = APIRouter(prefix="/organizations/{orgId}")
Predicate = Callable[[dict[str, Any]], bool]


def list_filter(request: Request, *names: str) -> Predicate | None:
    """A predicate for the list filters present in the query (``codes``, ``ids``, ``productId`` ...).

    :param request: the list request.
    :param names: the query parameters this list supports; each filters the same-named field
        (``codes`` -> ``code``, ``ids`` -> ``id``).
    """
    params = request.query_params.multi_items()
    wanted: list[tuple[str, set[str]]] = []
    for name in names:
        values = multi_values(params, name)
        if values is not None:
            field = {"codes": "code", "ids": "id"}.get(name, name)
            wanted.append((field, set(values)))
    if not wanted:
        return None
    return lambda entity: all(entity.get(field) in values for field, values in wanted)


def list_page(request: Request, store: str, *filters: str, maximum: int = 100) -> Response:
    """Answer a list call: filters, ``pageSize`` and ``nextToken``.

    :param request: the list request.
    :param store: the entity collection name.
    :param filters: the filter parameters the endpoint supports.
    :param maximum: the largest ``pageSize`` the endpoint allows.
    """
    query = request.query_params
    size = parse_page_size(query.get("pageSize"), maximum)
    page = state_of(request).stores[store].page(size, query.get("nextToken"), list_filter(request, *filters))
    return json_response(page)


def unique_code(state: EmulatorState, store: str, code: str, kind: str, own_id: str | None = None) -> None:
    """Refuse a code another entity of the same kind already has (400).

    :param state: the emulator state.
    :param store: the entity collection name.
    :param code: the requested code.
    :param kind: the entity name for the message.
    :param own_id: the entity being updated (its own code does not clash).
    """
    for entity in state.stores[store].items.values():
        if entity.get("code") == code and entity["id"] != own_id:
            raise bad_request(f"code: a {kind} with the code {code!r} already exists (id {entity['id']})")


# ---- meters ---------------------------------------------------------------------------------
def check_meter(state: EmulatorState, body: Any, own_id: str | None = None) -> dict[str, Any]:
    """Validate a meter body (schema, then m3ter's rules) and return the fields to store.

    :param state: the emulator state.
    :param body: the decoded request body.
    :param own_id: the meter being updated, if any.
    """
    meter = check_body(body, "MeterRequest")
    fields = [*meter["dataFields"], *meter["derivedFields"]]
    seen: set[str] = set()
    for index, item in enumerate(fields):
        where = (
            f"dataFields[{index}]"
            if index < len(meter["dataFields"])
            else (f"derivedFields[{index - len(meter['dataFields'])}]")
        )
        if item["code"] in seen:
            raise bad_request(f"{where}.code: {item['code']!r} is used by more than one field of the meter")
        seen.add(item["code"])
        if item["category"] in NUMERIC_CATEGORIES and not item.get("unit"):
            raise bad_request(f"{where}.unit: is required for {item['category']} fields")
    product_id = meter.get("productId")
    if product_id and product_id not in state.stores["products"].items:
        raise bad_request(f"productId: no product has the id {product_id!r}")
    unique_code(state, "meters", meter["code"], "Meter", own_id)
    return meter


def aggregations_using(state: EmulatorState, meter_id: str) -> list[dict[str, Any]]:
    """Aggregations built on a meter.

    :param state: the emulator state.
    :param meter_id: the meter's id.
    """
    return state.stores["aggregations"].find(lambda agg: agg["meterId"] == meter_id)


@router.get("/meters")
async def list_meters(request: Request) -> Response:
    """List meters, newest first; filters ``codes``, ``ids``, ``productId``.

    :param request: the incoming request.
    """
    return list_page(request, "meters", "codes", "ids", "productId")


@router.post("/meters")
async def create_meter(request: Request) -> Response:
    """Create a meter.

    :param request: the incoming request.
    """
    state = state_of(request)
    meter = check_meter(state, await read_json(request))
    return json_response(state.stores["meters"].add(state.stamp_new(meter)))


@router.get("/meters/{id}")
async def get_meter(request: Request, id: str) -> Response:
    """Retrieve a meter by id.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["meters"].get(id))


@router.put("/meters/{id}")
async def update_meter(request: Request, id: str) -> Response:
    """Replace a meter (``version`` must match); refuse to drop fields aggregations use.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    state = state_of(request)
    stored = state.stores["meters"].get(id)
    body = await read_json(request)
    meter = check_meter(state, body, own_id=id)
    require_version(body, stored, "Meter")
    codes = {item["code"] for item in [*meter["dataFields"], *meter["derivedFields"]]}
    for aggregation in aggregations_using(state, id):
        if aggregation["targetField"] not in codes:
            raise bad_request(
                f"Request breaks configuration: field {aggregation['targetField']!r} is the target "
                f"field of aggregation {aggregation['id']} and cannot be removed"
            )
    return json_response(state.stores["meters"].replace(state.stamp_update(stored, meter)))


@router.delete("/meters/{id}")
async def delete_meter(request: Request, id: str) -> Response:
    """Delete a meter that no aggregation uses.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    state = state_of(request)
    state.stores["meters"].get(id)
    used = aggregations_using(state, id)
    if used:
        raise bad_request(f"Request breaks configuration: aggregation {used[0]['id']} uses this meter")
    return json_response(state.stores["meters"].delete(id))


# ---- accounts -------------------------------------------------------------------------------
@router.get("/accounts")
async def list_accounts(request: Request) -> Response:
    """List accounts, newest first; filters ``codes``, ``ids``.

    :param request: the incoming request.
    """
    return list_page(request, "accounts", "codes", "ids")


@router.post("/accounts")
async def create_account(request: Request) -> Response:
    """Create an account.

    :param request: the incoming request.
    """
    state = state_of(request)
    account = check_body(await read_json(request), "AccountRequest")
    unique_code(state, "accounts", account["code"], "Account")
    return json_response(state.add_account(account))


@router.get("/accounts/{id}")
async def get_account(request: Request, id: str) -> Response:
    """Retrieve an account by id.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["accounts"].get(id))


# ---- aggregations ---------------------------------------------------------------------------
@router.get("/aggregations")
async def list_aggregations(request: Request) -> Response:
    """List aggregations, newest first; filters ``codes``, ``ids``, ``meterId`` (emulator extra).

    :param request: the incoming request.
    """
    return list_page(request, "aggregations", "codes", "ids", "meterId")


@router.post("/aggregations")
async def create_aggregation(request: Request) -> Response:
    """Create an aggregation whose ``targetField`` is a field of its meter.

    :param request: the incoming request.
    """
    state = state_of(request)
    aggregation = check_body(await read_json(request), "AggregationRequest")
    meter = state.stores["meters"].items.get(aggregation["meterId"])
    if meter is None:
        raise bad_request(f"meterId: no meter has the id {aggregation['meterId']!r}")
    codes = {item["code"] for item in [*meter["dataFields"], *meter["derivedFields"]]}
    for field in [aggregation["targetField"], *aggregation.get("segmentedFields", [])]:
        if field not in codes:
            raise bad_request(f"targetField: {field!r} is not a field of meter {meter['code']!r}")
    if aggregation.get("code"):
        unique_code(state, "aggregations", aggregation["code"], "Aggregation")
    return json_response(state.stores["aggregations"].add(state.stamp_new(aggregation)))


@router.get("/aggregations/{id}")
async def get_aggregation(request: Request, id: str) -> Response:
    """Retrieve an aggregation by id.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["aggregations"].get(id))


@router.delete("/aggregations/{id}")
async def delete_aggregation(request: Request, id: str) -> Response:
    """Delete an aggregation.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["aggregations"].delete(id))


# ---- products and plans ---------------------------------------------------------------------
@router.get("/products")
async def list_products(request: Request) -> Response:
    """List products, newest first (``pageSize`` up to 200); filter ``ids``.

    :param request: the incoming request.
    """
    return list_page(request, "products", "ids", "codes", maximum=200)


@router.post("/products")
async def create_product(request: Request) -> Response:
    """Create a product.

    :param request: the incoming request.
    """
    state = state_of(request)
    product = check_body(await read_json(request), "ProductRequest")
    unique_code(state, "products", product["code"], "Product")
    return json_response(state.stores["products"].add(state.stamp_new(product)))


@router.get("/products/{id}")
async def get_product(request: Request, id: str) -> Response:
    """Retrieve a product by id.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["products"].get(id))


@router.get("/plans")
async def list_plans(request: Request) -> Response:
    """List plans, newest first; filters ``ids``, ``productId``, ``accountId``, ``codes`` (emulator extra).

    :param request: the incoming request.
    """
    return list_page(request, "plans", "ids", "codes", "productId", "accountId")


@router.post("/plans")
async def create_plan(request: Request) -> Response:
    """Create a plan.

    :param request: the incoming request.
    """
    state = state_of(request)
    plan = check_body(await read_json(request), "PlanRequest")
    unique_code(state, "plans", plan["code"], "Plan")
    return json_response(state.stores["plans"].add(state.stamp_new(plan)))


@router.get("/plans/{id}")
async def get_plan(request: Request, id: str) -> Response:
    """Retrieve a plan by id.

    :param request: the incoming request.
    :param id: the entity or job id from the path.
    """
    return json_response(state_of(request).stores["plans"].get(id))
