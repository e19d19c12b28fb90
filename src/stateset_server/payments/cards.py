"""Sandbox card processing: the API reference's test cards, tokenised on arrival.

Only a token, the brand and the last four digits are kept; the number and CVC are dropped before
anything is stored or logged. Live-mode cards need a real processor, which this server does not have,
so they are declined with `processor_unavailable`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stateset_server.core.errors import ApiError

__all__ = ["CardDeclined", "CardResult", "authorize_card"]

# number -> (decline code, message); None: approved
TEST_CARDS: dict[str, tuple[str, str] | None] = {
    "4242424242424242": None,
    "4000000000000002": ("card_declined", "Your card was declined."),
    "4000000000009995": ("insufficient_funds", "Your card has insufficient funds."),
    "4000000000000127": ("incorrect_cvc", "Your card's security code is incorrect."),
}
_OUTCOME_BY_LAST4 = {number[-4:]: outcome for number, outcome in TEST_CARDS.items()}


@dataclass(frozen=True)
class CardResult:
    token: str
    brand: str
    last4: str


class CardDeclined(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _luhn_ok(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def authorize_card(
    *, livemode: bool, number: str | None, token: str | None, brand: str | None, last4: str | None
) -> CardResult:
    """Approve or decline a card payment; raises ApiError (422) for malformed cards, CardDeclined for declines."""
    if livemode:
        raise CardDeclined("processor_unavailable", "Live card payments need a card processor; none is configured.")
    if number is not None:
        digits = number.replace(" ", "").replace("-", "")
        if not digits.isdigit() or not 12 <= len(digits) <= 19 or not _luhn_ok(digits):
            raise ApiError.field(
                "payment_method.number", "not a valid card number", expected="a test card number", received="[redacted]"
            )
        if digits not in TEST_CARDS:
            raise CardDeclined("test_mode_live_card", "Your request was in test mode, but used a non-test card.")
        outcome = TEST_CARDS[digits]
        if outcome is not None:
            raise CardDeclined(*outcome)
        # A stable token for the same card, derived so it cannot be turned back into the number.
        token = "tok_" + hashlib.sha256(b"stateset-test-card:" + digits.encode()).hexdigest()[:24]
        return CardResult(token, _brand(digits), digits[-4:])
    if token is None:
        raise ApiError.field(
            "payment_method",
            "a card payment needs a number or a token",
            expected="payment_method.number or payment_method.token",
            code="MISSING_REQUIRED_FIELD",
        )
    if last4 is not None and (outcome := _OUTCOME_BY_LAST4.get(last4)) is not None:
        raise CardDeclined(*outcome)
    return CardResult(token, (brand or "unknown").lower(), last4 or "0000")
