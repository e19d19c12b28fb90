"""Wallet addresses: bech32 and EIP-55 vectors, every single-character typo, and property tests."""

from __future__ import annotations

import hashlib

import bech32
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.payments.addresses import (
    InvalidAddress,
    encode_stateset_address,
    keccak256,
    normalize_wallet_address,
    to_checksum_address,
)

CUSTOMER_RAW = b"customer____________"
CUSTOMER = "stateset1vd6hxar0d4jhyh6lta047h6lta047h6ld4snts"

# The test vectors of EIP-55 itself.
EIP55_VECTORS = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def _bech32(hrp: str, raw: bytes) -> str:
    """Encode with the reference library directly, bypassing our length checks."""
    return bech32.bech32_encode(hrp, bech32.convertbits(raw, 8, 5))


def _bech32m(hrp: str, raw: bytes) -> str:
    """A bech32m (BIP-350) string, which differs from bech32 only in the checksum constant."""
    data = bech32.convertbits(raw, 8, 5)
    polymod = bech32.bech32_polymod([*bech32.bech32_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ 0x2BC830A3
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(bech32.CHARSET[d] for d in data + checksum)


def test_keccak256_is_legacy_keccak_not_sha3() -> None:
    assert keccak256(b"").hex().startswith("c5d24601")
    assert keccak256(b"") != hashlib.sha3_256(b"").digest()


def test_known_stateset_vector() -> None:
    assert encode_stateset_address(CUSTOMER_RAW) == CUSTOMER
    assert normalize_wallet_address(CUSTOMER) == CUSTOMER
    assert normalize_wallet_address(f"  {CUSTOMER}\n") == CUSTOMER


def test_uppercase_stateset_normalizes_to_lowercase() -> None:
    assert normalize_wallet_address(CUSTOMER.upper()) == CUSTOMER


def test_mixed_case_stateset_is_refused() -> None:
    mixed = CUSTOMER[:10] + CUSTOMER[10:].upper()
    with pytest.raises(InvalidAddress, match="mixed-case"):
        normalize_wallet_address(mixed)


def test_every_single_character_typo_in_the_data_is_caught() -> None:
    # Bech32 guarantees detection of any single substitution; check all of them, checksum included.
    data_start = len("stateset1")
    tried = 0
    for position in range(data_start, len(CUSTOMER)):
        for replacement in bech32.CHARSET:
            if replacement == CUSTOMER[position]:
                continue
            typo = CUSTOMER[:position] + replacement + CUSTOMER[position + 1 :]
            with pytest.raises(InvalidAddress, match="bad bech32 checksum"):
                normalize_wallet_address(typo)
            tried += 1
    assert tried == (len(CUSTOMER) - data_start) * 31


@pytest.mark.parametrize("position", range(len("stateset")))
def test_typo_in_the_prefix_is_caught(position: int) -> None:
    typo = CUSTOMER[:position] + "q" + CUSTOMER[position + 1 :]
    with pytest.raises(InvalidAddress, match="expected human-readable part 'stateset'"):
        normalize_wallet_address(typo)


def test_module_account_round_trips() -> None:
    raw = bytes(range(32))
    address = encode_stateset_address(raw)
    assert address.startswith("stateset1")
    assert normalize_wallet_address(address) == address
    assert normalize_wallet_address(address.upper()) == address


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_eip55_vectors(vector: str) -> None:
    assert normalize_wallet_address(vector) == vector
    assert normalize_wallet_address(vector.lower()) == vector
    assert normalize_wallet_address("0x" + vector[2:].upper()) == vector
    assert to_checksum_address(vector[2:].lower()) == vector


@pytest.mark.parametrize("vector", EIP55_VECTORS)
def test_flipping_the_case_of_any_letter_breaks_the_checksum(vector: str) -> None:
    letters = [i for i, ch in enumerate(vector) if i >= 2 and ch.isalpha()]
    assert letters
    for i in letters:
        flipped = vector[:i] + vector[i].swapcase() + vector[i + 1 :]
        # Flipping the only lowercase (or uppercase) letter would leave no checksum to check.
        if flipped[2:] in (flipped[2:].lower(), flipped[2:].upper()):
            continue
        with pytest.raises(InvalidAddress, match="mixed-case address fails the EIP-55 checksum"):
            normalize_wallet_address(flipped)
        with pytest.raises(InvalidAddress, match="EIP-55"):
            to_checksum_address(flipped)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("stateset1", "too short"),
        ("cosmos1vd6hxar0d4jhyh6lta047h6lta047h6ld4snts", "expected human-readable part 'stateset'"),
        (_bech32("cosmos", CUSTOMER_RAW), "expected human-readable part 'stateset'"),
        (_bech32("stateset", CUSTOMER_RAW[:19]), "expected 20 or 32 bytes, got 19"),
        (_bech32("stateset", bytes(33)), "expected 20 or 32 bytes, got 33"),
        (_bech32m("stateset", CUSTOMER_RAW), "bech32m checksum"),
        (_bech32("stateset", bytes(50)), "longer than 90"),
        (bech32.bech32_encode("stateset", [*bech32.convertbits(bytes(32), 8, 5)[:-1], 1]), "padding"),
        ("stateset1vd6hxar0d4jhyh6lta047h6lta047h6ld4snt", "bad bech32 checksum"),
        ("stateset1bd6hxar0d4jhyh6lta047h6lta047h6ld4snts", "invalid bech32 character"),
        ("stateset1vd6hxar0d4jh yh6lta047h6lta047h6ld4snts", "whitespace"),
        ("statesét1vd6hxar0d4jhyh6lta047h6lta047h6ld4snts", "non-ASCII"),
        ("vd6hxar0d4jhyh6lta047h6lta047h6ld4snts", "expected a stateset1"),
        ("0x123", "expected 0x followed by 40 hex digits"),
        ("0xZZ" + "0" * 38, "expected 0x followed by 40 hex digits"),
        ("0X" + "0" * 40, "expected 0x followed by 40 hex digits"),
        ("0x" + "0" * 41, "expected 0x followed by 40 hex digits"),
        ("0x" + "0" * 20 + " " + "0" * 19, "expected 0x followed by 40 hex digits"),
        ("0x" + "０" * 40, "expected 0x followed by 40 hex digits"),
    ],
)
def test_invalid_text_is_refused_with_a_precise_message(text: str, message: str) -> None:
    with pytest.raises(InvalidAddress, match=message):
        normalize_wallet_address(text)


@pytest.mark.parametrize("value", [12345, None, b"stateset1", [CUSTOMER]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidAddress, match="expected a string"):
        normalize_wallet_address(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"", bytes(19), bytes(21), bytes(31), bytes(33)])
def test_encode_refuses_other_lengths(raw: bytes) -> None:
    with pytest.raises(InvalidAddress, match="expected 20 or 32 bytes"):
        encode_stateset_address(raw)


def test_encode_refuses_non_bytes() -> None:
    with pytest.raises(InvalidAddress, match="expected bytes"):
        encode_stateset_address("customer____________")  # type: ignore[arg-type]


def test_invalid_address_is_a_value_error() -> None:
    assert issubclass(InvalidAddress, ValueError)


@given(st.binary(min_size=20, max_size=20))
def test_random_accounts_round_trip(raw: bytes) -> None:
    address = encode_stateset_address(raw)
    assert normalize_wallet_address(address) == address
    assert normalize_wallet_address(address.upper()) == address
    _, data = bech32.bech32_decode(address)
    assert bytes(bech32.convertbits(data, 5, 8, False)) == raw


@given(st.binary(min_size=32, max_size=32))
def test_random_module_accounts_round_trip(raw: bytes) -> None:
    address = encode_stateset_address(raw)
    assert normalize_wallet_address(address) == address


@given(st.binary(min_size=20, max_size=20))
def test_random_evm_addresses_checksum_is_a_fixed_point(raw: bytes) -> None:
    lower = "0x" + raw.hex()
    checksummed = to_checksum_address(lower)
    assert checksummed.lower() == lower
    assert normalize_wallet_address(lower) == checksummed
    assert normalize_wallet_address(checksummed) == checksummed
    assert to_checksum_address(checksummed) == checksummed


@given(st.one_of(st.text(), st.text(alphabet=bech32.CHARSET + "01xXSTATEset \t"), st.binary(), st.integers()))
def test_arbitrary_input_raises_only_invalid_address(value: object) -> None:
    try:
        result = normalize_wallet_address(value)  # type: ignore[arg-type]
    except InvalidAddress:
        return
    assert normalize_wallet_address(result) == result
