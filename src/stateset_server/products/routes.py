"""`/v1/products`: create, list, retrieve, update and delete products by SKU."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.http import ApiRoute, json_response, read_json, rendered
from stateset_server.core.listing import Field, ListSpec, list_parameters, parse_list_query, read_page
from stateset_server.core.pagination import list_envelope
from stateset_server.products import service
from stateset_server.products.schemas import CreateProductIn, ProductOut, UpdateProductIn
from stateset_server.workspaces.keys import Principal

__all__ = ["PRODUCT_LIST", "ROUTES"]

_CREATED = Field("created_at", "datetime", sortable=True)
PRODUCT_LIST = ListSpec(
    table="(SELECT * FROM products WHERE deleted_at IS NULL) AS products",
    fields={
        "id": Field("id", "string", selective=True),
        "sku": Field("sku", "string", sortable=True, selective=True),
        "name": Field("name", "string", sortable=True),
        "category": Field("category", "string"),
        "price": Field("price", "money", sortable=True),
        "created_at": _CREATED,
        "created": _CREATED,
        "updated_at": Field("updated_at", "datetime", sortable=True),
    },
    aliases={"created_after": ("created_at", "gt"), "created_before": ("created_at", "lt")},
    search=("sku", "name", "category", "description"),
)


def _created(product: ProductOut) -> tuple[int, ProductOut]:
    return 201, product


def _ok(result: Any) -> tuple[int, Any]:
    return 200, result


async def create_product(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, CreateProductIn)
    idempotency.bind(_created)
    request_id = request.scope.get("request_id")
    product = await request.app.state.db.write(lambda tx: service.create(tx, principal, body, request_id))
    return rendered(_created, product)


async def list_products(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    query = parse_list_query(request.query_params, PRODUCT_LIST)

    db = request.app.state.db
    products, pagination = await read_page(db, PRODUCT_LIST, query, principal, service.COLUMNS, service.product_out)
    return json_response(list_envelope(request, products, pagination))


async def retrieve_product(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    sku = request.path_params["sku"]
    return json_response(await request.app.state.db.read(lambda tx: service.get(tx, principal, sku)))


async def update_product(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, UpdateProductIn)
    sku, request_id = request.path_params["sku"], request.scope.get("request_id")
    idempotency.bind(_ok)
    product = await request.app.state.db.write(lambda tx: service.update(tx, principal, sku, body, request_id))
    return rendered(_ok, product)


async def delete_product(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    sku, request_id = request.path_params["sku"], request.scope.get("request_id")
    idempotency.bind(_ok)
    return rendered(_ok, await request.app.state.db.write(lambda tx: service.delete(tx, principal, sku, request_id)))


_ERRORS = ("RESOURCE_NOT_FOUND", "VALIDATION_ERROR", "INVALID_FIELD_FORMAT")
ROUTES = [
    ApiRoute("POST", "/v1/products", create_product, scope="products:write", summary="Create a product",
             tag="Products", request_body=CreateProductIn, response=ProductOut, status=201,
             errors=("RESOURCE_ALREADY_EXISTS", *_ERRORS)),
    ApiRoute("GET", "/v1/products", list_products, scope="products:read", summary="List products", tag="Products",
             errors=("VALIDATION_ERROR",), query=list_parameters(PRODUCT_LIST)),
    ApiRoute("GET", "/v1/products/{sku}", retrieve_product, scope="products:read", summary="Retrieve a product",
             tag="Products", response=ProductOut, errors=_ERRORS),
    *(ApiRoute(method, "/v1/products/{sku}", update_product, scope="products:write", summary="Update a product",
               tag="Products", request_body=UpdateProductIn, response=ProductOut, errors=_ERRORS)
      for method in ("PUT", "PATCH")),
    ApiRoute("DELETE", "/v1/products/{sku}", delete_product, scope="products:write", summary="Delete a product",
             tag="Products", errors=_ERRORS),
]  # fmt: skip
