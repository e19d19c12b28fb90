"""Metadata: the free-form key/value pairs every object carries, with Stripe's limits and merge rule."""

from __future__ import annotations

import math
from typing import Any

from stateset_server.core.errors import ApiError

__all__ = ["MAX_METADATA_KEYS", "check_metadata", "merge_metadata"]

MAX_METADATA_KEYS = 50


def check_metadata(metadata: dict[str, Any] | None, field: str = "metadata") -> dict[str, Any]:
    if metadata is None:
        return {}
    if len(metadata) > MAX_METADATA_KEYS:
        raise ApiError.field(
            field, f"at most {MAX_METADATA_KEYS} keys", expected=f"<= {MAX_METADATA_KEYS} keys", received=len(metadata)
        )
    for key, value in metadata.items():
        where = f"{field}.{key}"
        if not key or len(key) > 40:
            raise ApiError.field(
                where, "keys are 1 to 40 characters", expected="a key of 1-40 characters", received=key
            )
        if isinstance(value, str):
            if len(value) > 500:
                raise ApiError.field(
                    where, "string values are at most 500 characters", expected="<= 500 characters", received=len(value)
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ApiError.field(where, "numbers must be finite", expected="a finite number", received=str(value))
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
            raise ApiError.field(
                where, "integers must fit in 64 bits", expected="a 64-bit integer", received=str(value)
            )
        elif value is not None and not isinstance(value, bool | int):
            raise ApiError.field(
                where, "values must be strings, numbers, booleans or null", expected="a scalar value", received=value
            )
    return metadata


def merge_metadata(current: dict[str, Any], changes: dict[str, Any], field: str = "metadata") -> dict[str, Any]:
    """An update's metadata: given keys are set, and a null or "" value removes its key."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None or value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return check_metadata(merged, field)
