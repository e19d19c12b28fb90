"""Return endpoints: create (also under the order), list, retrieve, and one POST per status change —
the official SDK's paths, /v1/returns/{id}/approve|cancel|receive, plus reject and process."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, base_url, json_response, read_json, rendered
from stateset_server.core.listing import list_parameters, parse_list_query
from stateset_server.core.pagination import list_envelope
from stateset_server.returns import listing, service
from stateset_server.returns.listing import RETURN_LIST
from stateset_server.returns.schemas import (
    CreateReturnIn,
    ReturnApproveIn,
    ReturnOut,
    ReturnProcessIn,
    ReturnReasonIn,
    ReturnReceiveIn,
)
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

_TAG = "Returns"
_CHANGE_ERRORS = ("RESOURCE_NOT_FOUND", "RESOURCE_CONFLICT", "VALIDATION_ERROR")


def _created(ret: ReturnOut) -> tuple[int, ReturnOut]:
    return 201, ret


def _ok(ret: ReturnOut) -> tuple[int, ReturnOut]:
    return 200, ret


async def _create(request: Request, principal: Principal, order_id: str | None) -> Response:
    body = await read_json(request, CreateReturnIn)
    if order_id is not None and body.order_id is not None and body.order_id != order_id:
        raise ApiError.field(
            "order_id", "differs from the order in the path", expected=order_id, received=body.order_id
        )
    order_id = order_id or body.order_id
    if order_id is None:
        raise ApiError.field(
            "order_id", "required field is missing", expected="an order id", code="MISSING_REQUIRED_FIELD"
        )
    idempotency.bind(_created)
    ret = await service.create(
        request.app.state.db, principal, order_id, body, request_id=request.scope.get("request_id")
    )
    return rendered(_created, ret)


async def create_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    return await _create(request, principal, None)


async def create_order_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    return await _create(request, principal, request.path_params["order_id"])


async def list_returns(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    query = parse_list_query(request.query_params, RETURN_LIST)
    page = await listing.list_returns(request.app.state.db, principal, query)
    return json_response(list_envelope(request, page["data"], page["pagination"]))


async def retrieve_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    return json_response(await service.get(request.app.state.db, principal, request.path_params["return_id"]))


async def approve_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, ReturnApproveIn, optional=True)
    idempotency.bind(_ok)
    ret = await service.approve(
        request.app.state.db,
        principal,
        request.path_params["return_id"],
        body.notes,
        request_id=request.scope.get("request_id"),
    )
    return rendered(_ok, ret)


async def reject_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, ReturnReasonIn, optional=True)
    idempotency.bind(_ok)
    ret = await service.reject(
        request.app.state.db,
        principal,
        request.path_params["return_id"],
        body.reason,
        request_id=request.scope.get("request_id"),
    )
    return rendered(_ok, ret)


async def cancel_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, ReturnReasonIn, optional=True)
    idempotency.bind(_ok)
    ret = await service.cancel(
        request.app.state.db,
        principal,
        request.path_params["return_id"],
        body.reason,
        request_id=request.scope.get("request_id"),
    )
    return rendered(_ok, ret)


async def receive_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, ReturnReceiveIn, optional=True)
    idempotency.bind(_ok)
    ret = await service.receive(
        request.app.state.db,
        principal,
        request.path_params["return_id"],
        body,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )
    return rendered(_ok, ret)


async def process_return(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, ReturnProcessIn, optional=True)
    idempotency.bind(_ok)
    ret = await service.process(
        request.app.state.db,
        principal,
        request.path_params["return_id"],
        body.reason,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )
    return rendered(_ok, ret)


def _action(name: str, handler: Any, body: type, summary: str) -> ApiRoute:
    return ApiRoute(
        "POST",
        f"/v1/returns/{{return_id}}/{name}",
        handler,
        scope="returns:write",
        summary=summary,
        tag=_TAG,
        request_body=body,
        response=ReturnOut,
        errors=_CHANGE_ERRORS,
    )


_CREATE_ERRORS = (
    "RESOURCE_NOT_FOUND",
    "RESOURCE_CONFLICT",
    "VALIDATION_ERROR",
    "MISSING_REQUIRED_FIELD",
    "INVALID_FIELD_FORMAT",
)

ROUTES = [
    ApiRoute(
        "POST",
        "/v1/returns",
        create_return,
        scope="returns:write",
        summary="Create a return of a shipped or delivered order's items (default: everything not yet returned)",
        tag=_TAG,
        request_body=CreateReturnIn,
        response=ReturnOut,
        status=201,
        errors=_CREATE_ERRORS,
    ),
    ApiRoute(
        "GET",
        "/v1/returns",
        list_returns,
        scope="returns:read",
        summary="List returns: filters (order_id, status, created_at…), sorting, offset or cursor pagination",
        tag=_TAG,
        errors=("VALIDATION_ERROR",),
        query=list_parameters(RETURN_LIST),
    ),
    ApiRoute(
        "GET",
        "/v1/returns/{return_id}",
        retrieve_return,
        scope="returns:read",
        summary="Retrieve a return with its items, value, refund, restocks and timeline",
        tag=_TAG,
        response=ReturnOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    ApiRoute(
        "POST",
        "/v1/orders/{order_id}/returns",
        create_order_return,
        scope="returns:write",
        summary="Create a return of this order's items (as POST /v1/returns)",
        tag=_TAG,
        request_body=CreateReturnIn,
        response=ReturnOut,
        status=201,
        errors=_CREATE_ERRORS,
    ),
    _action("approve", approve_return, ReturnApproveIn, "requested → approved"),
    _action("reject", reject_return, ReturnReasonIn, "requested → rejected (its items become returnable again)"),
    _action("cancel", cancel_return, ReturnReasonIn, "requested or approved → cancelled"),
    _action(
        "receive",
        receive_return,
        ReturnReceiveIn,
        "approved → received: restock (default) and move the order to RETURNED",
    ),
    _action(
        "process",
        process_return,
        ReturnProcessIn,
        "received → processed: refund the return's value through the order's payments",
    ),
]
