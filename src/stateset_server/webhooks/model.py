"""Webhook rules, pure (no I/O): event types and subscription patterns, endpoint values, the retry
schedule, and how a receiver's answer is judged."""

from __future__ import annotations

import random
import re
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import msgspec

from stateset_server.core.errors import ApiError
from stateset_server.core.ids import random_token

__all__ = [
    "EVENT_TYPES",
    "FAILING_WINDOW_US",
    "MAX_HEADERS",
    "MAX_PATTERNS",
    "RETRY_STEPS",
    "SECRET_PREFIX",
    "STREAK_LIMIT",
    "Endpoint",
    "Outcome",
    "check_headers",
    "check_patterns",
    "check_secret",
    "check_url_shape",
    "disable_reason",
    "judge",
    "matches",
    "new_secret",
    "retry_after_seconds",
    "retry_delay",
]

# Every event type the server emits (grep `log.append` callers), the spec's list ("Webhook Events"),
# and our own `webhook_endpoint.disabled`. tests/unit/test_webhooks_model.py checks the source against it.
EVENT_TYPES = frozenset(
    {
        *(
            f"order.{kind}"
            for kind in (
                "created",
                "updated",
                "paid",
                "processing",
                "fulfilled",
                "shipped",
                "delivered",
                "cancelled",
                "refunded",
                "held",
                "released",
                "returned",
                "disputed",
                "resolved",
            )
        ),
        *(f"customer.{kind}" for kind in ("created", "updated", "deleted")),
        "customer.subscription.created",  # in the spec's list; nothing emits them yet
        "customer.subscription.cancelled",
        *(f"product.{kind}" for kind in ("created", "updated", "deleted")),
        *(f"inventory.{kind}" for kind in ("updated", "low_stock", "out_of_stock", "transfer")),
        *(f"return.{kind}" for kind in ("created", "approved", "rejected", "cancelled", "received", "processed")),
        "webhook_endpoint.disabled",
    }
)
# `<resource>.*` may name a resource with no event yet (payments): subscribing ahead is harmless.
_RESOURCES = frozenset({"order", "customer", "product", "inventory", "return", "payment", "webhook_endpoint"})
MAX_PATTERNS = 100

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_SECRET = re.compile(r"^[\x21-\x7e]{16,256}$")  # printable ASCII, no spaces

MAX_HEADERS = 20
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")  # an HTTP token
# What the receiver's verification and our framing rely on: a custom header may not replace them.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "host", "connection", "user-agent"}
)
_RESERVED_PREFIXES = ("stateset-", "webhook-")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")

# Retry delays in units of the base (5 s by default): 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h,
# 8 h, 16 h — 11 attempts over about 31 hours, then the delivery has failed.
RETRY_STEPS = (1, 6, 24, 120, 360, 720, 1440, 2880, 5760, 11520)
_JITTER = 0.2  # ±20 %: endpoints that failed together do not all come back at the same instant
_MAX_RETRY_AFTER = 24 * 3600.0

# An endpoint is disabled after this many deliveries in a row failed for good, or when nothing has
# succeeded for this long while attempts kept failing.
STREAK_LIMIT = 20
FAILING_WINDOW_US = 3 * 24 * 3600 * 1_000_000


def _bad(field: str, issue: str, expected: str, received: Any) -> ApiError:
    return ApiError.field(field, issue, expected=expected, received=received, code="VALIDATION_ERROR")


def check_patterns(patterns: list[str], field: str = "events") -> list[str]:
    """Event types and patterns (`*`, `order.*`, `customer.subscription.*`), de-duplicated in order."""
    if not 1 <= len(patterns) <= MAX_PATTERNS:
        raise _bad(field, f"1 to {MAX_PATTERNS} event types", 'e.g. ["order.*", "return.approved"]', patterns)
    seen: list[str] = []
    for index, raw in enumerate(patterns):
        pattern = raw.strip()
        if pattern == "*":
            pass
        elif pattern.endswith(".*"):
            prefix = pattern[:-2]
            if prefix.split(".")[0] not in _RESOURCES or not all(prefix.split(".")):
                raise _bad(
                    f"{field}[{index}]",
                    "unknown event resource",
                    "one of " + ", ".join(f"{r}.*" for r in sorted(_RESOURCES)) + " or *",
                    raw,
                )
        elif pattern not in EVENT_TYPES:
            raise _bad(
                f"{field}[{index}]", "unknown event type", "a known event type, a pattern like order.*, or *", raw
            )
        if pattern not in seen:
            seen.append(pattern)
    return seen


def matches(patterns: list[str], event_type: str) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def new_secret() -> str:
    return SECRET_PREFIX + random_token(24)


def check_secret(secret: str, field: str = "secret") -> str:
    if not _SECRET.match(secret):
        raise _bad(field, "16 to 256 printable characters without spaces", "e.g. whsec_… (or omit it)", "[hidden]")
    return secret


def check_url_shape(url: str, field: str = "url") -> str:
    """An absolute http(s) URL. Where it points (private networks) is ssrf.check_url's business."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(text) > 2048:
        raise _bad(field, "not an absolute http(s) URL", "https://example.com/webhooks (at most 2,048 chars)", url)
    if parts.fragment:
        raise _bad(field, "a webhook URL has no #fragment", "a URL without #…", url)
    return text


def check_headers(headers: dict[str, str] | None, field: str = "headers") -> dict[str, str]:
    """Extra request headers for an endpoint (e.g. a receiver's own auth token)."""
    if not headers:
        return {}
    if len(headers) > MAX_HEADERS:
        raise _bad(field, f"at most {MAX_HEADERS} headers", f"<= {MAX_HEADERS} headers", len(headers))
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not _HEADER_NAME.match(name):
            raise _bad(f"{field}.{name}", "not a valid header name", "letters, digits and -", name)
        if lower in _RESERVED_HEADERS or lower.startswith(_RESERVED_PREFIXES):
            raise _bad(
                f"{field}.{name}",
                "this header is set by the server",
                "a header other than Content-Type, User-Agent, stateset-* and webhook-*",
                name,
            )
        if lower in seen:
            raise _bad(f"{field}.{name}", "header given twice (names ignore case)", "each header once", name)
        seen.add(lower)
        # Printable ASCII: no line breaks (header injection), nothing an HTTP client must encode.
        if len(value) > 1000 or not _HEADER_VALUE.match(value):
            raise _bad(f"{field}.{name}", "at most 1,000 printable ASCII characters", "a header value", "[hidden]")
    return dict(headers)


class Endpoint(msgspec.Struct, frozen=True):
    id: str
    workspace_id: str
    mode: str
    url: str
    description: str | None
    events: list[str]
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: int | None
    headers: dict[str, str]
    metadata: dict[str, Any]
    enabled: bool
    disabled_reason: str | None
    disabled_at: int | None
    failure_streak: int
    failing_since: int | None
    created_at: int
    updated_at: int
    deleted_at: int | None = None

    def signing_secrets(self, now: int) -> list[str]:
        """The secrets a delivery is signed with: the current one first, then the rotated-out one
        while its overlap lasts."""
        secrets = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret is not None and expires is not None and now < expires:
            secrets.append(self.previous_secret)
        return secrets


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  # 2xx
    RETRY = "retry"  # network error, timeout, 429, 5xx: try again later
    FAILED = "failed"  # any other answer: retrying would get the same answer
    GONE = "gone"  # 410: the receiver asks us to stop — the endpoint is disabled


def judge(status_code: int | None) -> Outcome:
    """`None` means no HTTP answer at all (connection refused, timeout, blocked address)."""
    if status_code is None or status_code == 429 or status_code >= 500:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.SUCCEEDED
    if status_code == 410:
        return Outcome.GONE
    return Outcome.FAILED  # other 4xx, and 1xx/3xx: redirects are not followed (they could lead anywhere)


def retry_delay(failures: int, base: float, rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after `failures` failed ones in a row; None when the schedule
    is exhausted."""
    if failures > len(RETRY_STEPS):
        return None
    jitter = (rng or random).uniform(1 - _JITTER, 1 + _JITTER)
    return RETRY_STEPS[failures - 1] * base * jitter


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from `now` (Unix seconds): delta-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(text), _MAX_RETRY_AFTER)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return min(max(moment.timestamp() - now, 0.0), _MAX_RETRY_AFTER)


def disable_reason(failure_streak: int, failing_since: int | None, now: int) -> str | None:
    """Why a failing endpoint should be disabled now, if it should."""
    if failure_streak >= STREAK_LIMIT:
        return f"{failure_streak} consecutive deliveries failed"
    if failing_since is not None and now - failing_since >= FAILING_WINDOW_US:
        return "deliveries have been failing for 3 days"
    return None
