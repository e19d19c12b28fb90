"""The customer as the domain sees it: plain values, times in Unix microseconds, no I/O."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Customer", "email_key", "is_customer_id"]

# The ids this server issues: `cus_` and 22 base62 characters (core/ids.new_id).
_ID_LENGTH = len("cus_") + 22
_BASE62 = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class Customer(msgspec.Struct, frozen=True):
    id: str
    workspace_id: str
    mode: str
    email: str  # as the client wrote it (trimmed)
    first_name: str | None
    last_name: str | None
    phone: str | None
    tier: str | None
    addresses: list[dict[str, Any]]
    metadata: dict[str, Any]
    version: int
    created_at: int
    updated_at: int
    deleted_at: int | None = None

    @property
    def email_key(self) -> str:
        return email_key(self.email)

    @property
    def name(self) -> str | None:
        joined = " ".join(part for part in (self.first_name, self.last_name) if part)
        return joined or None


def email_key(email: str) -> str:
    """Emails are unique ignoring case: `Ann@Example.com` and `ann@example.com` are one customer."""
    return email.strip().lower()


def is_customer_id(value: str) -> bool:
    """Whether `value` has the exact shape of an id this server issues.

    Orders may carry a client's own customer ids (`cust_123`, or a Stripe `cus_NffrFeUfNV2Hib`); only
    ids of our exact shape are looked up, so an external id that merely starts with `cus_` still works.
    """
    return len(value) == _ID_LENGTH and value.startswith("cus_") and _BASE62.issuperset(value[4:])
