"""Order totals, exactly.

The rule (configurable per server, see README "Tax and shipping"):
- subtotal = Σ quantity × unit_price (exact integers);
- tax = subtotal × tax rate, rounded half-up to the currency's precision (USD cents, USDC 6 decimals);
- shipping = a flat amount (rounded half-up to the currency's precision), free when the subtotal
  reaches the free-shipping threshold, and zero for an order with nothing to ship (subtotal 0);
- total = subtotal + tax + shipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from stateset_server.core.money import round_half_up, round_ratio_half_up

__all__ = ["Pricing", "Totals", "price_order"]


@dataclass(frozen=True)
class Pricing:
    tax_rate: Fraction = Fraction(0)
    shipping_flat: Fraction = Fraction(0)  # micro-units, before rounding to the order's currency
    free_shipping_over: Fraction | None = None  # micro-units; None: never free


@dataclass(frozen=True)
class Totals:
    subtotal: int
    tax: int
    shipping: int
    total: int


def price_order(line_totals: list[int], currency: str, pricing: Pricing) -> Totals:
    subtotal = sum(line_totals)
    rate, over = pricing.tax_rate, pricing.free_shipping_over
    tax = round_ratio_half_up(subtotal * rate.numerator, rate.denominator, currency)
    free = subtotal == 0 or (over is not None and subtotal * over.denominator >= over.numerator)
    shipping = 0 if free else round_half_up(pricing.shipping_flat, currency)
    return Totals(subtotal, tax, shipping, subtotal + tax + shipping)
