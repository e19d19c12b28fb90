"""The catalogue as orders see it: which SKUs have a price, and which reserve stock.

Test mode has the API reference's scenario SKUs without creating them: `TEST-SUCCESS` is always in
stock (price 10.00 when the order gives none) and `TEST-OOS` is always out of stock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from stateset_server.storage import Database, Tx
from stateset_server.storage.epoch import MarkedCache
from stateset_server.workspaces.keys import Principal

__all__ = ["SCENARIO_PRICE", "CatalogEntry", "catalog", "catalog_in", "known_products"]

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


# (workspace, mode, SKU) → its entry, or None for a SKU that is not in the catalogue.
_known: MarkedCache[tuple[str, str, str], CatalogEntry | None] = MarkedCache("catalog", 50_000)


async def _through_cache(
    epochs: object, principal: Principal, skus: list[str], load: Callable[[], Awaitable[dict[str, CatalogEntry]]]
) -> dict[str, CatalogEntry]:
    """The entries for `skus` from this process's cache while no product changed anywhere since
    (storage/epoch.py), else `load`ed and remembered; unknown SKUs are remembered as unknown too."""
    marker = _known.marker(epochs)
    found: dict[str, CatalogEntry] = {}
    for sku in skus:
        hit, entry = _known.get(epochs, marker, (principal.workspace_id, principal.mode, sku))
        if not hit:
            break
        if entry is not None:
            found[sku] = entry
    else:
        return found
    found = await load()
    for sku in skus:
        _known.put(epochs, marker, (principal.workspace_id, principal.mode, sku), found.get(sku))
    return found


async def known_products(db: Database, principal: Principal, skus: list[str]) -> dict[str, CatalogEntry]:
    """`catalog` before an order's transaction, through this process's cache."""
    return await _through_cache(
        db.epochs, principal, skus, lambda: db.read(lambda tx: catalog(tx, principal, skus), snapshot=False)
    )


async def catalog_in(tx: Tx, principal: Principal, skus: list[str]) -> dict[str, CatalogEntry]:
    """`catalog` inside a write transaction, through the same cache, unless the transaction itself
    changed products (a change committed elsewhere a moment ago may still be unseen, as with
    `known_products`)."""
    if "catalog" in tx.invalidated:
        return await catalog(tx, principal, skus)
    return await _through_cache(tx.epochs, principal, skus, lambda: catalog(tx, principal, skus))
