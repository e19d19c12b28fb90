"""Order wire types: what clients send and what they get back. They validate requests (msgspec) and
generate the OpenAPI document, so the two can never disagree.

Both spec shapes are accepted: items priced with `unit_price` (Orders API) or `price` (API reference
SDK examples; a JSON number is read exactly, never as a float); the customer as `customer_id`,
`customer_email` or `customer: {id, email}`; the address as `shipping_address` or the createAndPay
`shipping: {address, method}`. Responses carry both vocabularies too (`items`/`line_items`,
`total`/`total_amount`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = [
    "AddressIn",
    "CreateOrderIn",
    "CustomerIn",
    "DeliverIn",
    "FulfillIn",
    "ItemIn",
    "LineItemOut",
    "OrderOut",
    "PayIn",
    "PaymentMethodIn",
    "PaymentOut",
    "ReasonIn",
    "RefundIn",
    "ShipIn",
    "ShippingIn",
    "TimelineEntry",
    "UpdateOrderIn",
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


Moment = Annotated[datetime, Meta(tz=True, description="ISO 8601 with a time zone, e.g. 2024-06-26T09:00:00Z")]
Reason = Annotated[str, Meta(max_length=500)]


class PaymentMethodIn(msgspec.Struct, forbid_unknown_fields=True):
    """`{type: usdc, wallet_address, amount}` or a card: a test card `number` (sandbox) or a `token`."""

    type: Annotated[str, Meta(pattern=r"^(?i:usdc|card)$")] = "usdc"
    wallet_address: Annotated[str, Meta(max_length=128)] | None = None
    amount: Amount | None = None
    number: Annotated[str, Meta(max_length=32)] | None = None
    exp_month: Annotated[int, Meta(ge=1, le=12)] | None = None
    exp_year: Annotated[int, Meta(ge=2000, le=2100)] | None = None
    cvc: Annotated[str, Meta(pattern=r"^[0-9]{3,4}$")] | None = None
    token: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    last4: Annotated[str, Meta(pattern=r"^[0-9]{4}$")] | None = None
    brand: Annotated[str, Meta(max_length=32)] | None = None


class PayIn(msgspec.Struct, forbid_unknown_fields=True):
    """Both spec shapes: `payment_method: {type, wallet_address, amount}` (Pay Order) and
    `{method: "usdc", amount}` (createAndPay, the SDK's pay). `test_mode: "fail"` simulates a decline."""

    payment_method: PaymentMethodIn | None = None
    method: Annotated[str, Meta(pattern=r"^(?i:usdc|card)$")] | None = None
    amount: Amount | None = None
    currency: Annotated[str, Meta(min_length=3, max_length=5)] | None = None
    wallet_address: Annotated[str, Meta(max_length=128)] | None = None
    billing_address: AddressIn | None = None
    test_mode: Annotated[str, Meta(pattern=r"^fail$")] | None = None


class FulfillIn(msgspec.Struct, forbid_unknown_fields=True):
    tracking_number: Annotated[str, Meta(max_length=128)] | None = None
    carrier: Annotated[str, Meta(max_length=64)] | None = None
    items: list[Any] | None = None  # the SDK sends the order's items; every item is fulfilled


class ShipIn(msgspec.Struct, forbid_unknown_fields=True):
    tracking_number: Annotated[str, Meta(max_length=128)] | None = None
    carrier: Annotated[str, Meta(max_length=64)] | None = None
    shipped_at: Moment | None = None
    estimated_delivery: Moment | None = None


class DeliverIn(msgspec.Struct, forbid_unknown_fields=True):
    delivered_at: Moment | None = None


class ReasonIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    amount: Amount | None = None  # default: everything still refundable
    reason: Reason | None = None


class UpdateOrderIn(msgspec.Struct, forbid_unknown_fields=True):
    """PUT and PATCH: only these fields. Metadata merges (a null or empty value removes the key);
    addresses change only before shipping; `status` moves the order through the state machine."""

    metadata: Metadata | None = None
    shipping_address: AddressIn | None = None
    billing_address: AddressIn | None = None
    shipping_method: Annotated[str, Meta(max_length=64)] | None = None
    notes: Annotated[str, Meta(max_length=5000)] | None = None
    status: Annotated[str, Meta(max_length=32)] | None = None
    reason: Reason | None = None


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
    payment: PayIn | None = None  # createAndPay: pay in the same transaction, all or nothing


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


class FeesOut(msgspec.Struct):
    network_fee: str
    processing_fee: str


class CardOut(msgspec.Struct):
    brand: str | None
    last4: str | None


class PaymentOut(msgspec.Struct):
    id: str
    order_id: str
    status: str
    method: str
    amount: str
    amount_refunded: str
    currency: str
    fees: FeesOut
    wallet_address: str | None
    card: CardOut | None
    transaction_hash: str | None
    paid_at: str
    object: str = "payment"


class PaymentSummary(msgspec.Struct):
    """The Orders API's `payment` block: what has been paid, by the latest method."""

    id: str
    status: str  # PAID, PARTIALLY_PAID, PARTIALLY_REFUNDED or REFUNDED
    amount: str
    method: str  # USDC or CARD
    paid_at: str
    transaction_hash: str | None


class ShippingDetails(msgspec.Struct):
    method: str | None
    carrier: str | None
    tracking_number: str | None
    estimated_delivery: str | None
    shipped_at: str | None
    delivered_at: str | None


class TimelineEntry(msgspec.Struct):
    status: str
    timestamp: str
    type: str
    event_id: str


class OrderOut(msgspec.Struct, dict=True):  # dict: `document.render` keeps its Rendered on it
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
    created_at: str
    updated_at: str
    amount_paid: str
    amount_refunded: str
    amount_due: str
    payment: PaymentSummary | None
    payments: list[PaymentOut]
    shipping_details: ShippingDetails
    status_reason: str | None
    resume_status: str | None  # HELD/DISPUTED/RELEASED/RESOLVED orders: the status they stand for
    paid_at: str | None
    fulfilled_at: str | None
    cancelled_at: str | None
    object: str = "order"
    timeline: list[TimelineEntry] | msgspec.UnsetType = msgspec.UNSET  # on GET and create, not in events
    # Last, so the stored document (orders/document.py) is the JSON up to it: it depends on the request.
    payment_url: str = ""
