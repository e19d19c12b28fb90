"""The catalogue as orders see it: which SKUs have a price, and which reserve stock.

Test mode has the API reference's scenario SKUs without creating them: `TEST-SUCCESS` is always in
stock (price 10.00 when the order gives none) and `TEST-OOS` is always out of stock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stateset_server.storage import Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["SCENARIO_PRICE", "CatalogEntry", "catalog", "known_products"]

SCENARIO_PRICE = 10_000_000  # TEST-SUCCESS: 10.00 when the order gives no price


@dataclass(frozen=True)
class CatalogEntry:
    """What an order needs to know about a SKU."""

    name: str | None
    category: str | None
    price: int | None
    currency: str | None
    track_inventory: bool
    always_out_of_stock: bool = False


async def catalog(tx: Tx, principal: Principal, skus: list[str]) -> dict[str, CatalogEntry]:
    """The catalogue entries for an order's SKUs (unknown SKUs are absent)."""
    found: dict[str, CatalogEntry] = {}
    if principal.mode == "test":
        if "TEST-SUCCESS" in skus:
            found["TEST-SUCCESS"] = CatalogEntry("Test product (always in stock)", "test", SCENARIO_PRICE, None, False)
        if "TEST-OOS" in skus:
            found["TEST-OOS"] = CatalogEntry("Test product (always out of stock)", "test", None, None, False, True)
    wanted = sorted(set(skus) - set(found))
    if wanted:
        placeholders = ", ".join(f"${n}" for n in range(3, len(wanted) + 3))
        rows = await tx.fetch(
            "SELECT sku, name, category, price, currency, track_inventory FROM products"
            f" WHERE workspace_id = $1 AND mode = $2 AND deleted_at IS NULL AND sku IN ({placeholders})",
            principal.workspace_id,
            principal.mode,
            *wanted,
        )
        for row in rows:
            found[row["sku"]] = CatalogEntry(
                row["name"], row["category"], row["price"], row["currency"], bool(row["track_inventory"])
            )
    return found


# (workspace, mode, SKU) → (the markers read under, the "catalog" marker then, the entry or None).
_known: dict[tuple[str, str, str], tuple[Any, object, CatalogEntry | None]] = {}
_KNOWN_MAX = 50_000


async def known_products(db: Database, principal: Principal, skus: list[str]) -> dict[str, CatalogEntry]:
    """`catalog` before an order's transaction, from this process's cache while no product changed
    anywhere since (storage/epoch.py); unknown SKUs are remembered as unknown too."""
    epochs = db.epochs
    tag = epochs.read("catalog") if epochs is not None else None
    if tag is not None:
        found: dict[str, CatalogEntry] = {}
        for sku in skus:
            cached = _known.get((principal.workspace_id, principal.mode, sku))
            if cached is None or cached[0] is not epochs or cached[1] != tag:
                break
            if cached[2] is not None:
                found[sku] = cached[2]
        else:
            return found
    found = await db.read(lambda tx: catalog(tx, principal, skus), snapshot=False)
    if tag is not None:
        if len(_known) + len(skus) > _KNOWN_MAX:
            _known.clear()
        for sku in skus:
            _known[(principal.workspace_id, principal.mode, sku)] = (epochs, tag, found.get(sku))
    return found
