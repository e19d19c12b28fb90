"""Returns (RMA) as the domain sees them: the status vocabulary, the transition table (pure: no I/O,
no clock) and plain values with money in integer micro-units.

    requested → approved | rejected | cancelled
    approved  → received | cancelled
    received  → processed
    rejected, cancelled, processed: terminal

A return counts against what an order can still return unless it was rejected or cancelled: those
two give their quantities back.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "TRANSITIONS",
    "UNCOUNTED",
    "IllegalReturnTransition",
    "Return",
    "ReturnItem",
    "ReturnStatus",
    "allowed_next",
    "parse_return_status",
    "transition",
]


class ReturnStatus(StrEnum):
    REQUESTED = "requested"  # the customer asked; nothing moved yet
    APPROVED = "approved"  # the merchant accepts the goods back
    REJECTED = "rejected"  # terminal: refused, quantities returnable again
    CANCELLED = "cancelled"  # terminal: withdrawn, quantities returnable again
    RECEIVED = "received"  # the goods are back (restocked if asked); the order is RETURNED
    PROCESSED = "processed"  # terminal: the value was refunded through the order's payments


TRANSITIONS: dict[ReturnStatus, frozenset[ReturnStatus]] = {
    ReturnStatus.REQUESTED: frozenset({ReturnStatus.APPROVED, ReturnStatus.REJECTED, ReturnStatus.CANCELLED}),
    ReturnStatus.APPROVED: frozenset({ReturnStatus.RECEIVED, ReturnStatus.CANCELLED}),
    ReturnStatus.RECEIVED: frozenset({ReturnStatus.PROCESSED}),
    ReturnStatus.REJECTED: frozenset(),
    ReturnStatus.CANCELLED: frozenset(),
    ReturnStatus.PROCESSED: frozenset(),
}

# Statuses whose items no longer count as returned: the order may return them again.
UNCOUNTED = frozenset({ReturnStatus.REJECTED, ReturnStatus.CANCELLED})


class IllegalReturnTransition(Exception):
    def __init__(self, current: ReturnStatus, requested: ReturnStatus) -> None:
        self.current = current
        self.requested = requested
        self.allowed = sorted(TRANSITIONS[current])
        super().__init__(f"A return in status {current} cannot become {requested}")


def allowed_next(status: ReturnStatus) -> frozenset[ReturnStatus]:
    return TRANSITIONS[status]


def transition(current: ReturnStatus, target: ReturnStatus) -> ReturnStatus:
    """`target`, if the table allows moving there from `current`; IllegalReturnTransition otherwise."""
    if target not in TRANSITIONS[current]:
        raise IllegalReturnTransition(current, target)
    return target


def parse_return_status(text: str) -> str | None:
    """A status from a query string, in any case; None when it is not one."""
    try:
        return ReturnStatus(text.strip().lower()).value
    except ValueError:
        return None


class ReturnItem(msgspec.Struct, frozen=True):
    id: str
    order_item_id: str
    sku: str
    quantity: int
    unit_price: int  # micro-units: the order line's price, fixed when the return is created

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price


class Return(msgspec.Struct, frozen=True):
    id: str
    workspace_id: str
    mode: str
    order_id: str
    currency: str  # the order's (not stored on the return: an order's currency never changes)
    status: ReturnStatus
    reason: str | None
    # The return's value, fixed at creation: its items plus their share of the order's tax (see
    # service.return_tax). Processing refunds exactly this amount.
    refund_amount: int
    refund_id: str | None
    restock_location: str | None  # where received goods went back on hand; None: not restocked
    metadata: dict[str, Any]
    version: int
    created_at: int  # Unix microseconds
    updated_at: int
    items: list[ReturnItem]

    @property
    def subtotal(self) -> int:
        return sum(item.total for item in self.items)

    @property
    def tax(self) -> int:
        return self.refund_amount - self.subtotal
