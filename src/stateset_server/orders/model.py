"""The order as the domain sees it: plain values, money in integer micro-units, no I/O."""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.orders.status import OrderStatus
from stateset_server.payments.model import Payment

__all__ = ["LineItem", "Order"]


class LineItem(msgspec.Struct, frozen=True):
    id: str
    sku: str
    description: str | None
    quantity: int
    unit_price: int  # micro-units
    total: int  # quantity × unit_price, micro-units
    metadata: dict[str, Any]


class Order(msgspec.Struct, frozen=True):
    id: str
    workspace_id: str
    mode: str
    order_number: int
    status: OrderStatus
    currency: str
    customer_id: str | None
    customer_email: str | None
    items: list[LineItem]
    subtotal: int
    tax: int
    shipping: int
    total: int
    shipping_address: dict[str, Any] | None
    shipping_method: str | None
    billing_address: dict[str, Any] | None
    metadata: dict[str, Any]
    notes: str | None
    version: int
    created_at: int  # Unix microseconds
    updated_at: int
    resume_status: OrderStatus | None = None  # for HELD/DISPUTED/RELEASED/RESOLVED: the status it stands for
    status_reason: str | None = None  # why it was last held, cancelled, returned or disputed
    amount_paid: int = 0
    amount_refunded: int = 0
    carrier: str | None = None
    tracking_number: str | None = None
    estimated_delivery: int | None = None
    paid_at: int | None = None
    fulfilled_at: int | None = None
    shipped_at: int | None = None
    delivered_at: int | None = None
    cancelled_at: int | None = None
    payments: list[Payment] = msgspec.field(default_factory=list)
    document: bytes | None = None  # as stored, unpacked (orders/document.py), when read for a change
    # Its active stock reservations (id, sku, location, quantity), when read with the row held for a
    # change (`repository.get_order(for_update=True)`) or prepared ahead of one (`read_order`); None:
    # not read.
    held: list[tuple[str, str, str, int]] | None = None

    @property
    def amount_due(self) -> int:
        """What is still to be paid. Only paid orders take refunds, so this never goes back up."""
        return self.total - self.amount_paid

    @property
    def refundable(self) -> int:
        return self.amount_paid - self.amount_refunded
