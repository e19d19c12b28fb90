"""List parameters and the list envelope shared by every list endpoint.

`limit` defaults to 10 and is capped at 100; cursors are opaque (base64url JSON) so their content can
change without breaking clients.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from stateset_server.core.errors import ApiError

__all__ = ["decode_cursor", "encode_cursor", "list_envelope", "parse_limit"]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            "VALIDATION_ERROR",
            f"limit must be an integer from 1 to {MAX_LIMIT}",
            {"field": "limit", "issue": "out of range", "expected": f"1..{MAX_LIMIT}", "received": raw},
            status=400,
        )
    return int(raw)


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(position)).decode().rstrip("=")


def decode_cursor(raw: str, shape: dict[str, type], field: str = "cursor") -> dict[str, Any]:
    """The position inside a cursor this API issued; `shape` names each key and its type."""
    try:
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        decoded = None
    if not isinstance(decoded, dict) or any(type(decoded.get(k)) is not t for k, t in shape.items()):
        raise ApiError(
            "VALIDATION_ERROR",
            f"{field} is not a cursor returned by this API",
            {"field": field, "issue": "malformed cursor", "expected": "a next_cursor value", "received": raw},
            status=400,
        )
    return decoded


def list_envelope(
    data: list[Any], *, has_more: bool, next_cursor: str | None, request_id: str | None
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "pagination": {"has_more": has_more, "next_cursor": next_cursor},
        "meta": {"request_id": request_id},
    }
