"""Order commands and queries. Each command is one transaction that writes the new state and its
event row together; nothing about an order changes any other way."""

from __future__ import annotations

import msgspec

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.events import log
from stateset_server.orders import repository
from stateset_server.orders.intake import new_order
from stateset_server.orders.present import order_out, timeline
from stateset_server.orders.pricing import Pricing
from stateset_server.orders.schemas import CreateOrderIn, OrderOut, TimelineEntry
from stateset_server.storage import Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["create_order", "get_order"]

_encode = msgspec.json.encode


async def create_order(
    db: Database,
    principal: Principal,
    body: CreateOrderIn,
    *,
    pricing: Pricing,
    base_url: str,
    request_id: str | None,
) -> OrderOut:
    now = now_us()
    draft = new_order(body, workspace_id=principal.workspace_id, mode=principal.mode, pricing=pricing, now=now)

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
        )
        return shown, event_id

    shown, event_id = await db.write(write)
    shown.timeline = [TimelineEntry("CREATED", shown.created_at, "order.created", event_id)]
    return shown


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
