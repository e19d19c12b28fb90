"""Customer endpoints: create, list, retrieve, edit, delete, and a customer's orders.

Every write reads its body, binds its renderer for the idempotency layer, then runs one transaction.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.clock import now_us
from stateset_server.core.http import ApiRoute, base_url, json_response, read_json, rendered
from stateset_server.core.listing import list_parameters, parse_list_query
from stateset_server.core.pagination import list_envelope
from stateset_server.customers import listing, service
from stateset_server.customers.listing import CUSTOMER_LIST
from stateset_server.customers.schemas import CreateCustomerIn, CustomerOut, DeletedCustomerOut, UpdateCustomerIn
from stateset_server.orders.listing import ORDER_LIST, list_orders
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

_WRITE_ERRORS = ("VALIDATION_ERROR", "MISSING_REQUIRED_FIELD", "INVALID_FIELD_FORMAT", "RESOURCE_ALREADY_EXISTS")


def _created(customer: CustomerOut) -> tuple[int, CustomerOut]:
    return 201, customer


def _ok(result: CustomerOut | DeletedCustomerOut) -> tuple[int, CustomerOut | DeletedCustomerOut]:
    return 200, result


async def create_customer(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, CreateCustomerIn)
    draft = service.draft_customer(body, principal, now=now_us())  # a bad body fails before any transaction
    idempotency.bind(_created)
    customer = await service.create_customer(
        request.app.state.db, principal, draft, request_id=request.scope.get("request_id")
    )
    return rendered(_created, customer)


async def list_customers(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    query = listing.parse_customer_query(request.query_params)
    page = await listing.list_customers(request.app.state.db, principal, query)
    return json_response(list_envelope(request, page["data"], page["pagination"]))


async def retrieve_customer(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    customer = await service.get_customer(request.app.state.db, principal, request.path_params["customer_id"])
    return json_response(customer)


async def update_customer(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, UpdateCustomerIn)
    idempotency.bind(_ok)
    customer = await service.update_customer(
        request.app.state.db,
        principal,
        request.path_params["customer_id"],
        body,
        request_id=request.scope.get("request_id"),
    )
    return rendered(_ok, customer)


async def delete_customer(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    idempotency.bind(_ok)
    deleted = await service.delete_customer(
        request.app.state.db, principal, request.path_params["customer_id"], request_id=request.scope.get("request_id")
    )
    return rendered(_ok, deleted)


async def list_customer_orders(request: Request, principal: Principal | None) -> Response:
    """The orders list (every filter, sort and page parameter of `GET /v1/orders`) narrowed to one
    customer: its `customer_id` filter is added to the client's own parameters (and ANDed with them)."""
    assert principal is not None
    customer_id = request.path_params["customer_id"]
    await service.require_customer(request.app.state.db, principal, customer_id)
    params = QueryParams([*request.query_params.multi_items(), ("customer_id", customer_id)])
    query = parse_list_query(params, ORDER_LIST)
    page = await list_orders(request.app.state.db, principal, query, base_url=base_url(request))
    return json_response(list_envelope(request, page.pop("data"), page.pop("pagination"), **page))


_PATH = "/v1/customers/{customer_id}"
ROUTES = [
    ApiRoute(
        "POST",
        "/v1/customers",
        create_customer,
        scope="customers:write",
        summary="Create a customer (the email is unique per workspace and mode, ignoring case)",
        tag="Customers",
        request_body=CreateCustomerIn,
        response=CustomerOut,
        status=201,
        errors=_WRITE_ERRORS,
    ),
    ApiRoute(
        "GET",
        "/v1/customers",
        list_customers,
        scope="customers:read",
        summary="List customers: filters, sorting, offset or cursor pagination",
        tag="Customers",
        errors=("VALIDATION_ERROR",),
        query=list_parameters(CUSTOMER_LIST),
    ),
    ApiRoute(
        "GET",
        _PATH,
        retrieve_customer,
        scope="customers:read",
        summary="Retrieve a customer",
        tag="Customers",
        response=CustomerOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    *(
        ApiRoute(
            method,
            _PATH,
            update_customer,
            scope="customers:write",
            summary='Edit a customer: the fields given change; metadata merges (null or "" removes a key)',
            tag="Customers",
            request_body=UpdateCustomerIn,
            response=CustomerOut,
            errors=("RESOURCE_NOT_FOUND", *_WRITE_ERRORS),
        )
        for method in ("PUT", "PATCH")
    ),
    ApiRoute(
        "DELETE",
        _PATH,
        delete_customer,
        scope="customers:write",
        summary="Delete a customer (its orders stay; its email may be used again)",
        tag="Customers",
        response=DeletedCustomerOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    ApiRoute(
        "GET",
        f"{_PATH}/orders",
        list_customer_orders,
        # The answer is orders, so reading it needs what reading orders needs.
        scope="orders:read",
        summary="List a customer's orders (the parameters of GET /v1/orders)",
        tag="Customers",
        errors=("RESOURCE_NOT_FOUND", "VALIDATION_ERROR"),
        query=list_parameters(ORDER_LIST),
    ),
]
