"""Order endpoints: create (and create-and-pay), retrieve, edit, and one POST per lifecycle command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, base_url, json_response, read_body, read_json, rendered
from stateset_server.core.listing import list_parameters, parse_list_query
from stateset_server.core.money import format_amount, parse_amount
from stateset_server.core.pagination import list_envelope
from stateset_server.orders import bulk, lifecycle, listing, service
from stateset_server.orders.document import enclosed, response_of
from stateset_server.orders.intake import address_dict, payment_request
from stateset_server.orders.lifecycle import Decide, Outcome
from stateset_server.orders.listing import ORDER_LIST
from stateset_server.orders.present import payment_out
from stateset_server.orders.schemas import (
    CreateOrderIn,
    DeliverIn,
    FulfillIn,
    OrderOut,
    PayIn,
    ReasonIn,
    RefundIn,
    ShipIn,
    UpdateOrderIn,
)
from stateset_server.orders.status import parse_status
from stateset_server.payments import ledger
from stateset_server.payments.service import charge_accounts
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

B = TypeVar("B")
_ORDER_ERRORS = ("RESOURCE_NOT_FOUND", "RESOURCE_CONFLICT", "VALIDATION_ERROR", "INVALID_FIELD_FORMAT")


def _created(order: OrderOut) -> tuple[int, Any]:
    return 201, response_of(order)


def _order_of(result: tuple[OrderOut, Outcome]) -> tuple[int, Any]:
    return 200, response_of(result[0])


async def create_order(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, CreateOrderIn)
    idempotency.bind(_created)
    order = await service.create_order(
        request.app.state.db,
        principal,
        body,
        pricing=request.app.state.pricing,
        fees=request.app.state.fees,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )
    return rendered(_created, order)


async def list_orders(request: Request, principal: Principal | None) -> Response:
    """Both specs' list shapes at once: `data` + `pagination` + `meta` (API reference) and
    `orders` + `total_count` + `has_more` (Orders API)."""
    assert principal is not None
    query = parse_list_query(request.query_params, ORDER_LIST)
    page = await listing.list_orders(request.app.state.db, principal, query, base_url=base_url(request))
    return json_response(list_envelope(request, page.pop("data"), page.pop("pagination"), **page))


async def retrieve_order(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await service.get_order(
        request.app.state.db, principal, request.path_params["order_id"], base_url=base_url(request)
    )
    return Response(body, media_type="application/json")


async def _run(request: Request, principal: Principal, decide: Decide) -> tuple[OrderOut, Outcome]:
    return await lifecycle.run(
        request.app.state.db,
        principal,
        request.path_params["order_id"],
        decide,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )


def command(body_type: type[B], make: Callable[[Principal, B], Decide]) -> Callable[..., Any]:
    """An endpoint that runs one lifecycle command and answers with the order. The body is optional."""

    async def endpoint(request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        body = await read_json(request, body_type, optional=True)
        idempotency.bind(_order_of)
        return rendered(_order_of, await _run(request, principal, make(principal, body)))

    return endpoint


async def pay_order(request: Request, principal: Principal | None) -> Response:
    """The Orders API's pay response (payment_id, transaction_hash, fees…) with the whole order."""
    assert principal is not None
    body = await read_json(request, PayIn, optional=True)
    order_id = request.path_params["order_id"]
    db = request.app.state.db
    raw = body.amount if body.amount is not None else (body.payment_method.amount if body.payment_method else None)
    # Amounts and a currency are read in the order's currency: only then is it looked up ahead (the
    # usual pay, for the amount due, reads the order once, in the command).
    currency = await service.order_currency(db, principal, order_id) if raw is not None or body.currency else None
    pay_request = payment_request(body, currency, livemode=principal.livemode)
    accounts = None
    if pay_request.method == "usdc" and pay_request.wallet_address is not None:
        accounts = await ledger.committed_account_ids(db, principal, charge_accounts(pay_request))
    decide = lifecycle.pay(
        principal, pay_request, request.app.state.fees, received=None if raw is None else str(raw), accounts=accounts
    )

    def render(result: tuple[OrderOut, Outcome]) -> tuple[int, Any]:
        order, outcome = result
        payment = payment_out(outcome.payment) if outcome.payment else None
        zero = format_amount(0, order.currency)
        fields = {
            "object": "payment",
            "payment_id": payment.id if payment else None,
            "order_id": order.id,
            "status": order.status,
            "amount": payment.amount if payment else zero,
            "currency": order.currency,
            "method": payment.method if payment else None,
            "transaction_hash": payment.transaction_hash if payment else None,
            "paid_at": payment.paid_at if payment else order.updated_at,
            "fees": payment.fees if payment else {"network_fee": zero, "processing_fee": zero},
            "amount_paid": order.amount_paid,
            "amount_due": order.amount_due,
            "payment": payment,
        }
        return 200, enclosed(fields, "order", order)

    idempotency.bind(render)
    return rendered(render, await _run(request, principal, decide))


async def refund_order(request: Request, principal: Principal | None) -> Response:
    """The refund (or refunds, when it spans several payments) with the whole order."""
    assert principal is not None
    body = await read_json(request, RefundIn, optional=True)
    order_id = request.path_params["order_id"]
    currency = await service.order_currency(request.app.state.db, principal, order_id)
    amount = None if body.amount is None else parse_amount(body.amount, currency, "amount")
    decide = lifecycle.refund(
        principal, amount, body.reason, received=None if body.amount is None else str(body.amount)
    )

    def render(result: tuple[OrderOut, Outcome]) -> tuple[int, dict[str, Any]]:
        order, outcome = result
        refunds = [
            {
                "id": r.id,
                "object": "refund",
                "payment_id": r.payment_id,
                "amount": format_amount(r.amount, currency),
                "transaction_hash": r.transaction_hash,
            }
            for r in outcome.refunds
        ]
        return 200, {
            "id": outcome.refunds[0].id,
            "object": "refund",
            "order_id": order.id,
            "status": "succeeded",
            "amount": format_amount(sum(r.amount for r in outcome.refunds), currency),
            "currency": currency,
            "reason": body.reason,
            "refunds": refunds,
            "order": order,
        }

    idempotency.bind(render)
    return rendered(render, await _run(request, principal, decide))


def _bulk_created(orders: list[OrderOut]) -> tuple[int, dict[str, Any]]:
    return 201, {"object": "list", "count": len(orders), "data": orders}


def _bulk_paid(results: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    succeeded = sum(1 for r in results if r["status"] == "succeeded")
    return 200, {"object": "list", "succeeded": succeeded, "failed": len(results) - succeeded, "data": results}


async def create_orders_in_bulk(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    items = bulk.split_batch(await read_body(request), "orders")
    idempotency.bind(_bulk_created)
    orders = await bulk.create_bulk(
        request.app.state.db,
        principal,
        items,
        strict=not request.scope.get("lax_body", False),
        pricing=request.app.state.pricing,
        fees=request.app.state.fees,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )
    return rendered(_bulk_created, orders)


async def pay_orders_in_bulk(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    items = bulk.split_batch(await read_body(request), "payments")
    idempotency.bind(_bulk_paid)
    results = await bulk.pay_bulk(
        request.app.state.db,
        principal,
        items,
        strict=not request.scope.get("lax_body", False),
        fees=request.app.state.fees,
        base_url=base_url(request),
        request_id=request.scope.get("request_id"),
    )
    return rendered(_bulk_paid, results)


async def update_order(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, UpdateOrderIn)
    status = None
    if body.status is not None:
        status = parse_status(body.status)
        if status is None:
            raise ApiError.field(
                "status", "unknown status", expected="an order status, e.g. shipped", received=body.status
            )
    addresses: dict[str, Any] = {}
    for name in ("shipping_address", "billing_address"):
        if getattr(body, name) is not None:
            addresses[name] = address_dict(getattr(body, name))
    if body.shipping_method is not None:
        addresses["shipping_method"] = body.shipping_method
    decide = lifecycle.update(
        principal, metadata=body.metadata, addresses=addresses, notes=body.notes, status=status, reason=body.reason
    )
    idempotency.bind(_order_of)
    return rendered(_order_of, await _run(request, principal, decide))


def _action(name: str, endpoint: Callable[..., Any], body: type, summary: str, scope: str = "orders:write") -> ApiRoute:
    return ApiRoute(
        "POST",
        f"/v1/orders/{{order_id}}/{name}",
        endpoint,
        scope=scope,
        summary=summary,
        tag="Order lifecycle",
        request_body=body,
        response=OrderOut,
        errors=_ORDER_ERRORS,
    )


fulfill_order = command(FulfillIn, lambda _p, b: lifecycle.fulfill(b.tracking_number, b.carrier))
ship_order = command(
    ShipIn, lambda _p, b: lifecycle.ship(b.tracking_number, b.carrier, b.shipped_at, b.estimated_delivery)
)
deliver_order = command(DeliverIn, lambda _p, b: lifecycle.deliver(b.delivered_at))
hold_order = command(ReasonIn, lambda _p, b: lifecycle.hold(b.reason))
release_order = command(ReasonIn, lambda _p, b: lifecycle.release(b.reason))
cancel_order = command(ReasonIn, lambda p, b: lifecycle.cancel(p, b.reason))
return_order = command(ReasonIn, lambda _p, b: lifecycle.return_order(b.reason))
dispute_order = command(ReasonIn, lambda _p, b: lifecycle.dispute(b.reason))
resolve_order = command(ReasonIn, lambda _p, b: lifecycle.resolve(b.reason))
for _endpoint, _name in [
    (fulfill_order, "fulfill_order"),
    (ship_order, "ship_order"),
    (deliver_order, "deliver_order"),
    (hold_order, "hold_order"),
    (release_order, "release_order"),
    (cancel_order, "cancel_order"),
    (return_order, "return_order"),
    (dispute_order, "dispute_order"),
    (resolve_order, "resolve_order"),
]:
    _endpoint.__name__ = _name  # the OpenAPI operationId

ROUTES = [
    ApiRoute(
        "POST",
        "/v1/orders",
        create_order,
        scope="orders:write",
        summary="Create an order (with `payment`: create and pay in one transaction)",
        tag="Orders",
        request_body=CreateOrderIn,
        response=OrderOut,
        status=201,
        errors=(
            "VALIDATION_ERROR",
            "MISSING_REQUIRED_FIELD",
            "INVALID_FIELD_FORMAT",
            "PAYLOAD_TOO_LARGE",
            "PAYMENT_FAILED",
        ),
    ),
    ApiRoute(
        "GET",
        "/v1/orders",
        list_orders,
        scope="orders:read",
        summary="List orders: filters, sorting, offset or cursor pagination",
        tag="Orders",
        errors=("VALIDATION_ERROR",),
        query=list_parameters(ORDER_LIST),
    ),
    ApiRoute(
        "POST",
        "/v1/orders/bulk",
        create_orders_in_bulk,
        scope="orders:write",
        summary="Create up to 1,000 orders atomically (a JSON array, or {orders: [...]})",
        tag="Orders",
        status=201,
        errors=("VALIDATION_ERROR", "INVALID_FIELD_FORMAT", "PAYMENT_FAILED", "PAYLOAD_TOO_LARGE"),
    ),
    ApiRoute(
        "POST",
        "/v1/orders/pay_bulk",
        pay_orders_in_bulk,
        scope="orders:pay",
        summary="Pay many orders, each independently; every result is reported (array or {payments: [...]})",
        tag="Orders",
        errors=("VALIDATION_ERROR", "INVALID_FIELD_FORMAT"),
    ),
    ApiRoute(
        "GET",
        "/v1/orders/{order_id}",
        retrieve_order,
        scope="orders:read",
        summary="Retrieve an order with its payment, shipping details and timeline",
        tag="Orders",
        response=OrderOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    *(
        ApiRoute(
            method,
            "/v1/orders/{order_id}",
            update_order,
            scope="orders:write",
            summary="Edit metadata, notes and (before shipping) addresses; optionally change status",
            tag="Orders",
            request_body=UpdateOrderIn,
            response=OrderOut,
            errors=_ORDER_ERRORS,
        )
        for method in ("PUT", "PATCH")
    ),
    _action("pay", pay_order, PayIn, "Pay an order (USDC or card; partial payments add up)", scope="orders:pay"),
    _action("fulfill", fulfill_order, FulfillIn, "PAID → FULFILLED (events order.fulfilled, order.processing)"),
    _action("ship", ship_order, ShipIn, "FULFILLED → SHIPPED with carrier and tracking number"),
    _action("deliver", deliver_order, DeliverIn, "SHIPPED → DELIVERED"),
    _action("hold", hold_order, ReasonIn, "CREATED or PAID → HELD"),
    _action("release", release_order, ReasonIn, "HELD → RELEASED (continues as the status it was held from)"),
    _action("cancel", cancel_order, ReasonIn, "→ CANCELLED; money received is refunded in the same transaction"),
    _action("return", return_order, ReasonIn, "SHIPPED or DELIVERED → RETURNED"),
    _action("refund", refund_order, RefundIn, "Refund all or part of what was paid; in full → REFUNDED"),
    _action("dispute", dispute_order, ReasonIn, "PAID, FULFILLED, SHIPPED or DELIVERED → DISPUTED"),
    _action("resolve", resolve_order, ReasonIn, "DISPUTED → RESOLVED (the merchant keeps the money)"),
]
