"""Payments and refunds as the domain sees them (money in integer micro-units)."""

from __future__ import annotations

import msgspec

__all__ = ["Payment", "Refund"]


class Payment(msgspec.Struct, frozen=True):
    id: str
    order_id: str
    method: str  # "usdc" | "card"
    status: str  # "succeeded"
    amount: int
    amount_refunded: int
    currency: str
    network_fee: int
    processing_fee: int
    wallet_address: str | None  # usdc: the payer's wallet (None: the sandbox wallet)
    card_brand: str | None  # card: brand, last 4 digits and token only — never the number
    card_last4: str | None
    card_token: str | None
    transaction_hash: str | None
    created_at: int

    @property
    def refundable(self) -> int:
        return self.amount - self.amount_refunded


class Refund(msgspec.Struct, frozen=True):
    id: str
    order_id: str
    payment_id: str
    amount: int
    reason: str | None
    transaction_hash: str | None
    created_at: int
