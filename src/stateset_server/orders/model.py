"""The order as the domain sees it: plain values, money in integer micro-units, no I/O."""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.orders.status import OrderStatus

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
