"""Exact money: amounts are integer micro-units (10**-6 of a currency unit) everywhere inside the server.

Why micro-units for every currency: USDC has 6 decimals and no ISO 4217 currency has more than 4,
so one integer scale holds every amount exactly, sums are plain integer additions and the database
can sort and filter amounts as integers. Strings are the only wire format; floats never appear.

Rounding is explicit: `round_half_up` to the currency's own precision, used for computed charges
such as tax. Inputs with more decimals than the currency allows are rejected, never rounded.
"""

from __future__ import annotations

import functools
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from stateset_server.core.errors import ApiError

__all__ = [
    "MAX_AMOUNT_MICRO",
    "MICRO",
    "currency_exponent",
    "format_amount",
    "normalize_currency",
    "parse_amount",
    "parse_rate",
    "round_half_up",
    "round_ratio_half_up",
]

MICRO = 1_000_000
# 10^12 currency units: far above any order, far below the 2**63 limit of a BIGINT in micro-units
# even after summing 1,000 line items.
MAX_AMOUNT_MICRO = 10**12 * MICRO

# Stablecoins carry 6 decimals on chain; amounts are shown with at least 2 and at most 6.
_TOKENS = {"USDC": 6, "USDT": 6, "EURC": 6, "PYUSD": 6}
_ZERO_DECIMAL = frozenset("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split())
_THREE_DECIMAL = frozenset("BHD IQD JOD KWD LYD OMR TND".split())
_FOUR_DECIMAL = frozenset({"CLF", "UYW"})
_ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV
    MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG
    SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI
    UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG""".split()
)


def normalize_currency(code: str, field: str = "currency") -> str:
    upper = code.strip().upper()
    if upper in _TOKENS or upper in _ISO_4217:
        return upper
    raise ApiError.field(
        field,
        f"unknown currency '{code}'",
        expected="an ISO 4217 code such as USD or EUR, or USDC/USDT/EURC/PYUSD",
        received=code,
    )


def currency_exponent(currency: str) -> int:
    """How many decimals the currency has (USD 2, JPY 0, KWD 3, USDC 6)."""
    if currency in _TOKENS:
        return _TOKENS[currency]
    if currency in _ZERO_DECIMAL:
        return 0
    if currency in _THREE_DECIMAL:
        return 3
    if currency in _FOUR_DECIMAL:
        return 4
    return 2


def parse_amount(value: Decimal | str | int, currency: str, field: str) -> int:
    """A non-negative amount from the wire, exactly, as micro-units. Rejects what would need rounding."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    expected = f'a non-negative decimal string with at most {currency_exponent(currency)} decimals, e.g. "19.99"'
    shown = str(value)
    if not amount.is_finite():
        raise ApiError.field(field, "not a finite decimal amount", expected=expected, received=shown)
    if amount < 0:
        raise ApiError.field(field, "must not be negative", expected=expected, received=shown)
    if amount >= 10**12 + 1:  # checked first so the quantize below never overflows the context
        raise ApiError.field(field, "amount is too large", expected="at most 1000000000000", received=shown)
    exponent = currency_exponent(currency)
    if amount != amount.quantize(Decimal(1).scaleb(-exponent), rounding="ROUND_DOWN"):
        raise ApiError.field(
            field, f"{currency} amounts have at most {exponent} decimal places", expected=expected, received=shown
        )
    micro = int(amount.scaleb(6))
    if micro > MAX_AMOUNT_MICRO:
        raise ApiError.field(field, "amount is too large", expected="at most 1000000000000", received=shown)
    return micro


def parse_rate(value: str) -> Fraction:
    """A non-negative rate such as a tax rate ("0.0875"), kept as an exact fraction."""
    rate = Decimal(value)
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"rate must be a non-negative decimal, got {value!r}")
    return Fraction(rate)


def round_half_up(micro: Fraction, currency: str) -> int:
    """Round an exact micro-unit quantity to the currency's precision, halves away from zero."""
    return round_ratio_half_up(micro.numerator, micro.denominator, currency)


def round_ratio_half_up(numerator: int, denominator: int, currency: str) -> int:
    """`round_half_up` of numerator / denominator micro-units (denominator > 0), in integers only:
    Fraction arithmetic cost several µs per order."""
    step = 10 ** (6 - currency_exponent(currency))
    scale = denominator * step  # units of the currency's precision = numerator / scale
    if numerator >= 0:
        return (numerator * 2 + scale) // (scale * 2) * step
    return -((-numerator * 2 + scale) // (scale * 2)) * step


@functools.lru_cache(maxsize=4096)  # pure, and an order shows a dozen amounts, mostly recurring ones
def format_amount(micro: int, currency: str) -> str:
    """The wire form: `"1096.47"`; fiat with exactly its decimals, tokens with 2 to 6 decimals."""
    sign = "-" if micro < 0 else ""
    units, frac = divmod(abs(micro), MICRO)
    exponent = currency_exponent(currency)
    digits = f"{frac:06d}"
    digits = digits.rstrip("0").ljust(2, "0") if currency in _TOKENS else digits[:exponent]
    return f"{sign}{units}.{digits}" if digits else f"{sign}{units}"
