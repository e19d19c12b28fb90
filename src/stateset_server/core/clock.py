"""Time as integer microseconds since the epoch (stored) and ISO 8601 UTC strings (shown)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["iso", "now_us"]


def now_us() -> int:
    return time.time_ns() // 1000


def iso(micros: int) -> str:
    """`2024-06-25T12:00:00.123Z` — millisecond precision, always UTC with a `Z`."""
    moment = datetime.fromtimestamp(micros // 1_000_000, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{(micros // 1000) % 1000:03d}Z"
