"""SQL for returns and their items, and the reads a return is shown with (its events, its restocks).

Every query is scoped to the caller's workspace and mode: another tenant's return reads as absent.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from stateset_server.returns.model import UNCOUNTED, Return, ReturnItem, ReturnStatus
from stateset_server.storage import IN_WORKSPACE, Row, Tx
from stateset_server.workspaces.keys import Principal

__all__ = [
    "RETURN_COLUMNS",
    "ConcurrentReturnUpdate",
    "allocated",
    "events_of",
    "get_return",
    "insert_return",
    "restocks_of",
    "returned_quantities",
    "returns_from_rows",
    "tracks_inventory",
    "update_return",
]

_encode = msgspec.json.encode
RETURN_COLUMNS = (
    "id, workspace_id, mode, order_id, status, reason, refund_amount, refund_id, restock_location, metadata,"
    " version, created_at, updated_at"
)
_ITEM_COLUMNS = "id, return_id, order_item_id, sku, quantity, unit_price"
# What a status change may rewrite; the order, the items and the value are fixed at creation.
_MUTABLE = ("status", "refund_id", "restock_location", "version", "updated_at")
# Rejected and cancelled returns give their quantities (and their share of the tax) back.
_COUNTED = "status NOT IN (" + ", ".join(f"'{status.value}'" for status in sorted(UNCOUNTED)) + ")"


class ConcurrentReturnUpdate(Exception):
    """Another transaction changed the return first; the caller's transaction must be rolled back."""


def _in(tx: Tx, values: Sequence[str], first: int) -> tuple[str, list[object]]:
    """`IN (…)` from placeholder `$first` on: one array parameter on PostgreSQL, one each on SQLite."""
    if tx.dialect == "postgres":
        return f"= ANY(${first}::text[])", [list(values)]
    return "IN (" + ", ".join(f"${n}" for n in range(first, first + len(values))) + ")", list(values)


async def insert_return(tx: Tx, ret: Return) -> None:
    await tx.execute(
        f"INSERT INTO returns ({RETURN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        ret.id,
        ret.workspace_id,
        ret.mode,
        ret.order_id,
        ret.status.value,
        ret.reason,
        ret.refund_amount,
        ret.refund_id,
        ret.restock_location,
        _encode(ret.metadata).decode(),
        ret.version,
        ret.created_at,
        ret.updated_at,
    )
    await tx.executemany(
        f"INSERT INTO return_items ({_ITEM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
        [(item.id, ret.id, item.order_item_id, item.sku, item.quantity, item.unit_price) for item in ret.items],
    )


def _return(row: Row, items: list[Row], currency: str) -> Return:
    return Return(
        id=row["id"],
        workspace_id=row["workspace_id"],
        mode=row["mode"],
        order_id=row["order_id"],
        currency=currency,
        status=ReturnStatus(row["status"]),
        reason=row["reason"],
        refund_amount=row["refund_amount"],
        refund_id=row["refund_id"],
        restock_location=row["restock_location"],
        metadata=msgspec.json.decode(row["metadata"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        items=[
            ReturnItem(item["id"], item["order_item_id"], item["sku"], item["quantity"], item["unit_price"])
            for item in items
        ],
    )


async def returns_from_rows(tx: Tx, rows: Sequence[Row]) -> list[Return]:
    """Whole returns for a page of return rows: items and currencies in two queries, not 2 × N."""
    if not rows:
        return []
    ids = [row["id"] for row in rows]
    clause, args = _in(tx, ids, 1)
    items: dict[str, list[Row]] = {return_id: [] for return_id in ids}
    # One item per order line (the service merges a line named twice), shown in the order's line order.
    columns = ", ".join(f"ri.{name}" for name in _ITEM_COLUMNS.split(", "))
    for item in await tx.fetch(
        f"SELECT {columns} FROM return_items ri JOIN order_items oi ON oi.id = ri.order_item_id"
        f" WHERE ri.return_id {clause} ORDER BY oi.position",
        *args,
    ):
        items[item["return_id"]].append(item)
    order_ids = sorted({row["order_id"] for row in rows})
    clause, args = _in(tx, order_ids, 1)
    currencies = {
        r["id"]: r["currency"] for r in await tx.fetch(f"SELECT id, currency FROM orders WHERE id {clause}", *args)
    }
    return [_return(row, items[row["id"]], currencies[row["order_id"]]) for row in rows]


async def get_return(tx: Tx, principal: Principal, return_id: str, *, for_update: bool = False) -> Return | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await tx.fetchrow(
        f"SELECT {RETURN_COLUMNS} FROM returns WHERE id = $1 AND {IN_WORKSPACE}{lock}",
        return_id,
        principal.workspace_id,
        principal.mode,
    )
    if row is None:
        return None
    return (await returns_from_rows(tx, [row]))[0]


async def update_return(tx: Tx, before: Return, after: Return) -> None:
    """Write the changed columns of `after` (= `before` plus one change, version + 1). The version
    check makes a lost update impossible even without the row lock."""
    assert after.version == before.version + 1
    changed = [name for name in _MUTABLE if getattr(before, name) != getattr(after, name)]
    values = [getattr(after, name) for name in changed]
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changed, start=4))
    row = await tx.fetchrow(
        f"UPDATE returns SET {assignments}"
        " WHERE id = $1 AND workspace_id IS NOT DISTINCT FROM $2 AND version = $3 RETURNING id",  # as IN_WORKSPACE
        before.id,
        before.workspace_id,
        before.version,
        *(value.value if isinstance(value, ReturnStatus) else value for value in values),
    )
    if row is None:
        raise ConcurrentReturnUpdate(before.id)


async def returned_quantities(tx: Tx, principal: Principal, order_id: str) -> dict[str, int]:
    """Per order line: the quantity in this order's returns that still count (not rejected or cancelled)."""
    rows = await tx.fetch(
        "SELECT ri.order_item_id AS order_item_id, SUM(ri.quantity) AS quantity"
        " FROM return_items ri JOIN returns r ON r.id = ri.return_id"
        f" WHERE r.order_id = $1 AND r.workspace_id = $2 AND r.mode = $3 AND r.{_COUNTED}"
        " GROUP BY ri.order_item_id",
        order_id,
        principal.workspace_id,
        principal.mode,
    )
    return {row["order_item_id"]: int(row["quantity"]) for row in rows}


async def allocated(tx: Tx, principal: Principal, order_id: str) -> tuple[int, int]:
    """(Σ value, Σ items subtotal) of this order's counted returns: their difference is the tax
    already given to returns."""
    value = await tx.fetchval(
        f"SELECT COALESCE(SUM(refund_amount), 0) FROM returns WHERE order_id = $1 AND workspace_id = $2"
        f" AND mode = $3 AND {_COUNTED}",
        order_id,
        principal.workspace_id,
        principal.mode,
    )
    subtotal = await tx.fetchval(
        "SELECT COALESCE(SUM(ri.quantity * ri.unit_price), 0) FROM return_items ri JOIN returns r"
        f" ON r.id = ri.return_id WHERE r.order_id = $1 AND r.workspace_id = $2 AND r.mode = $3 AND r.{_COUNTED}",
        order_id,
        principal.workspace_id,
        principal.mode,
    )
    return int(value), int(subtotal)


async def tracks_inventory(tx: Tx, principal: Principal, sku: str) -> bool:
    """Whether received units of `sku` go back on hand: only for a live product that tracks stock."""
    value = await tx.fetchval(
        "SELECT track_inventory FROM products WHERE workspace_id = $1 AND mode = $2 AND sku = $3"
        " AND deleted_at IS NULL",
        principal.workspace_id,
        principal.mode,
        sku,
    )
    return bool(value)


async def events_of(tx: Tx, principal: Principal, return_ids: Sequence[str]) -> dict[str, list[Row]]:
    """Each return's events in commit order (timestamps, timeline, and the notes kept in them)."""
    found: dict[str, list[Row]] = {return_id: [] for return_id in return_ids}
    if not return_ids:
        return found
    clause, args = _in(tx, return_ids, 3)
    # `+seq`: for two or more ids, `ORDER BY seq` had SQLite (no statistics) walk the workspace's whole
    # feed on `events_feed (workspace_id, mode, seq)` to skip sorting a few rows (60 ms with 100,000
    # events); now they come by object (`events_object`) and are sorted. PostgreSQL sorts them either way.
    rows = await tx.fetch(
        "SELECT id, object_id, type, created_at, object_status, data FROM events"
        f" WHERE workspace_id = $1 AND mode = $2 AND object_id {clause} ORDER BY +seq",
        principal.workspace_id,
        principal.mode,
        *args,
    )
    for row in rows:
        found[row["object_id"]].append(row)
    return found


async def restocks_of(tx: Tx, principal: Principal, return_ids: Sequence[str]) -> dict[str, list[Row]]:
    """What each return put back on hand: its restock movements (the inventory ledger is the record)."""
    found: dict[str, list[Row]] = {return_id: [] for return_id in return_ids}
    if not return_ids:
        return found
    clause, args = _in(tx, return_ids, 3)
    rows = await tx.fetch(
        "SELECT reference, sku, location, on_hand_delta FROM inventory_movements"
        f" WHERE workspace_id = $1 AND mode = $2 AND kind = 'restock' AND reference {clause} ORDER BY id",
        principal.workspace_id,
        principal.mode,
        *args,
    )
    for row in rows:
        found[row["reference"]].append(row)
    return found
