"""`/v1/inventory`: levels per SKU and location, adjust, set, transfer, movements, reconcile."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.clock import iso, now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, json_response, read_json, rendered
from stateset_server.core.listing import Field, ListSpec, list_parameters, parse_list_query, read_page
from stateset_server.core.pagination import list_envelope
from stateset_server.inventory import stock
from stateset_server.storage import Row, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

Location = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Quantity = Annotated[int, Meta(ge=-1_000_000_000, le=1_000_000_000)]
Reason = Annotated[str, Meta(max_length=500)]


class AdjustIn(msgspec.Struct, forbid_unknown_fields=True):
    quantity: Quantity  # added to on hand; negative removes
    location: Location = stock.DEFAULT_LOCATION
    reason: Reason | None = None


class SetIn(msgspec.Struct, forbid_unknown_fields=True):
    on_hand: Annotated[int, Meta(ge=0, le=1_000_000_000)]
    location: Location = stock.DEFAULT_LOCATION
    reason: Reason | None = None


class TransferIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, Meta(min_length=1, max_length=128)]
    from_location: Location
    to_location: Location
    quantity: Annotated[int, Meta(ge=1, le=1_000_000_000)]
    reason: Reason | None = None


def _level(level: stock.Level) -> dict[str, Any]:
    return {"location": level.location, "on_hand": level.on_hand, "reserved": level.reserved,
            "available": level.available}  # fmt: skip


def _item(sku: str, found: list[stock.Level]) -> dict[str, Any]:
    return {
        "object": "inventory_item",
        "sku": sku,
        "on_hand": sum(level.on_hand for level in found),
        "reserved": sum(level.reserved for level in found),
        "available": sum(level.available for level in found),
        "locations": [_level(level) for level in found],
    }


def _ok(result: Any) -> tuple[int, Any]:
    return 200, result


async def retrieve_inventory(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    sku = request.path_params["sku"]
    found = await request.app.state.db.read(lambda tx: stock.levels(tx, principal, sku))
    return json_response(_item(sku, found))


async def _change(request: Request, principal: Principal, sku: str, delta_of: Any, location: str, reason: str | None,
                  kind: str) -> Response:  # fmt: skip
    request_id = request.scope.get("request_id")

    async def write(tx: Tx) -> dict[str, Any]:
        delta = await delta_of(tx)
        await stock.adjust(tx, principal, sku=sku, location=location, delta=delta, kind=kind, reason=reason,
                           reference=None, now=now_us(), request_id=request_id)  # fmt: skip
        return _item(sku, await stock.levels(tx, principal, sku))

    idempotency.bind(_ok)
    return rendered(_ok, await request.app.state.db.write(write))


async def adjust_inventory(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, AdjustIn)
    if body.quantity == 0:
        raise ApiError.field("quantity", "must not be zero", expected="a positive or negative whole number", received=0)

    async def delta(_tx: Tx) -> int:
        return body.quantity

    return await _change(request, principal, request.path_params["sku"], delta, body.location, body.reason, "adjust")


async def set_inventory(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, SetIn)
    sku = request.path_params["sku"]

    async def delta(tx: Tx) -> int:
        current = {level.location: level.on_hand for level in await stock.levels(tx, principal, sku)}
        return body.on_hand - current.get(body.location, 0)

    return await _change(request, principal, sku, delta, body.location, body.reason, "set")


async def transfer_inventory(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, TransferIn)
    if body.from_location == body.to_location:
        raise ApiError.field(
            "to_location", "same as from_location", expected="another location", received=body.to_location
        )
    request_id = request.scope.get("request_id")

    async def write(tx: Tx) -> dict[str, Any]:
        await stock.transfer(
            tx, principal, sku=body.sku, source=body.from_location, target=body.to_location,
            quantity=body.quantity, reason=body.reason, now=now_us(), request_id=request_id,
        )  # fmt: skip
        return _item(body.sku, await stock.levels(tx, principal, body.sku))

    idempotency.bind(_ok)
    return rendered(_ok, await request.app.state.db.write(write))


MOVEMENT_LIST = ListSpec(
    table="inventory_movements",
    fields={
        "id": Field("id", "integer", sortable=True),
        "sku": Field("sku", "string"),
        "location": Field("location", "string"),
        "kind": Field("kind", "string"),
        "reference": Field("reference", "string", selective=True),
        "created_at": Field("created_at", "datetime", sortable=True),
    },
    aliases={"created_after": ("created_at", "gt"), "created_before": ("created_at", "lt")},
    search=("reason", "reference"),
    default_sort=("id", "desc"),
)
LEVEL_LIST = ListSpec(
    table="inventory_levels",
    fields={
        "sku": Field("sku", "string", sortable=True),
        "location": Field("location", "string", sortable=True),
        "on_hand": Field("on_hand", "integer", sortable=True),
        "reserved": Field("reserved", "integer", sortable=True),
        "available": Field("(on_hand - reserved)", "integer", sortable=True),
        "updated_at": Field("updated_at", "datetime", sortable=True),
    },
    search=("sku", "location"),
    default_sort=("sku", "asc"),
    id_column="sku || '@' || location",  # a level is one SKU at one location
)


def _movement(row: Row) -> dict[str, Any]:
    return {"object": "inventory_movement", "id": row["id"], "sku": row["sku"], "location": row["location"],
            "kind": row["kind"], "on_hand_delta": row["on_hand_delta"], "reserved_delta": row["reserved_delta"],
            "reason": row["reason"], "reference": row["reference"], "created_at": iso(row["created_at"])}  # fmt: skip


def _level_row(row: Row) -> dict[str, Any]:
    level = stock.Level(row["sku"], row["location"], row["on_hand"], row["reserved"])
    return {"object": "inventory_level", "sku": row["sku"], **_level(level)}


async def list_movements(request: Request, principal: Principal | None) -> Response:
    """The movement ledger of one SKU, newest first, with the shared list conventions."""
    assert principal is not None
    params = QueryParams([*request.query_params.multi_items(), ("sku", request.path_params["sku"])])
    query = parse_list_query(params, MOVEMENT_LIST)

    columns = "id, sku, location, kind, on_hand_delta, reserved_delta, reason, reference, created_at"
    data, pagination = await read_page(request.app.state.db, MOVEMENT_LIST, query, principal, columns, _movement)
    return json_response(list_envelope(request, data, pagination))


async def list_levels(request: Request, principal: Principal | None) -> Response:
    """Stock levels, one row per SKU and location, with the shared list conventions."""
    assert principal is not None
    query = parse_list_query(request.query_params, LEVEL_LIST)

    columns = "sku, location, on_hand, reserved"
    data, pagination = await read_page(request.app.state.db, LEVEL_LIST, query, principal, columns, _level_row)
    return json_response(list_envelope(request, data, pagination))


async def reconcile_inventory(request: Request, principal: Principal | None) -> Response:
    assert principal is not None

    async def write(tx: Tx) -> dict[str, Any]:
        drift = await stock.reconcile(tx, principal, now_us())
        return {"object": "inventory_reconciliation", "drift": drift, "fixed": len(drift)}

    idempotency.bind(_ok)
    return rendered(_ok, await request.app.state.db.write(write))


_ERRORS = ("INSUFFICIENT_INVENTORY", "VALIDATION_ERROR", "INVALID_FIELD_FORMAT")
ROUTES = [
    ApiRoute("GET", "/v1/inventory/{sku}", retrieve_inventory, scope="inventory:read",
             summary="Stock of a SKU per location (on_hand, reserved, available)", tag="Inventory"),
    ApiRoute("GET", "/v1/inventory", list_levels, scope="inventory:read",
             summary="Stock levels per SKU and location", tag="Inventory", query=list_parameters(LEVEL_LIST)),
    ApiRoute("GET", "/v1/inventory/{sku}/movements", list_movements, scope="inventory:read",
             summary="The movement ledger of a SKU (newest first)", tag="Inventory",
             query=list_parameters(MOVEMENT_LIST)),
    ApiRoute("POST", "/v1/inventory/{sku}/adjust", adjust_inventory, scope="inventory:write",
             summary="Add or remove stock on hand at a location", tag="Inventory", request_body=AdjustIn,
             errors=_ERRORS),
    ApiRoute("POST", "/v1/inventory/{sku}/set", set_inventory, scope="inventory:write",
             summary="Set stock on hand at a location (a counted stock take)", tag="Inventory", request_body=SetIn,
             errors=_ERRORS),
    ApiRoute("POST", "/v1/inventory/transfer", transfer_inventory, scope="inventory:write",
             summary="Move stock between locations", tag="Inventory", request_body=TransferIn, errors=_ERRORS),
    ApiRoute("POST", "/v1/inventory/reconcile", reconcile_inventory, scope="inventory:write",
             summary="Recompute reserved stock from open reservations; report and fix drift", tag="Inventory"),
]  # fmt: skip
