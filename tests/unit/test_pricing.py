"""Order totals (pure)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from stateset_server.core.money import MICRO
from stateset_server.orders.pricing import Pricing, price_order

SPEC = Pricing(tax_rate=Fraction(875, 10_000), shipping_flat=Fraction(999 * MICRO, 100))


def test_the_orders_api_example_in_usd_and_usdc() -> None:
    usd = price_order([999_990_000], "USD", SPEC)
    assert (usd.subtotal, usd.tax, usd.shipping, usd.total) == (999_990_000, 87_500_000, 9_990_000, 1_097_480_000)
    usdc = price_order([999_990_000], "USDC", SPEC)
    assert (usdc.tax, usdc.total) == (87_499_125, 1_097_479_125)


def test_free_shipping_threshold_is_inclusive() -> None:
    pricing = Pricing(shipping_flat=Fraction(5 * MICRO), free_shipping_over=Fraction(100 * MICRO))
    assert price_order([99_990_000], "USD", pricing).shipping == 5 * MICRO
    assert price_order([100 * MICRO], "USD", pricing).shipping == 0


@given(st.lists(st.integers(min_value=0, max_value=10**15), min_size=1, max_size=50), st.sampled_from(["USD", "USDC"]))
def test_total_is_the_exact_sum_of_its_parts(lines: list[int], currency: str) -> None:
    totals = price_order(lines, currency, SPEC)
    assert totals.subtotal == sum(lines)
    assert totals.total == totals.subtotal + totals.tax + totals.shipping
    assert abs(Fraction(totals.tax) - totals.subtotal * SPEC.tax_rate) <= Fraction(
        10 ** (6 - (2 if currency == "USD" else 6)), 2
    )
