"""Ids and API key rules (pure)."""

from __future__ import annotations

import re
import time

import pytest

from stateset_server.core.ids import new_id, random_token
from stateset_server.workspaces.keys import (
    Principal,
    generate_key,
    hash_key,
    parse_key,
    validate_scopes,
)
from tests.support import from_base62


def test_ids_are_prefixed_unique_and_sort_by_creation() -> None:
    ids = [new_id("ord") for _ in range(2000)]
    assert all(re.match(r"^ord_[0-9A-Za-z]{22}$", i) for i in ids)
    assert len(set(ids)) == 2000

    def millis(object_id: str) -> int:
        return from_base62(object_id[4:]) >> 80  # the top 48 bits are the creation time in milliseconds

    stamps = [millis(i) for i in ids]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time() * 1000) < 60_000
    # Ids from different milliseconds sort like their times, so cursors by id follow creation order.
    assert [millis(i) for i in sorted(ids)] == sorted(stamps)


def test_random_tokens_have_the_requested_entropy() -> None:
    assert len(random_token(24)) == 33 and len({random_token() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("kind", "mode", "prefix"),
    [("secret", "test", "sk_test_"), ("restricted", "live", "rk_live_"), ("publishable", "test", "pk_test_")],
)
def test_generated_keys_parse_back(kind: str, mode: str, prefix: str) -> None:
    key = generate_key(kind, mode)
    assert key.startswith(prefix)
    assert parse_key(key) == (kind, mode)
    assert hash_key(key) != key and len(hash_key(key)) == 64


@pytest.mark.parametrize(
    "text", ["", "sk_test_", "sk_prod_" + "a" * 32, "xk_test_" + "a" * 32, "sk_test_" + "a" * 65, "sk_test_" + "!" * 32]
)
def test_malformed_keys_do_not_parse(text: str) -> None:
    assert parse_key(text) is None


def test_scope_rules() -> None:
    restricted = Principal("key_1", "ws_1", "test", "restricted", frozenset({"orders:write", "events:read"}))
    assert restricted.allows("orders:write") and restricted.allows("orders:read") and restricted.allows("events:read")
    assert not restricted.allows("events:write")
    reader = Principal("key_2", "ws_1", "test", "restricted", frozenset({"orders:read"}))
    assert not reader.allows("orders:write")
    public = Principal("key_3", "ws_1", "live", "publishable", frozenset())
    assert public.allows("orders:pay") and not public.allows("orders:read") and public.livemode
    assert Principal("key_4", "ws_1", "test", "secret", frozenset()).allows("anything:write")


def test_scope_validation() -> None:
    assert validate_scopes(["orders:write", " orders:read", "orders:read"]) == ["orders:read", "orders:write"]
    with pytest.raises(ValueError, match="unknown scope"):
        validate_scopes(["orders:admin"])
    with pytest.raises(ValueError, match="at least one scope"):
        validate_scopes([])
