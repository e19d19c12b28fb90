"""Products: create, read, update, delete by SKU, each change with its event; and the catalogue
lookup orders use to price items and decide which SKUs reserve stock.

The scenario SKUs of test mode live in products/catalog.py.
"""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.core.clock import iso, now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.metadata import check_metadata, merge_metadata
from stateset_server.core.money import format_amount, normalize_currency, parse_amount
from stateset_server.events import log
from stateset_server.products.schemas import CreateProductIn, ProductOut, UpdateProductIn
from stateset_server.storage import IN_WORKSPACE, Row, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["COLUMNS", "create", "delete", "get", "product_out", "update"]

COLUMNS = (
    "id, sku, name, description, category, price, currency, track_inventory, low_stock_threshold, active,"
    " metadata, mode, created_at, updated_at, version"
)
_encode = msgspec.json.encode


def product_out(row: Row) -> ProductOut:
    currency = row["currency"]
    return ProductOut(
        id=row["id"],
        sku=row["sku"],
        name=row["name"],
        description=row["description"],
        category=row["category"],
        price=None if row["price"] is None else format_amount(row["price"], currency),
        currency=currency,
        track_inventory=bool(row["track_inventory"]),
        low_stock_threshold=row["low_stock_threshold"],
        active=bool(row["active"]),
        metadata=msgspec.json.decode(row["metadata"]),
        livemode=row["mode"] == "live",
        created_at=iso(row["created_at"]),
        updated_at=iso(row["updated_at"]),
    )


async def _row(tx: Tx, principal: Principal, sku: str) -> Row | None:
    return await tx.fetchrow(
        f"SELECT {COLUMNS} FROM products WHERE workspace_id = $1 AND mode = $2 AND sku = $3 AND deleted_at IS NULL",
        principal.workspace_id,
        principal.mode,
        sku,
    )


async def get(tx: Tx, principal: Principal, sku: str) -> ProductOut:
    row = await _row(tx, principal, sku)
    if row is None:
        raise ApiError.not_found("product", sku)
    return product_out(row)


async def _event(tx: Tx, principal: Principal, kind: str, shown: ProductOut, previous: dict[str, Any] | None,
                 now: int, request_id: str | None) -> None:  # fmt: skip
    await log.append(
        tx,
        principal=principal,
        type=f"product.{kind}",
        object_type="product",
        object_id=shown.id,
        data=_encode(shown),
        previous_attributes=None if previous is None else _encode(previous),
        created_at=now,
        request_id=request_id,
    )


async def create(tx: Tx, principal: Principal, body: CreateProductIn, request_id: str | None) -> ProductOut:
    currency = normalize_currency(body.currency)
    price = None if body.price is None else parse_amount(body.price, currency, "price")
    if await _row(tx, principal, body.sku) is not None:
        raise ApiError("RESOURCE_ALREADY_EXISTS", f"A product with SKU {body.sku} already exists.", {"sku": body.sku})
    now = now_us()
    await tx.execute(
        "INSERT INTO products (id, workspace_id, mode, sku, name, description, category, price, currency,"
        " track_inventory, low_stock_threshold, active, metadata, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
        new_id("prod"),
        principal.workspace_id,
        principal.mode,
        body.sku,
        body.name,
        body.description,
        body.category,
        price,
        currency,
        int(body.track_inventory),
        body.low_stock_threshold,
        int(body.active),
        _encode(check_metadata(body.metadata)).decode(),
        now,
    )
    await tx.invalidate("catalog")  # products/catalog.py's cache, in every process
    shown = await get(tx, principal, body.sku)
    await _event(tx, principal, "created", shown, None, now, request_id)
    return shown


async def update(tx: Tx, principal: Principal, sku: str, body: UpdateProductIn, request_id: str | None) -> ProductOut:
    row = await _row(tx, principal, sku)
    if row is None:
        raise ApiError.not_found("product", sku)
    before = product_out(row)
    currency = normalize_currency(body.currency) if body.currency is not None else row["currency"]
    changes: dict[str, Any] = {}
    for name in ("name", "description", "category", "low_stock_threshold"):
        if getattr(body, name) is not None:
            changes[name] = getattr(body, name)
    for name in ("track_inventory", "active"):
        if getattr(body, name) is not None:
            changes[name] = int(getattr(body, name))
    if body.currency is not None:
        changes["currency"] = currency
    if body.price is not None:
        changes["price"] = parse_amount(body.price, currency, "price")
    if body.metadata is not None:
        changes["metadata"] = _encode(merge_metadata(before.metadata, body.metadata)).decode()
    now = now_us()
    if changes:
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=4))
        await tx.execute(
            f"UPDATE products SET {assignments}, version = version + 1, updated_at = ${len(changes) + 4}"
            f" WHERE id = $1 AND {IN_WORKSPACE}",
            row["id"],
            principal.workspace_id,
            principal.mode,
            *changes.values(),
            now,
        )
        await tx.invalidate("catalog")
    shown = await get(tx, principal, sku)
    old, new = msgspec.to_builtins(before), msgspec.to_builtins(shown)
    previous = {k: v for k, v in old.items() if k != "updated_at" and new.get(k) != v}
    if previous:
        await _event(tx, principal, "updated", shown, previous, now, request_id)
    return shown


async def delete(tx: Tx, principal: Principal, sku: str, request_id: str | None) -> dict[str, Any]:
    shown = await get(tx, principal, sku)
    now = now_us()
    await tx.invalidate("catalog")
    await tx.execute(
        "UPDATE products SET deleted_at = $4, updated_at = $4 WHERE workspace_id = $1 AND mode = $2 AND sku = $3"
        " AND deleted_at IS NULL",
        principal.workspace_id,
        principal.mode,
        sku,
        now,
    )
    await _event(tx, principal, "deleted", shown, None, now, request_id)
    return {"id": shown.id, "sku": sku, "object": "product", "deleted": True}
