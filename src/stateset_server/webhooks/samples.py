"""Sample objects for the webhook simulator: realistic, fixed snapshots shaped like the real ones
(OrderOut, CustomerOut, ProductOut, inventory levels, ReturnOut), so a receiver can be built and
tested before any real event exists."""

from __future__ import annotations

from typing import Any

__all__ = ["sample_object", "sample_previous_attributes"]

_WHEN = "2024-01-15T10:30:00.000Z"

_ORDER_STATUS = {
    "created": "CREATED",
    "updated": "CREATED",
    "paid": "PAID",
    "processing": "FULFILLED",
    "fulfilled": "FULFILLED",
    "shipped": "SHIPPED",
    "delivered": "DELIVERED",
    "cancelled": "CANCELLED",
    "refunded": "REFUNDED",
    "held": "HELD",
    "released": "RELEASED",
    "returned": "RETURNED",
    "disputed": "DISPUTED",
    "resolved": "RESOLVED",
}


def _order(kind: str, livemode: bool) -> dict[str, Any]:
    status = _ORDER_STATUS.get(kind, "CREATED")
    paid = status not in ("CREATED", "CANCELLED")
    item = {
        "id": "li_sample0000000000000001",
        "sku": "LAPTOP-001",
        "description": "MacBook Pro 16-inch",
        "quantity": 1,
        "unit_price": "999.99",
        "price": "999.99",
        "total": "999.99",
        "metadata": {},
    }
    return {
        "id": "ord_sample00000000000000001",
        "object": "order",
        "order_number": 1001,
        "status": status,
        "livemode": livemode,
        "currency": "USD",
        "customer_id": "cust_123",
        "customer_email": "customer@example.com",
        "items": [item],
        "line_items": [item],
        "subtotal": "999.99",
        "tax": "87.50",
        "shipping": "9.99",
        "total": "1097.48",
        "total_amount": "1097.48",
        "shipping_address": {
            "name": "John Doe",
            "address_line_1": "123 Main St",
            "city": "San Francisco",
            "state": "CA",
            "postal_code": "94105",
            "country": "US",
        },
        "shipping_method": None,
        "billing_address": None,
        "metadata": {"channel": "web"},
        "notes": None,
        "amount_paid": "1097.48" if paid else "0.00",
        "amount_refunded": "1097.48" if status == "REFUNDED" else "0.00",
        "amount_due": "0.00" if paid else "1097.48",
        "shipping_details": {
            "carrier": "UPS" if status in ("SHIPPED", "DELIVERED") else None,
            "tracking_number": "1Z999AA10123456784" if status in ("SHIPPED", "DELIVERED") else None,
        },
        "created_at": _WHEN,
        "updated_at": _WHEN,
    }


def _customer(kind: str, livemode: bool) -> dict[str, Any]:
    return {
        "id": "cus_sample00000000000000001",
        "object": "customer",
        "email": "customer@example.com",
        "first_name": "John",
        "last_name": "Doe",
        "name": "John Doe",
        "phone": "+14155550100",
        "tier": "gold",
        "addresses": [],
        "metadata": {},
        "livemode": livemode,
        "created_at": _WHEN,
        "updated_at": _WHEN,
    }


def _product(kind: str, livemode: bool) -> dict[str, Any]:
    return {
        "id": "prod_sample0000000000000001",
        "object": "product",
        "sku": "LAPTOP-001",
        "name": "MacBook Pro 16-inch",
        "description": None,
        "category": "electronics",
        "price": "999.99",
        "currency": "USD",
        "track_inventory": True,
        "low_stock_threshold": 5,
        "active": kind != "deleted",
        "metadata": {},
        "livemode": livemode,
        "created_at": _WHEN,
        "updated_at": _WHEN,
    }


def _inventory(kind: str, livemode: bool) -> dict[str, Any]:
    if kind == "transfer":
        return {
            "object": "inventory_transfer",
            "sku": "LAPTOP-001",
            "from_location": "warehouse-1",
            "to_location": "store-sf",
            "quantity": 5,
            "livemode": livemode,
        }
    available = {"low_stock": 3, "out_of_stock": 0}.get(kind, 42)
    return {
        "object": "inventory_level",
        "sku": "LAPTOP-001",
        "location": "default",
        "on_hand": available + 2,
        "reserved": 2,
        "available": available,
        "low_stock_threshold": 5,
        "livemode": livemode,
    }


def _return(kind: str, livemode: bool) -> dict[str, Any]:
    status = "requested" if kind == "created" else kind
    return {
        "id": "ret_sample00000000000000001",
        "object": "return",
        "order_id": "ord_sample00000000000000001",
        "status": status,
        "livemode": livemode,
        "reason": "damaged",
        "currency": "USD",
        "items": [{"sku": "LAPTOP-001", "quantity": 1, "unit_price": "999.99"}],
        "subtotal": "999.99",
        "tax": "87.50",
        "refund_amount": "1087.49",
        "metadata": {},
        "created_at": _WHEN,
        "updated_at": _WHEN,
    }


def _endpoint(kind: str, livemode: bool) -> dict[str, Any]:
    return {
        "id": "we_sample000000000000000001",
        "object": "webhook_endpoint",
        "url": "https://example.com/webhooks",
        "events": ["*"],
        "enabled": False,
        "status": "disabled",
        "disabled_reason": "the endpoint answered 410 Gone",
        "livemode": livemode,
        "created_at": _WHEN,
        "updated_at": _WHEN,
    }


_BUILDERS = {
    "order": _order,
    "customer": _customer,
    "product": _product,
    "inventory": _inventory,
    "return": _return,
    "webhook_endpoint": _endpoint,
}


def sample_object(event_type: str, *, livemode: bool) -> dict[str, Any]:
    """A snapshot for `event_type` (a known type; see model.EVENT_TYPES)."""
    resource, _, kind = event_type.partition(".")
    builder = _BUILDERS.get(resource)
    if builder is None:
        return {"object": resource, "livemode": livemode}
    return builder(kind, livemode)


def sample_previous_attributes(event_type: str) -> dict[str, Any] | None:
    """What an update event's `previous_attributes` looks like; None for other events."""
    if event_type == "order.updated":
        return {"metadata": {}}
    if event_type.endswith(".updated") and event_type != "inventory.updated":
        return {"name": "Jon Doe"} if event_type.startswith("customer.") else {"price": "899.99"}
    if event_type == "webhook_endpoint.disabled":
        return {"enabled": True, "status": "enabled", "disabled_reason": None}
    return None
