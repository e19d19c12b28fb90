"""Order statuses — the vocabulary of the Orders API's lifecycle table — and the aliases clients use."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ALIASES", "OrderStatus", "parse_status"]


class OrderStatus(StrEnum):
    CREATED = "CREATED"  # placed, awaiting payment
    PAID = "PAID"  # payment confirmed
    FULFILLED = "FULFILLED"  # items prepared for shipping ("processing" in the API reference)
    SHIPPED = "SHIPPED"  # in transit
    DELIVERED = "DELIVERED"  # completed successfully
    HELD = "HELD"  # temporarily paused (fraud review, stock, customer request)
    RELEASED = "RELEASED"  # hold lifted; continues as the status it was held from
    CANCELLED = "CANCELLED"  # terminal
    RETURNED = "RETURNED"  # returned by the customer, awaiting refund
    REFUNDED = "REFUNDED"  # terminal
    DISPUTED = "DISPUTED"  # under dispute (chargeback)
    RESOLVED = "RESOLVED"  # dispute closed in the merchant's favour


# The API reference's lowercase vocabulary.
ALIASES = {"pending": OrderStatus.CREATED, "processing": OrderStatus.FULFILLED}


def parse_status(text: str) -> OrderStatus | None:
    lowered = text.strip().lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    try:
        return OrderStatus(lowered.upper())
    except ValueError:
        return None
