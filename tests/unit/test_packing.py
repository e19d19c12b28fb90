"""Stored JSON documents (storage/packing.py): packed documents read back byte for byte, documents
stored before packing read as they were (PostgreSQL's migration 13 included), and the dictionary
that stored rows need never changes."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import asyncpg
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.storage import migrate as migrate_module
from stateset_server.storage.migrate import load_migrations, migrate
from stateset_server.storage.packing import DICTIONARY_V1, pack, pack_around, unpack
from tests.conftest import dispose_database_url, make_database_url

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_a_packed_document_unpacks_to_the_same_bytes(value: object) -> None:
    document = msgspec.json.encode(value)
    packed = pack(document)
    assert isinstance(packed, bytes) and packed[:1] == b"\x01"
    assert unpack(packed) == document


@given(json_values, st.binary(max_size=300), st.binary(max_size=300))
def test_a_packed_document_between_bytes_in_clear_unpacks_to_all_three(
    value: object, before: bytes, after: bytes
) -> None:
    document = msgspec.json.encode(value)
    packed = pack(document)
    around = pack_around(packed, before=before, after=after)
    assert around[:1] == b"\x02" and packed[1:] in around  # the frame as it was: no second compression
    assert unpack(around) == before + document + after


@given(json_values)
def test_a_document_stored_before_packing_reads_as_it_was(value: object) -> None:
    document = msgspec.json.encode(value)
    assert unpack(document) == document  # PostgreSQL: the text converted to bytes by migration 13
    assert unpack(document.decode()) == document  # SQLite: TEXT


def test_the_dictionary_is_the_one_stored_documents_were_packed_with() -> None:
    # Changing packing_v1.dict would make every stored document unreadable: a new dictionary needs a
    # new tag byte beside this one.
    assert hashlib.sha256(DICTIONARY_V1).hexdigest() == (
        "24253d5680aa1fb8c118b35fa00726dc232355d42ceed8123fb85e643b34b561"
    )


def test_an_order_document_packs_to_a_fraction_of_its_size() -> None:
    order = {
        "id": "ord_0357Dx2mWq8ZbLkPo4RtYu",
        "order_number": 48213,
        "status": "PAID",
        "livemode": True,
        "currency": "EUR",
        "customer_id": "cus_0357Dx1aQw9LmNbVc3XzTy",
        "customer_email": "j.meyer@beispiel.de",
        "items": [
            {"id": f"li_0357Dx2m{n}Q8ZbLkPo4RtY", "sku": f"SKU-{n}", "quantity": n, "unit_price": f"{n}9.90"}
            for n in range(1, 4)
        ],
        "shipping_address": {"name": "Jana Meyer", "address_line_1": "Hauptstr. 5", "city": "Köln", "country": "DE"},
        "metadata": {"campaign": "winter"},
        "created_at": "2026-11-30T08:15:02.512Z",
    }
    document = msgspec.json.encode(order)
    assert len(pack(document)) < len(document) * 0.6
    assert unpack(pack(document)) == document


async def _documents_across_migration_13(url: str) -> list[bytes]:
    """Rows written at migration 12 (TEXT and JSON documents), then migration 13 applied."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO orders (id, workspace_id, mode, order_number, status, currency, subtotal, tax, shipping,"
            " total, created_at, updated_at, document) VALUES ('ord_1', 'ws_1', 'test', 1, 'CREATED', 'EUR',"
            " 0, 0, 0, 0, 0, 0, $1)",
            _LEGACY.decode(),
        )
        await conn.execute(
            "INSERT INTO events (id, workspace_id, mode, type, object_type, object_id, data, created_at)"
            " VALUES ('evt_1', 'ws_1', 'test', 'order.created', 'order', 'ord_1', $1, 0)",
            _LEGACY.decode(),
        )
        await conn.execute(
            "INSERT INTO idempotency_keys (workspace_id, mode, key, fingerprint, method, path, status_code,"
            " response, created_at) VALUES ('ws_1', 'test', 'k', 'f', 'POST', '/v1/orders', 201, $1, 0)",
            _LEGACY.decode(),
        )
    finally:
        await conn.close()
    assert await migrate(url) == list(range(13, len(load_migrations("postgres")) + 1))
    conn = await asyncpg.connect(url)
    try:
        return [
            await conn.fetchval("SELECT document FROM orders"),
            await conn.fetchval("SELECT data FROM events"),
            await conn.fetchval("SELECT response FROM idempotency_keys"),
        ]
    finally:
        await conn.close()


_LEGACY = '{"id":"ord_1","metadata":{"note":"Grüße, 東京"},"total":"1.00"}'.encode()


def test_postgres_migration_13_keeps_documents_written_before_it_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_database_url("postgres", str(tmp_path))
    try:
        with monkeypatch.context() as at_12:  # the database as the previous version left it
            at_12.setattr(migrate_module, "load_migrations", lambda dialect: load_migrations(dialect)[:12])
            assert asyncio.run(migrate(url)) == list(range(1, 13))
        stored = asyncio.run(_documents_across_migration_13(url))
    finally:
        dispose_database_url(url)
    assert stored == [_LEGACY, _LEGACY, _LEGACY]
    assert [unpack(value) for value in stored] == [_LEGACY, _LEGACY, _LEGACY]
