"""Server settings, read once from the environment (the CLI sets them from its flags)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from stateset_server.core.money import MICRO, parse_rate
from stateset_server.orders.pricing import Pricing
from stateset_server.payments.fees import FeeSchedule

__all__ = ["DEFAULT_DATABASE_URL", "Settings", "flag"]

DEFAULT_DATABASE_URL = "sqlite:///stateset.db"


_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


def flag(name: str, value: str | None, *, auto: bool = False) -> bool | None:
    """A true/false setting's value (1/true/yes/on, 0/false/no/off, any case); None when it is unset
    or empty, or `auto` where that is allowed. ValueError on anything else, so that a typo stops the
    server at start-up instead of leaving it configured otherwise than intended."""
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text == "" or (auto and text == "auto"):
        return None
    raise ValueError(f"{name} must be {'auto, ' if auto else ''}true or false, got {value!r}")


def _amount(name: str, value: str) -> Fraction:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} must be a decimal amount such as 9.99, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a non-negative decimal amount, got {value!r}")
    return Fraction(amount) * MICRO


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str | None = None  # how clients reach this server, for payment_url and documentation links
    tax_rate: str = "0"  # e.g. "0.0875" for 8.75 %
    shipping_rate: str = "0"  # flat shipping per order, in the order's currency
    free_shipping_over: str | None = None  # subtotal at or above which shipping is free
    processing_fee_bps: int = 0  # payment processing fee in basis points of the amount
    usdc_network_fee: str = "0.01"  # flat network fee per USDC payment

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            database_url=env.get("STATESET_DATABASE_URL") or DEFAULT_DATABASE_URL,
            public_url=(env.get("STATESET_PUBLIC_URL") or "").rstrip("/") or None,
            tax_rate=env.get("STATESET_TAX_RATE") or "0",
            shipping_rate=env.get("STATESET_SHIPPING_RATE") or "0",
            free_shipping_over=env.get("STATESET_FREE_SHIPPING_OVER") or None,
            processing_fee_bps=int(env.get("STATESET_PROCESSING_FEE_BPS") or "0"),
            usdc_network_fee=env.get("STATESET_USDC_NETWORK_FEE") or "0.01",
        )

    def fees(self) -> FeeSchedule:
        if not 0 <= self.processing_fee_bps <= 10_000:
            raise ValueError("STATESET_PROCESSING_FEE_BPS must be between 0 and 10000")
        network = _amount("STATESET_USDC_NETWORK_FEE", self.usdc_network_fee)
        if network.denominator != 1:
            raise ValueError("STATESET_USDC_NETWORK_FEE has more than 6 decimals")
        return FeeSchedule(processing_bps=self.processing_fee_bps, usdc_network_fee=int(network))

    def pricing(self) -> Pricing:
        return Pricing(
            tax_rate=parse_rate(self.tax_rate),
            shipping_flat=_amount("STATESET_SHIPPING_RATE", self.shipping_rate),
            free_shipping_over=(
                _amount("STATESET_FREE_SHIPPING_OVER", self.free_shipping_over) if self.free_shipping_over else None
            ),
        )
