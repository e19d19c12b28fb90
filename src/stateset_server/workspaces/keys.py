"""API key rules, pure: formats, hashing, kinds, modes and scopes.

A key looks like `sk_test_<32 base62 chars>`. Only its SHA-256 is stored: keys carry 190 bits of
randomness, so a fast hash cannot be brute-forced, and lookup stays one indexed query per request.

Kinds, as in the API reference: secret keys (`sk_`) may do everything in their workspace and mode;
restricted keys (`rk_`) only what their scopes list (`orders:write` implies `orders:read`);
publishable keys (`pk_`) only the public, client-side operations in `PUBLISHABLE_SCOPES`.
`orders:write` also grants `orders:pay`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from stateset_server.core.ids import random_token

__all__ = [
    "KINDS",
    "MODES",
    "PUBLISHABLE_SCOPES",
    "RESOURCES",
    "Principal",
    "generate_key",
    "hash_key",
    "parse_key",
    "validate_scopes",
]

KINDS = {"secret": "sk", "restricted": "rk", "publishable": "pk"}
MODES = ("test", "live")
# Resources a restricted key can be granted `:read` or `:write` on.
RESOURCES = ("orders", "events", "payments", "products", "inventory", "customers", "returns", "webhooks")
# Client-side operations a publishable key may perform (paying an order from a checkout page).
PUBLISHABLE_SCOPES = frozenset({"orders:pay"})

_KEY = re.compile(r"^(sk|rk|pk)_(test|live)_[0-9A-Za-z]{24,64}$")
_KIND_OF_PREFIX = {prefix: kind for kind, prefix in KINDS.items()}


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key(kind: str, mode: str) -> str:
    return f"{KINDS[kind]}_{mode}_{random_token(24)}"


def parse_key(plaintext: str) -> tuple[str, str] | None:
    """(kind, mode) when the text has the shape of a key, else None."""
    match = _KEY.match(plaintext)
    if match is None:
        return None
    return _KIND_OF_PREFIX[match.group(1)], match.group(2)


def validate_scopes(scopes: list[str]) -> list[str]:
    """Restricted-key scopes in canonical form; raises ValueError naming the first unknown one."""
    allowed = {f"{resource}:{access}" for resource in RESOURCES for access in ("read", "write")}
    cleaned = sorted({scope.strip() for scope in scopes if scope.strip()})
    for scope in cleaned:
        if scope not in allowed:
            raise ValueError(f"unknown scope '{scope}'; known scopes: {', '.join(sorted(allowed))}")
    if not cleaned:
        raise ValueError("a restricted key needs at least one scope, e.g. orders:read")
    return cleaned


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: every query is scoped to its workspace and mode."""

    key_id: str
    workspace_id: str
    mode: str
    kind: str
    scopes: frozenset[str]

    @property
    def livemode(self) -> bool:
        return self.mode == "live"

    def allows(self, scope: str) -> bool:
        if self.kind == "secret":
            return True
        if self.kind == "publishable":
            return scope in PUBLISHABLE_SCOPES
        if scope in self.scopes:
            return True
        # `resource:write` grants every other action on the resource (read, pay).
        resource, _, access = scope.partition(":")
        return access != "write" and f"{resource}:write" in self.scopes
