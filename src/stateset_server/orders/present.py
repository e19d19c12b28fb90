"""How an order is shown: money as exact strings, times as ISO 8601, both spec vocabularies."""

from __future__ import annotations

from stateset_server.core.clock import iso
from stateset_server.core.money import format_amount
from stateset_server.orders.model import Order
from stateset_server.orders.schemas import CustomerRef, LineItemOut, OrderOut, TimelineEntry
from stateset_server.orders.status import OrderStatus
from stateset_server.storage import Row

__all__ = ["STATUS_OF_EVENT", "order_out", "timeline"]

# Events that move an order to a status; other order events (e.g. order.updated) are not steps.
STATUS_OF_EVENT = {
    "order.created": OrderStatus.CREATED,
    "order.paid": OrderStatus.PAID,
    "order.fulfilled": OrderStatus.FULFILLED,
    "order.shipped": OrderStatus.SHIPPED,
    "order.delivered": OrderStatus.DELIVERED,
    "order.held": OrderStatus.HELD,
    "order.released": OrderStatus.RELEASED,
    "order.cancelled": OrderStatus.CANCELLED,
    "order.returned": OrderStatus.RETURNED,
    "order.refunded": OrderStatus.REFUNDED,
    "order.disputed": OrderStatus.DISPUTED,
    "order.resolved": OrderStatus.RESOLVED,
}


def order_out(order: Order, base_url: str) -> OrderOut:
    money = order.currency
    items = [
        LineItemOut(
            id=item.id,
            sku=item.sku,
            description=item.description,
            quantity=item.quantity,
            unit_price=format_amount(item.unit_price, money),
            price=format_amount(item.unit_price, money),
            total_price=format_amount(item.total, money),
            status=order.status.value,
            metadata=item.metadata,
        )
        for item in order.items
    ]
    has_customer = order.customer_id is not None or order.customer_email is not None
    total = format_amount(order.total, money)
    return OrderOut(
        id=order.id,
        order_number=order.order_number,
        status=order.status.value,
        livemode=order.mode == "live",
        currency=money,
        customer_id=order.customer_id,
        customer_email=order.customer_email,
        customer=CustomerRef(order.customer_id, order.customer_email) if has_customer else None,
        items=items,
        line_items=items,
        subtotal=format_amount(order.subtotal, money),
        tax=format_amount(order.tax, money),
        shipping=format_amount(order.shipping, money),
        total=total,
        total_amount=total,
        shipping_address=order.shipping_address,
        shipping_method=order.shipping_method,
        billing_address=order.billing_address,
        metadata=order.metadata,
        notes=order.notes,
        payment_url=f"{base_url}/pay/{order.id}",
        created_at=iso(order.created_at),
        updated_at=iso(order.updated_at),
    )


def timeline(events: list[Row]) -> list[TimelineEntry]:
    return [
        TimelineEntry(STATUS_OF_EVENT[row["type"]].value, iso(row["created_at"]), row["type"], row["id"])
        for row in events
        if row["type"] in STATUS_OF_EVENT
    ]
