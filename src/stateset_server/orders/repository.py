"""SQL for orders and their line items."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from stateset_server.orders.model import LineItem, Order
from stateset_server.orders.status import OrderStatus
from stateset_server.payments.model import Payment
from stateset_server.payments.repository import PAYMENT_COLUMNS
from stateset_server.storage import IN_WORKSPACE, Database, Row, Tx
from stateset_server.storage.database import Lookup
from stateset_server.storage.packing import unpack

__all__ = [
    "DOCUMENT",
    "HELD_ORDER",
    "ORDER_COLUMNS",
    "STATE_ORDER",
    "get_document",
    "get_order",
    "insert_order",
    "next_order_number",
    "orders_by_id",
    "orders_from_rows",
    "read_order",
    "state_of",
    "update_order",
    "update_order_if_current",
]

_encode = msgspec.json.encode
ORDER_COLUMNS = (
    "id, workspace_id, mode, order_number, status, currency, customer_id, customer_email, subtotal, tax,"
    " shipping, total, shipping_address, shipping_method, billing_address, metadata, notes, version,"
    " created_at, updated_at, resume_status, status_reason, amount_paid, amount_refunded, carrier,"
    " tracking_number, estimated_delivery, paid_at, fulfilled_at, shipped_at, delivered_at, cancelled_at"
)
# What a lifecycle change may rewrite; everything else about an order is fixed at creation.
_MUTABLE = (
    "status", "shipping_address", "shipping_method", "billing_address", "metadata", "notes", "version",
    "updated_at", "resume_status", "status_reason", "amount_paid", "amount_refunded", "carrier",
    "tracking_number", "estimated_delivery", "paid_at", "fulfilled_at", "shipped_at", "delivered_at",
    "cancelled_at",
)  # fmt: skip
_JSON_FIELDS = {"shipping_address", "billing_address", "metadata"}
_ITEM_COLUMNS = "id, order_id, position, sku, description, quantity, unit_price, total, metadata"
_ORDER_NAMES = tuple(name.strip() for name in ORDER_COLUMNS.split(","))
_ORDER_WIDTH = len(_ORDER_NAMES)
_INSERT_ORDER = (
    f"INSERT INTO orders ({ORDER_COLUMNS}, document, state) VALUES ({', '.join(f'${n}' for n in range(1, 35))})"
)
# An order's row also stores the order as the domain sees it (`state`): `Order`'s fields but its last
# two (document and held, read beside it), as one msgpack array in field order, its items and
# payments arrays too (field names would be a third of the bytes), after 4 bytes that name the
# fields' shape (`Order`'s, `LineItem`'s and `Payment`'s names and types, and how `state_of` lays
# them out: `_LAYOUT`, to change with it). A state written before either changed then reads as
# absent, not as values put in the wrong fields.
_FIELDS = msgspec.structs.fields(Order)
assert [f.name for f in _FIELDS[-2:]] == ["document", "held"]
_ITEMS, _PAYMENTS = (next(n for n, f in enumerate(_FIELDS) if f.name == name) for name in ("items", "payments"))
_LAYOUT = 2  # 1: items and payments as maps (never released)
_SHAPE = hashlib.blake2b(
    repr(
        [_LAYOUT]
        + [
            (t.__name__, [(f.name, repr(f.type)) for f in msgspec.structs.fields(t)])
            for t in (Order, LineItem, Payment)
        ]
    ).encode(),
    digest_size=4,
).digest()


def _row_type(struct: type) -> Any:
    return tuple[tuple(f.type for f in msgspec.structs.fields(struct))]  # type: ignore[misc]


_STORED_TYPES = [f.type for f in _FIELDS[:-2]]
_STORED_TYPES[_ITEMS], _STORED_TYPES[_PAYMENTS] = list[_row_type(LineItem)], list[_row_type(Payment)]
_encode_state = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(tuple[tuple(_STORED_TYPES)]).decode  # type: ignore[misc]
_astuple = msgspec.structs.astuple


def state_of(order: Order) -> bytes:
    """The order as its row's `state` stores it: everything but its document and held reservations."""
    values = list(_astuple(order)[:-2])
    values[_ITEMS] = [_astuple(item) for item in order.items]
    values[_PAYMENTS] = [_astuple(payment) for payment in order.payments]
    return _SHAPE + _encode_state(values)


def _order_of_state(state: bytes | None, document: bytes | None, held: list[tuple[str, str, str, int]]) -> Order | None:
    """The order a `state_of` stored, with its document (unpacked) and held reservations; None when
    there is no state or it has another shape (written by another version of this server)."""
    if state is None or state[:4] != _SHAPE:
        return None
    try:
        values = list(_decode_state(memoryview(state)[4:]))
    except msgspec.DecodeError:  # cut short or damaged, or of a layout these types do not fit
        return None
    values[_ITEMS] = [LineItem(*item) for item in values[_ITEMS]]
    values[_PAYMENTS] = [Payment(*payment) for payment in values[_PAYMENTS]]
    return Order(*values, document=document, held=held)


def _json(value: object) -> str | None:
    return None if value is None else _encode(value).decode()


async def next_order_number(tx: Tx, workspace_id: str, mode: str) -> int:
    """Human-facing order numbers count up from 1001 per workspace and mode: gapless on SQLite; on
    PostgreSQL a number taken by a create that then fails is skipped (see `Tx.next_number`)."""
    return await tx.next_number(workspace_id, mode, "order_number", 1001)


async def insert_order(tx: Tx, order: Order, document: bytes) -> None:
    """Store a new order, its items and its document (packed: orders/document.py)."""
    await tx.execute(
        _INSERT_ORDER,
        order.id,
        order.workspace_id,
        order.mode,
        order.order_number,
        order.status.value,
        order.currency,
        order.customer_id,
        order.customer_email,
        order.subtotal,
        order.tax,
        order.shipping,
        order.total,
        _json(order.shipping_address),
        order.shipping_method,
        _json(order.billing_address),
        _json(order.metadata),
        order.notes,
        order.version,
        order.created_at,
        order.updated_at,
        order.resume_status.value if order.resume_status else None,
        order.status_reason,
        order.amount_paid,
        order.amount_refunded,
        order.carrier,
        order.tracking_number,
        order.estimated_delivery,
        order.paid_at,
        order.fulfilled_at,
        order.shipped_at,
        order.delivered_at,
        order.cancelled_at,
        document,
        state_of(order),
    )
    await tx.executemany(
        f"INSERT INTO order_items ({_ITEM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            (
                item.id,
                order.id,
                position,
                item.sku,
                item.description,
                item.quantity,
                item.unit_price,
                item.total,
                _json(item.metadata),
            )
            for position, item in enumerate(order.items)
        ],
    )


_decode = msgspec.json.decode


def _loads(text: str | None) -> dict | None:
    return None if text is None else _decode(text)


def _order(row: Row, items: list[Any], payments: list[Payment], document: bytes | None = None) -> Order:
    """An order from a row that starts with ORDER_COLUMNS, read by position (a name is looked up
    column by column), and its items as (id, sku, description, quantity, unit_price, total, metadata)."""
    fields = dict(zip(_ORDER_NAMES, row[:_ORDER_WIDTH], strict=True))
    resume_status = fields["resume_status"]
    fields.update(
        status=OrderStatus(fields["status"]),
        resume_status=OrderStatus(resume_status) if resume_status else None,
        shipping_address=_loads(fields["shipping_address"]),
        billing_address=_loads(fields["billing_address"]),
        metadata=_decode(fields["metadata"]),
        items=[LineItem(*item[:6], metadata=_decode(item[6])) for item in items],
        payments=payments,
        document=document,
    )
    return Order(**fields)


async def _look_up(db: Database, query: Lookup, workspace_id: str, mode: str, order_id: str) -> Row | None:
    """An order's row found by id alone (`Database.lookup`), kept only in the caller's workspace and
    mode: another tenant's id reads as absent. The query returns `workspace_id` and `mode`."""
    row = await db.lookup(query, order_id)
    if row is None or row["workspace_id"] != workspace_id or row["mode"] != mode:
        return None
    return row


# An order's document by id alone (`_look_up` compares the workspace and mode): one form for a single
# id, one for many, as PostgreSQL sends concurrent GETs together (`Database.lookup`).
DOCUMENT = Lookup(
    one="SELECT id, workspace_id, mode, document FROM orders WHERE id = $1",
    many="SELECT id, workspace_id, mode, document FROM orders WHERE id = ANY($1::text[])",
)


async def get_document(db: Database, workspace_id: str, mode: str, order_id: str) -> tuple[bytes | None] | None:
    """The order's stored document, unpacked (None inside when the order predates documents); None: no
    order (another tenant's id reads as absent)."""
    row = await _look_up(db, DOCUMENT, workspace_id, mode, order_id)
    if row is None:
        return None
    document = row["document"]
    return (None if document is None else unpack(document),)


# An order is read with its items and payments in one statement (one round trip, and on SQLite one
# statement needs no read transaction around it). Rows are sorted here: SQLite's json_group_array
# keeps no order it promises.
_AGGREGATE = {
    "postgres": ("json_agg", "json_build_array", "metadata::text"),
    "sqlite": ("json_group_array", "json_array", "metadata"),
}


def _get_order_sql(dialect: str, lock: str, held: bool, where: str = f"id = $1 AND {IN_WORKSPACE}") -> str:
    """`held` (with the lock: a read for a change), also the order's active reservations: a status
    change moves them (lifecycle._stock_follows_status), and they need no statement of their own."""
    agg, array, metadata = _AGGREGATE[dialect]
    items = f"(SELECT {agg}({array}(position, id, sku, description, quantity, unit_price, total, {metadata}))"
    payments = f"(SELECT {agg}({array}({PAYMENT_COLUMNS}))"
    return (
        f"SELECT {ORDER_COLUMNS}, document,"
        f" {items} FROM order_items WHERE order_id = orders.id) AS items_json,"
        f" {payments} FROM payments WHERE order_id = orders.id) AS payments_json,"
        f" {_held_sql(dialect) if held else 'NULL'} AS held_json FROM orders WHERE {where}{lock}"
    )


def _held_sql(dialect: str) -> str:
    """The order's active reservations as one JSON array of (id, sku, location, quantity) arrays."""
    agg, array, _metadata = _AGGREGATE[dialect]
    return (
        f"(SELECT {agg}({array}(id, sku, location, quantity)) FROM reservations WHERE order_id = orders.id"
        " AND (workspace_id, mode) IS NOT DISTINCT FROM (orders.workspace_id, orders.mode) AND status = 'active')"
    )


_GET_ORDER = {
    (dialect, for_update): _get_order_sql(dialect, " FOR UPDATE" if for_update else "", for_update)
    for dialect in _AGGREGATE
    for for_update in (False, True)
}


# The order with its active reservations, by id alone (`_look_up` compares the workspace and mode):
# PostgreSQL sends concurrent commands' reads of their orders together.
HELD_ORDER = {
    dialect: Lookup(
        one=_get_order_sql(dialect, "", True, "id = $1"),
        many=_get_order_sql(dialect, "", True, "id = ANY($1::text[])"),
    )
    for dialect in _AGGREGATE
}


async def get_order(tx: Tx, workspace_id: str, mode: str, order_id: str, *, for_update: bool = False) -> Order | None:
    """The order when it exists in this workspace and mode; another tenant's id reads as absent.
    `for_update`: the row held for a change (locked on PostgreSQL), and `Order.held` read too."""
    row = await tx.fetchrow(_GET_ORDER[tx.dialect, for_update], order_id, workspace_id, mode)
    return None if row is None else _order_of_row(row, for_update)


def _state_order_sql(dialect: str, where: str) -> str:
    held = _held_sql(dialect)
    return f"SELECT id, workspace_id, mode, version, state, document, {held} AS held_json FROM orders WHERE {where}"


# An order's stored state, document and active reservations by id alone (`_look_up` compares the
# workspace and mode): what `read_order` needs when the row carries its state.
STATE_ORDER = {
    dialect: Lookup(one=_state_order_sql(dialect, "id = $1"), many=_state_order_sql(dialect, "id = ANY($1::text[])"))
    for dialect in _AGGREGATE
}


async def read_order(db: Database, workspace_id: str, mode: str, order_id: str) -> Order | None:
    """The order and its active reservations (`Order.held`) as `get_order(…, for_update=True)` reads
    them, but outside any transaction and without a lock: a command prepared ahead of its transaction
    (orders/lifecycle.py) reads it so. One row: the order's stored state (`state_of`), when the row
    has one of this shape at the row's version; else (an order last written before states were
    stored, or a state left behind, of another shape or damaged) also its columns, items and payments."""
    row = await _look_up(db, STATE_ORDER[db.dialect], workspace_id, mode, order_id)
    if row is None:
        return None
    document = row["document"]
    order = _order_of_state(row["state"], None if document is None else unpack(document), _held(row["held_json"]))
    if order is None or order.version != row["version"]:
        row = await _look_up(db, HELD_ORDER[db.dialect], workspace_id, mode, order_id)
        return None if row is None else _order_of_row(row, True)
    return order


def _order_of_row(row: Row, held: bool) -> Order:
    """An order read with `_get_order_sql`: ORDER_COLUMNS, document, items_json, payments_json, held_json."""
    document, items_json, payments_json, held_json = row[_ORDER_WIDTH:]
    # An item array is (position, id, sku, description, quantity, unit_price, total, metadata).
    items = [item[1:] for item in sorted(_loads_list(items_json))]
    payments = sorted((Payment(*payment) for payment in _loads_list(payments_json)), key=lambda p: (p.created_at, p.id))
    order = _order(row, items, payments, None if document is None else unpack(document))
    if held:
        order = msgspec.structs.replace(order, held=_held(held_json))
    return order


def _held(held_json: str | None) -> list[tuple[str, str, str, int]]:
    """Active reservations aggregated as (id, sku, location, quantity) arrays, in a stable order."""
    return sorted((str(h[0]), str(h[1]), str(h[2]), int(h[3])) for h in _loads_list(held_json))


def _loads_list(text: str | None) -> list[list[Any]]:
    return [] if text is None else msgspec.json.decode(text)


def _column_value(order: Order, name: str) -> object:
    value = getattr(order, name)
    if name in _JSON_FIELDS:
        return _json(value)
    if isinstance(value, OrderStatus):
        return value.value
    return value


async def update_order(tx: Tx, before: Order, after: Order, document: bytes) -> None:
    """Write the changed columns of `after`, which must be `before` plus one change (version + 1),
    and its new document (packed: orders/document.py).

    The caller read `before` in this transaction, holding the row (`FOR UPDATE` on PostgreSQL, the
    one writer on SQLite): nothing else can change it before the commit. So the statement needs no
    answer, and PostgreSQL can send it with the transaction's next one (storage/batching.py).
    """
    await tx.execute(*_update(before, after, document, returning=""))


async def update_order_if_current(tx: Tx, before: Order, after: Order, document: bytes) -> None:
    """`update_order` for a `before` read outside the transaction: Stale (nothing written) when the
    order is no longer at `before`'s version (`Tx.guard`)."""
    await tx.guard(*_update(before, after, document, returning=" RETURNING id"))


def _update(before: Order, after: Order, document: bytes, *, returning: str) -> tuple[Any, ...]:
    assert after.version == before.version + 1
    changed = [name for name in _MUTABLE if getattr(before, name) != getattr(after, name)]
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changed, start=6))
    return (
        f"UPDATE orders SET document = $4, state = $5, {assignments}"
        " WHERE id = $1 AND workspace_id IS NOT DISTINCT FROM $2 AND version = $3" + returning,  # as IN_WORKSPACE
        before.id,
        before.workspace_id,
        before.version,
        document,
        state_of(after),
        *(_column_value(after, name) for name in changed),
    )


def _in(tx: Tx, values: list[str]) -> tuple[str, list[object]]:
    """`IN (…)` for a list of values: one array parameter on PostgreSQL, one placeholder each on SQLite."""
    if tx.dialect == "postgres":
        return "= ANY($1::text[])", [values]
    return "IN (" + ", ".join(f"${n}" for n in range(1, len(values) + 1)) + ")", list(values)


async def orders_by_id(tx: Tx, ids: list[str]) -> list[Order]:
    """Whole orders by id (ids the caller read in its workspace), in no particular order."""
    clause, args = _in(tx, ids)
    return await orders_from_rows(tx, await tx.fetch(f"SELECT {ORDER_COLUMNS} FROM orders WHERE id {clause}", *args))


async def orders_from_rows(tx: Tx, rows: list[Row]) -> list[Order]:
    """Whole orders for a page of order rows: their items and payments in two queries, not 2 × N."""
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    clause, args = _in(tx, ids)
    items: dict[str, list[Any]] = {order_id: [] for order_id in ids}
    for item in await tx.fetch(
        f"SELECT order_id, id, sku, description, quantity, unit_price, total, metadata FROM order_items"
        f" WHERE order_id {clause} ORDER BY position",
        *args,
    ):
        items[item[0]].append(item[1:])
    payments: dict[str, list[Payment]] = {order_id: [] for order_id in ids}
    for payment in await tx.fetch(
        f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id {clause} ORDER BY created_at, id", *args
    ):
        payments[payment["order_id"]].append(Payment(*payment))
    return [_order(row, items[row["id"]], payments[row["id"]]) for row in rows]
