"""Object ids: a type prefix and 22 base62 characters that sort by creation time.

48 bits of milliseconds followed by 80 random bits, so ids created later sort later (B-tree inserts
stay at the right edge, cursors by id follow creation order) while staying unguessable.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id", "random_token"]

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_WIDTH = 22  # 62**22 > 2**128


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_base62(value, _WIDTH)}"


def random_token(nbytes: int = 24) -> str:
    """A base62 secret with `nbytes` of entropy (24 bytes = 192 bits)."""
    width = (nbytes * 8 * 1000 + 5953) // 5954  # ceil(bits / log2(62))
    return _base62(int.from_bytes(os.urandom(nbytes), "big"), width)
