"""List parameters and the list envelope shared by every list endpoint.

`limit` defaults to 10 and is capped at 100; cursors are opaque (base64url JSON) so their content can
change without breaking clients.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import msgspec

from stateset_server.core.errors import ApiError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "decode_cursor", "encode_cursor", "list_envelope"]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


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


def list_envelope(request: Any, data: list[Any], pagination: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The API reference's list shape: `{data, pagination, meta: {request_id, response_time_ms}}`."""
    started = request.scope.get("started")
    elapsed = round((time.perf_counter() - started) * 1000, 2) if started is not None else None
    return {
        "object": "list",
        "data": data,
        "pagination": pagination,
        "meta": {"request_id": request.scope.get("request_id"), "response_time_ms": elapsed},
        **extra,
    }
