"""Order commands and queries. Each command is one transaction that writes the new state and its
event row together; nothing about an order changes any other way."""

from __future__ import annotations

import msgspec

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.events import log
from stateset_server.orders import lifecycle, repository
from stateset_server.orders.intake import new_order, payment_request
from stateset_server.orders.present import order_out, timeline
from stateset_server.orders.pricing import Pricing
from stateset_server.orders.schemas import CreateOrderIn, OrderOut, TimelineEntry
from stateset_server.payments.fees import FeeSchedule
from stateset_server.storage import Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["create_order", "get_order", "order_currency"]

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
    now = now_us()
    draft = new_order(body, workspace_id=principal.workspace_id, mode=principal.mode, pricing=pricing, now=now)
    pay = None
    if body.payment is not None:
        request = payment_request(body.payment, draft.currency, livemode=principal.livemode, prefix="payment.")
        pay = lifecycle.pay(principal, request, fees, received=_shown(body.payment.amount))

    async def write(tx: Tx) -> tuple[OrderOut, str]:
        number = await repository.next_order_number(tx, principal.workspace_id, principal.mode)
        order = msgspec.structs.replace(draft, order_number=number)
        shown = order_out(order, base_url)
        await repository.insert_order(tx, order)
        event_id = await log.append(
            tx,
            principal=principal,
            type="order.created",
            object_type="order",
            object_id=order.id,
            data=_encode(shown),
            created_at=now,
            request_id=request_id,
            object_status=order.status.value,
        )
        if pay is not None:
            paid, _outcome = await lifecycle.apply(
                tx, principal, order, pay, now=now, base_url=base_url, request_id=request_id
            )
            return paid, event_id
        return shown, event_id

    shown, event_id = await db.write(write)
    if shown.timeline is msgspec.UNSET:
        shown.timeline = [TimelineEntry("CREATED", shown.created_at, "order.created", event_id)]
    return shown


def _shown(value: object) -> str | None:
    return None if value is None else str(value)


async def get_order(db: Database, principal: Principal, order_id: str, *, base_url: str) -> OrderOut:
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
    return shown


async def order_currency(db: Database, principal: Principal, order_id: str) -> str:
    """The order's currency (fixed at creation), to read amounts in a request about it."""

    async def read(tx: Tx) -> str | None:
        value = await tx.fetchval(
            "SELECT currency FROM orders WHERE id = $1 AND workspace_id = $2 AND mode = $3",
            order_id,
            principal.workspace_id,
            principal.mode,
        )
        return None if value is None else str(value)

    currency = await db.read(read)
    if currency is None:
        raise ApiError.not_found("order", order_id)
    return currency
