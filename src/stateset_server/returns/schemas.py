"""Return wire types: requests (validated by msgspec) and the return as clients see it. They also
generate the OpenAPI document. Names carry a `Return` prefix so they never collide with another
resource's schema components.

Action bodies accept what the official SDKs send: `approve {notes}`, `cancel {reason}`,
`receive {received_by}`.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = [
    "CreateReturnIn",
    "ReturnApproveIn",
    "ReturnItemIn",
    "ReturnItemOut",
    "ReturnOut",
    "ReturnProcessIn",
    "ReturnReasonIn",
    "ReturnReceiveIn",
    "ReturnRestockOut",
    "ReturnTimelineEntry",
]

Reason = Annotated[str, Meta(min_length=1, max_length=500)]
Note = Annotated[str, Meta(max_length=500)]
Location = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]
ObjectId = Annotated[str, Meta(min_length=1, max_length=128)]
Metadata = Annotated[
    dict[str, Any],
    Meta(description="Up to 50 keys (40 characters each) of strings (500 characters), numbers, booleans or null"),
]


class ReturnItemIn(msgspec.Struct, forbid_unknown_fields=True):
    """A line of the order, by its id or its SKU (a SKU on several lines takes them in order)."""

    quantity: Annotated[int, Meta(ge=1, le=1_000_000)]
    order_item_id: ObjectId | None = None
    sku: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class CreateReturnIn(msgspec.Struct, forbid_unknown_fields=True):
    """`items` defaults to everything the order has not returned yet. `order_id` is required on
    POST /v1/returns and implied by the path on POST /v1/orders/{order_id}/returns."""

    reason: Reason
    order_id: ObjectId | None = None
    items: Annotated[list[ReturnItemIn], Meta(min_length=1, max_length=1000)] | None = None
    metadata: Metadata | None = None


class ReturnApproveIn(msgspec.Struct, forbid_unknown_fields=True):
    notes: Note | None = None


class ReturnReasonIn(msgspec.Struct, forbid_unknown_fields=True):
    """reject and cancel: why."""

    reason: Note | None = None


class ReturnReceiveIn(msgspec.Struct, forbid_unknown_fields=True):
    """`restock` (default true) puts the goods back on hand at `location` (default "default"), for
    SKUs whose product tracks inventory."""

    restock: bool = True
    location: Location = "default"
    received_by: Note | None = None
    notes: Note | None = None


class ReturnProcessIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Note | None = None


class ReturnItemOut(msgspec.Struct):
    id: str
    order_item_id: str
    sku: str
    quantity: int
    unit_price: str
    total: str


class ReturnRestockOut(msgspec.Struct):
    sku: str
    location: str
    quantity: int


class ReturnTimelineEntry(msgspec.Struct):
    status: str
    timestamp: str
    type: str
    event_id: str


class ReturnOut(msgspec.Struct):
    id: str
    order_id: str
    status: str
    livemode: bool
    reason: str | None
    currency: str
    items: list[ReturnItemOut]
    subtotal: str  # Σ quantity × unit_price
    tax: str  # the items' share of the order's tax
    refund_amount: str  # subtotal + tax: what processing refunds
    refund_id: str | None  # the refund made when processed (the first, if it spanned payments)
    refunded_at: str | None
    restock_location: str | None
    restocked: list[ReturnRestockOut]  # what went back on hand, per SKU and location
    metadata: dict[str, Any]
    status_reason: str | None  # the notes or reason given with the latest status change
    received_by: str | None
    created_at: str
    updated_at: str
    approved_at: str | None
    rejected_at: str | None
    cancelled_at: str | None
    received_at: str | None
    processed_at: str | None
    object: str = "return"
    timeline: list[ReturnTimelineEntry] | msgspec.UnsetType = msgspec.UNSET  # not in lists
