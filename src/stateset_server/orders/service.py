"""Order commands and queries. Each command is one transaction that writes the new state and its
event row together; nothing about an order changes any other way."""

from __future__ import annotations

import msgspec

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.customers import service as customer_service
from stateset_server.events import log
from stateset_server.inventory import stock
from stateset_server.orders import lifecycle, repository
from stateset_server.orders.document import render, respond
from stateset_server.orders.intake import new_order, payment_request
from stateset_server.orders.model import Order
from stateset_server.orders.present import customer_ref, order_out, timeline
from stateset_server.orders.pricing import Pricing
from stateset_server.orders.schemas import CreateOrderIn, OrderOut, TimelineEntry
from stateset_server.payments.fees import FeeSchedule
from stateset_server.products.catalog import CatalogEntry, known_products
from stateset_server.storage import IN_WORKSPACE, Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["PlannedOrder", "create_order", "get_order", "insert_planned", "order_currency", "plan_order"]

_encode = msgspec.json.encode


async def create_order(
    db: Database,
    principal: Principal,
    body: CreateOrderIn,
    *,
    pricing: Pricing,
    fees: FeeSchedule,
    base_url: str,
    request_id: str | None,
) -> OrderOut:
    """Create an order; with a `payment` block, pay it in the same transaction (all or nothing)."""
    known = await known_products(db, principal, [item.sku for item in body.items])
    plan = plan_order(body, principal, pricing=pricing, fees=fees, known=known, base_url=base_url)
    customer = customer_service.EmailIds(db, principal, plan.draft.customer_id, plan.draft.customer_email)

    async def write(tx: Tx) -> OrderOut:
        return await insert_planned(
            tx, principal, plan, base_url=base_url, request_id=request_id, customer_id=customer.known
        )

    created = await db.write(write)
    customer.remember(created.customer_id)
    return created


class PlannedOrder(msgspec.Struct, frozen=True):
    """A validated, priced order (and its payment, for createAndPay) ready to be written."""

    draft: Order
    pay: lifecycle.Decide | None
    tracked: dict[str, int]  # SKU → quantity to reserve (products that track stock)
    event_id: str  # of its order.created event
    shown: OrderOut  # rendered ahead of the transaction; number and customer are filled in it


def plan_order(
    body: CreateOrderIn,
    principal: Principal,
    *,
    pricing: Pricing,
    fees: FeeSchedule,
    known: dict[str, CatalogEntry],
    base_url: str,
) -> PlannedOrder:
    """All the checks that need no transaction: a bad request fails here, before anything is written."""
    now = now_us()
    draft = new_order(
        body, workspace_id=principal.workspace_id, mode=principal.mode, pricing=pricing, now=now, catalog=known
    )
    tracked: dict[str, int] = {}
    for line in draft.items:
        if line.sku in known and known[line.sku].track_inventory:
            tracked[line.sku] = tracked.get(line.sku, 0) + line.quantity
    pay = None
    if body.payment is not None:
        request = payment_request(body.payment, draft.currency, livemode=principal.livemode, prefix="payment.")
        pay = lifecycle.pay(principal, request, fees, received=_shown(body.payment.amount))
    return PlannedOrder(draft, pay, tracked, new_id("evt"), order_out(draft, base_url))


async def insert_planned(
    tx: Tx,
    principal: Principal,
    plan: PlannedOrder,
    *,
    base_url: str,
    request_id: str | None,
    customer_id: str | None = None,
) -> OrderOut:
    """Number, store and announce one order (and pay it) inside the caller's transaction.

    Only what needs the transaction happens here (the number, the customer, the rows); the order's
    JSON was built before it (`plan_order`), so the write lock is held for as little Python as possible.
    `customer_id`: the customer its email is known to belong to (`customers.service.EmailIds`).
    """
    number = await repository.next_order_number(tx, principal.workspace_id, principal.mode)
    customer_id, email = await customer_service.resolve_for_order(
        tx,
        principal,
        customer_id=plan.draft.customer_id,
        email=plan.draft.customer_email,
        now=plan.draft.created_at,
        request_id=request_id,
        known_id=customer_id,
    )
    order = msgspec.structs.replace(plan.draft, order_number=number, customer_id=customer_id, customer_email=email)
    event_id = plan.event_id
    shown = msgspec.structs.replace(
        plan.shown,
        order_number=number,
        customer_id=customer_id,
        customer_email=email,
        customer=customer_ref(customer_id, email),
    )
    shown.timeline = [TimelineEntry("CREATED", shown.created_at, "order.created", event_id)]
    rendered = render(shown)
    await repository.insert_order(tx, order, rendered.document)
    expires = order.created_at + stock.RESERVATION_TTL_US
    for sku, quantity in plan.tracked.items():
        await stock.reserve(
            tx, principal, order_id=order.id, sku=sku, quantity=quantity, expires_at=expires,
            now=order.created_at, request_id=request_id,
        )  # fmt: skip
    await log.append(
        tx,
        principal=principal,
        type="order.created",
        object_type="order",
        object_id=order.id,
        data=rendered.snapshot,
        created_at=order.created_at,
        request_id=request_id,
        object_status=order.status.value,
        event_id=event_id,
    )
    if plan.pay is not None:
        paid, _outcome = await lifecycle.apply(
            tx, principal, order, plan.pay, now=order.created_at, base_url=base_url, request_id=request_id
        )
        return paid
    return shown


def _shown(value: object) -> str | None:
    return None if value is None else str(value)


async def get_order(db: Database, principal: Principal, order_id: str, *, base_url: str) -> bytes:
    """The order's JSON: its stored document (one statement), or rendered from its rows when it
    predates documents."""
    found = await repository.get_document(db, principal.workspace_id, principal.mode, order_id)
    if found is None:
        raise ApiError.not_found("order", order_id)
    if found[0] is not None:
        return respond(found[0], base_url, order_id)

    async def read(tx: Tx) -> OrderOut | None:
        order = await repository.get_order(tx, principal.workspace_id, principal.mode, order_id)
        if order is None:
            return None
        shown = order_out(order, base_url)
        shown.timeline = timeline(await log.object_events(tx, principal, order_id))
        return shown

    shown = await db.read(read)
    if shown is None:
        raise ApiError.not_found("order", order_id)
    return _encode(shown)


async def order_currency(db: Database, principal: Principal, order_id: str) -> str:
    """The order's currency (fixed at creation), to read amounts in a request about it."""

    async def read(tx: Tx) -> str | None:
        value = await tx.fetchval(
            f"SELECT currency FROM orders WHERE id = $1 AND {IN_WORKSPACE}",
            order_id,
            principal.workspace_id,
            principal.mode,
        )
        return None if value is None else str(value)

    currency = await db.read(read, snapshot=False)
    if currency is None:
        raise ApiError.not_found("order", order_id)
    return currency
