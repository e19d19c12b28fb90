"""Wallet addresses a customer may pay from: StateSet bech32 accounts and EVM (0x…) accounts.

Addresses arrive as free text typed or pasted by people, so the one entry point,
`normalize_wallet_address`, checks every checksum the format offers and returns one canonical
spelling. Storing the canonical form means equal wallets compare equal as strings, and a typo is
refused here instead of sending USDC somewhere nobody can spend it. Everything is pure: no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache

from bech32 import CHARSET, bech32_decode, bech32_encode, bech32_hrp_expand, bech32_polymod, convertbits
from Crypto.Hash import keccak

__all__ = [
    "STATESET_HRP",
    "InvalidAddress",
    "encode_stateset_address",
    "keccak256",
    "normalize_wallet_address",
    "to_checksum_address",
]

STATESET_HRP = "stateset"
# Plain accounts are 20-byte hashes of a public key; module accounts are 32-byte hashes.
_ACCOUNT_LENGTHS = (20, 32)
# BIP-173 caps the whole string at 90 characters; the reference decoder leaves this check out.
_BECH32_MAX_LENGTH = 90
# The checksum constant of bech32m (BIP-350). It is only used to explain a refusal: StateSet
# addresses are plain bech32, whose residue is 1.
_BECH32M_CONST = 0x2BC830A3
# ASCII-only on purpose: `str.isdigit` and `\d` would accept other scripts' digits.
_EVM_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


class InvalidAddress(ValueError):
    """The text is not a wallet address we accept; the message says exactly what is wrong."""


def keccak256(data: bytes) -> bytes:
    """Legacy Keccak-256 as Ethereum uses it (not NIST SHA3-256, which pads differently)."""
    return keccak.new(digest_bits=256, data=bytes(data)).digest()


def normalize_wallet_address(text: str) -> str:
    """Validate a StateSet bech32 or EVM address and return its canonical spelling.

    StateSet addresses come back lowercase; EVM addresses come back in EIP-55 checksummed case.
    Bad input of any kind, including a non-string, raises `InvalidAddress` and nothing else.
    """
    if not isinstance(text, str):
        raise InvalidAddress(f"expected a string, got {type(text).__name__}")
    return _canonical(text)


@lru_cache(maxsize=8192)  # a pure function over a few recurring wallets; the checksums cost ~20 µs
def _canonical(text: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidAddress("address is empty")
    # "0X" is routed here too so it is refused with the EVM message rather than a bech32 one.
    if text[:2].lower() == "0x":
        return to_checksum_address(text)
    return encode_stateset_address(_decode_stateset(text))


def to_checksum_address(hex40_or_0x: str) -> str:
    """EIP-55 form of an EVM address given with or without `0x`.

    Mixed-case input is a claim that it is already checksummed, so it must match; all-lowercase or
    all-uppercase input carries no checksum and is accepted as is.
    """
    if not isinstance(hex40_or_0x, str):
        raise InvalidAddress(f"expected a string, got {type(hex40_or_0x).__name__}")
    if _HEX40.fullmatch(hex40_or_0x):
        digits = hex40_or_0x
    elif _EVM_ADDRESS.fullmatch(hex40_or_0x):
        digits = hex40_or_0x[2:]
    else:
        raise InvalidAddress("expected 0x followed by 40 hex digits")
    checksummed = _eip55(digits.lower())
    if digits not in (digits.lower(), digits.upper()) and digits != checksummed:
        raise InvalidAddress("mixed-case address fails the EIP-55 checksum")
    return "0x" + checksummed


def encode_stateset_address(raw: bytes) -> str:
    """Bech32-encode a 20-byte account or 32-byte module account under the `stateset` prefix."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidAddress(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) not in _ACCOUNT_LENGTHS:
        raise InvalidAddress(f"expected 20 or 32 bytes, got {len(raw)}")
    # Padding 8-bit groups into 5-bit ones cannot fail, so the result is never None here.
    five_bit = convertbits(raw, 8, 5, True)
    assert five_bit is not None
    return bech32_encode(STATESET_HRP, five_bit)


def _eip55(lower_hex: str) -> str:
    """Uppercase each hex letter whose nibble in keccak256(lowercase hex text) is >= 8."""
    digest = keccak256(lower_hex.encode("ascii")).hex()
    return "".join(ch.upper() if int(nibble, 16) >= 8 else ch for ch, nibble in zip(lower_hex, digest, strict=False))


def _decode_stateset(text: str) -> bytes:
    """Raw account bytes of a bech32 `stateset1…` address.

    The cheap structural checks come first so the message names the actual problem (a wrong prefix
    is more useful to hear about than the checksum failure it also causes).
    """
    if len(text) > _BECH32_MAX_LENGTH:
        raise InvalidAddress(f"bech32 address is longer than {_BECH32_MAX_LENGTH} characters")
    if any(not 33 <= ord(ch) <= 126 for ch in text):
        raise InvalidAddress("address contains whitespace or non-ASCII characters")
    # BIP-173: a reader may accept either case, but never a mix of both.
    if text not in (text.lower(), text.upper()):
        raise InvalidAddress("mixed-case bech32 address")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 1:
        raise InvalidAddress("expected a stateset1… bech32 address or 0x followed by 40 hex digits")
    hrp, data_part = text[:separator], text[separator + 1 :]
    if hrp != STATESET_HRP:
        raise InvalidAddress(f"expected human-readable part {STATESET_HRP!r}, got {hrp!r}")
    if len(data_part) < 6:
        raise InvalidAddress("bech32 data is too short to hold a checksum")
    if any(ch not in CHARSET for ch in data_part):
        raise InvalidAddress("invalid bech32 character in data part")
    _, data = bech32_decode(text)
    if data is None:
        values = bech32_hrp_expand(hrp) + [CHARSET.index(ch) for ch in data_part]
        if bech32_polymod(values) == _BECH32M_CONST:
            raise InvalidAddress("bech32m checksum; StateSet addresses use bech32")
        raise InvalidAddress("bad bech32 checksum")
    raw = convertbits(data, 5, 8, False)
    if raw is None:
        raise InvalidAddress("bech32 data has invalid padding")
    if len(raw) not in _ACCOUNT_LENGTHS:
        raise InvalidAddress(f"expected 20 or 32 bytes, got {len(raw)}")
    return bytes(raw)
