"""Exact money: parsing, formatting and half-up rounding, property-tested against Decimal."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.core.errors import ApiError
from stateset_server.core.money import (
    MAX_AMOUNT_MICRO,
    currency_exponent,
    format_amount,
    normalize_currency,
    parse_amount,
    parse_rate,
    round_half_up,
    round_ratio_half_up,
)

CURRENCIES = ["USD", "EUR", "JPY", "KWD", "CLF", "USDC"]


@pytest.mark.parametrize(
    ("text", "currency", "micro"),
    [
        ("19.99", "USD", 19_990_000),
        ("0.000001", "USDC", 1),
        ("1000", "JPY", 1_000_000_000),
        ("1.005", "KWD", 1_005_000),
    ],
)
def test_parse_amount_is_exact(text: str, currency: str, micro: int) -> None:
    assert parse_amount(text, currency, "f") == micro
    assert parse_amount(Decimal(text), currency, "f") == micro


@pytest.mark.parametrize(
    ("text", "currency"), [("1.001", "USD"), ("0.5", "JPY"), ("0.0000001", "USDC"), ("-0.01", "USD"), ("inf", "USD")]
)
def test_parse_amount_refuses_what_would_need_rounding_or_is_not_an_amount(text: str, currency: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_amount(text, currency, "items[0].price")
    assert caught.value.details["field"] == "items[0].price"
    assert caught.value.details["received"] == text


def test_parse_amount_has_an_upper_bound() -> None:
    assert parse_amount("1000000000000", "USD", "f") == MAX_AMOUNT_MICRO
    with pytest.raises(ApiError):
        parse_amount("1000000000000.01", "USD", "f")


@pytest.mark.parametrize(
    ("micro", "currency", "text"),
    [
        (1_096_470_000, "USDC", "1096.47"),
        (87_499_125, "USDC", "87.499125"),
        (10_000_000, "USDC", "10.00"),
        (59_970_000, "USD", "59.97"),
        (5_000_000, "JPY", "5"),
        (2_010_000, "KWD", "2.010"),
        (0, "USD", "0.00"),
    ],
)
def test_format_amount(micro: int, currency: str, text: str) -> None:
    assert format_amount(micro, currency) == text


@given(st.sampled_from(CURRENCIES), st.integers(min_value=0, max_value=10**18))
def test_format_then_parse_round_trips(currency: str, raw: int) -> None:
    step = 10 ** (6 - currency_exponent(currency))
    micro = min(raw, MAX_AMOUNT_MICRO) // step * step
    assert parse_amount(format_amount(micro, currency), currency, "f") == micro


@given(
    st.sampled_from(CURRENCIES),
    st.integers(min_value=0, max_value=10**18),
    st.decimals(min_value=0, max_value=1, places=6, allow_nan=False, allow_infinity=False),
)
def test_round_half_up_matches_decimal(currency: str, micro: int, rate: Decimal) -> None:
    exact = Fraction(micro) * Fraction(rate)
    step = Decimal(1).scaleb(6 - currency_exponent(currency))
    expected = (Decimal(micro) * rate / step).quantize(Decimal(1), ROUND_HALF_UP) * step
    assert round_half_up(exact, currency) == int(expected)


@given(
    st.sampled_from(CURRENCIES),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.integers(min_value=1, max_value=10**7),
    st.integers(min_value=1, max_value=1000),
)
def test_round_ratio_half_up_is_round_half_up(currency: str, numerator: int, denominator: int, scale: int) -> None:
    """Integer rounding of a ratio, reduced or not, equals rounding the exact fraction (as the tax
    of an order: subtotal × rate numerator over rate denominator)."""
    expected = round_half_up(Fraction(numerator, denominator), currency)
    assert round_ratio_half_up(numerator, denominator, currency) == expected
    assert round_ratio_half_up(numerator * scale, denominator * scale, currency) == expected
    exact = Decimal(numerator) / Decimal(denominator)  # only where Decimal is exact
    if Fraction(exact) == Fraction(numerator, denominator):
        step = Decimal(1).scaleb(6 - currency_exponent(currency))
        assert expected == int((exact / step).quantize(Decimal(1), ROUND_HALF_UP) * step)


def test_round_half_up_on_halves() -> None:
    assert round_half_up(Fraction(175_000, 10), "USD") == 20_000  # 0.0175 → 0.02
    assert round_half_up(Fraction(165_000, 10), "USD") == 20_000  # 0.0165 → 0.02 (not banker's 0.02/0.01)
    assert round_half_up(Fraction(87_500_000), "JPY") == 88_000_000
    assert round_half_up(Fraction(-175_000, 10), "USD") == -20_000


def test_currencies() -> None:
    assert normalize_currency("usdc") == "USDC"
    assert [currency_exponent(c) for c in CURRENCIES] == [2, 2, 0, 3, 4, 6]
    with pytest.raises(ApiError):
        normalize_currency("ABC")
    assert parse_rate("0.0875") == Fraction(7, 80)
    with pytest.raises(ValueError):
        parse_rate("-1")
