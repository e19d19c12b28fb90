"""Order wire types: what clients send and what they get back. They validate requests (msgspec) and
generate the OpenAPI document, so the two can never disagree.

Both spec shapes are accepted: items priced with `unit_price` (Orders API) or `price` (API reference
SDK examples; a JSON number is read exactly, never as a float); the customer as `customer_id`,
`customer_email` or `customer: {id, email}`; the address as `shipping_address` or the createAndPay
`shipping: {address, method}`. Responses carry both vocabularies too (`items`/`line_items`,
`total`/`total_amount`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = [
    "AddressIn",
    "CreateOrderIn",
    "CustomerIn",
    "ItemIn",
    "LineItemOut",
    "OrderOut",
    "ShippingIn",
    "TimelineEntry",
]

Text = Annotated[str, Meta(max_length=500)]
Sku = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
Amount = Annotated[Decimal, Meta(description='A decimal amount, as a string ("19.99") or an exact JSON number')]
Metadata = Annotated[
    dict[str, Any],
    Meta(description="Up to 50 keys (40 characters each) of strings (500 characters), numbers, booleans or null"),
]


class AddressIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Text | None = None
    company: Text | None = None
    address_line_1: Text | None = None
    address_line_2: Text | None = None
    city: Text | None = None
    state: Text | None = None
    postal_code: Annotated[str, Meta(max_length=32)] | None = None
    country: Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$", description="ISO 3166-1 alpha-2")] | None = None
    phone: Annotated[str, Meta(max_length=40)] | None = None
    email: Text | None = None


class ShippingIn(msgspec.Struct, forbid_unknown_fields=True):
    """The createAndPay shape: `shipping: {address: "123 Main St, …" | {…}, method: "standard"}`."""

    address: Text | AddressIn | None = None
    method: Annotated[str, Meta(max_length=64)] | None = None


class CustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    email: Text | None = None


class ItemIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    unit_price: Amount | None = None
    price: Amount | None = None
    description: Annotated[str, Meta(max_length=1000)] | None = None
    name: Annotated[str, Meta(max_length=1000)] | None = None
    metadata: Metadata | None = None


class CreateOrderIn(msgspec.Struct, forbid_unknown_fields=True):
    items: Annotated[list[ItemIn], Meta(min_length=1, max_length=1000)]
    customer_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    customer_email: Text | None = None
    customer: CustomerIn | None = None
    currency: Annotated[str, Meta(min_length=3, max_length=5)] = "USDC"
    shipping_address: AddressIn | None = None
    billing_address: AddressIn | None = None
    shipping: ShippingIn | None = None
    metadata: Metadata | None = None
    notes: Annotated[str, Meta(max_length=5000)] | None = None


class LineItemOut(msgspec.Struct):
    id: str
    sku: str
    description: str | None
    quantity: int
    unit_price: str
    price: str  # the API reference's name for unit_price
    total_price: str
    status: str
    metadata: dict[str, Any]


class CustomerRef(msgspec.Struct):
    id: str | None
    email: str | None


class TimelineEntry(msgspec.Struct):
    status: str
    timestamp: str
    type: str
    event_id: str


class OrderOut(msgspec.Struct):
    id: str
    order_number: int
    status: str
    livemode: bool
    currency: str
    customer_id: str | None
    customer_email: str | None
    customer: CustomerRef | None
    items: list[LineItemOut]
    line_items: list[LineItemOut]  # the API reference's name for items
    subtotal: str
    tax: str
    shipping: str
    total: str
    total_amount: str  # the API reference's name for total
    shipping_address: dict[str, Any] | None
    shipping_method: str | None
    billing_address: dict[str, Any] | None
    metadata: dict[str, Any]
    notes: str | None
    payment_url: str
    created_at: str
    updated_at: str
    object: str = "order"
    timeline: list[TimelineEntry] | msgspec.UnsetType = msgspec.UNSET  # on GET and create, not in events
