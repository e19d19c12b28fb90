"""Time as integer microseconds since the epoch (stored) and ISO 8601 UTC strings (shown)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache

__all__ = ["iso", "now_us"]


def now_us() -> int:
    return time.time_ns() // 1000


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}"


def iso(micros: int) -> str:
    """`2024-06-25T12:00:00.123Z` — millisecond precision, always UTC with a `Z`."""
    seconds, rest = divmod(micros, 1_000_000)
    return f"{_second(seconds)}.{rest // 1000:03d}Z"
