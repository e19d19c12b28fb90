"""Fees (exact, floor, never above the amount) and sandbox card rules (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.core.errors import ApiError
from stateset_server.payments.cards import CardDeclined, authorize_card
from stateset_server.payments.fees import FeeSchedule, fees_for


def test_processing_fee_is_floored_basis_points() -> None:
    schedule = FeeSchedule(processing_bps=50, usdc_network_fee=10_000)
    fees = fees_for("usdc", 1_096_470_000, schedule)  # 1096.47 USDC at 50 bps = 5.482350
    assert (fees.network, fees.processing) == (10_000, 5_482_350)
    assert fees_for("usdc", 199, schedule).processing == 0  # floor(199 × 50 / 10,000)
    assert fees_for("card", 1_000_000, schedule).network == 0


@given(st.integers(min_value=1, max_value=10**18), st.integers(min_value=0, max_value=10_000), st.integers(0, 10**9))
def test_fees_never_exceed_the_amount(amount: int, bps: int, network: int) -> None:
    fees = fees_for("usdc", amount, FeeSchedule(processing_bps=bps, usdc_network_fee=network))
    assert 0 <= fees.total <= amount and fees.network >= 0 and fees.processing >= 0


def test_test_cards_and_tokens() -> None:
    approved = authorize_card(livemode=False, number="4242-4242-4242-4242", token=None, brand=None, last4=None)
    assert (approved.brand, approved.last4) == ("visa", "4242")
    assert approved.token.startswith("tok_") and "4242424242424242" not in approved.token
    again = authorize_card(livemode=False, number="4242424242424242", token=None, brand=None, last4=None)
    assert again.token == approved.token
    declines = [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000127", "incorrect_cvc"),
        ("5555555555554444", "test_mode_live_card"),
    ]
    for number, code in declines:
        with pytest.raises(CardDeclined) as caught:
            authorize_card(livemode=False, number=number, token=None, brand=None, last4=None)
        assert caught.value.code == code
    with pytest.raises(ApiError):
        authorize_card(livemode=False, number="4242424242424241", token=None, brand=None, last4=None)  # Luhn
    with pytest.raises(CardDeclined, match="processor"):
        authorize_card(livemode=True, number="4242424242424242", token=None, brand=None, last4=None)
    token = authorize_card(livemode=False, number=None, token="tok_abc", brand="VISA", last4="1881")
    assert (token.token, token.brand, token.last4) == ("tok_abc", "visa", "1881")
