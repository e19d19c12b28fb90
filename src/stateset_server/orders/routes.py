"""`POST /v1/orders` and `GET /v1/orders/{id}`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core.http import ApiRoute, base_url, json_response, read_body
from stateset_server.core.validation import decode_body
from stateset_server.orders import service
from stateset_server.orders.schemas import CreateOrderIn, OrderOut
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]


async def create_order(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = decode_body(await read_body(request), CreateOrderIn)
    order = await service.create_order(
        request.app.state.db,
        principal,
        body,
        pricing=request.app.state.pricing,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )
    return json_response(order, 201)


async def retrieve_order(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    order = await service.get_order(
        request.app.state.db, principal, request.path_params["order_id"], base_url=base_url(request)
    )
    return json_response(order)


ROUTES = [
    ApiRoute(
        "POST",
        "/v1/orders",
        create_order,
        scope="orders:write",
        summary="Create an order",
        tag="Orders",
        request_body=CreateOrderIn,
        response=OrderOut,
        status=201,
        errors=("VALIDATION_ERROR", "MISSING_REQUIRED_FIELD", "INVALID_FIELD_FORMAT", "PAYLOAD_TOO_LARGE"),
    ),
    ApiRoute(
        "GET",
        "/v1/orders/{order_id}",
        retrieve_order,
        scope="orders:read",
        summary="Retrieve an order with its timeline",
        tag="Orders",
        response=OrderOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
]
