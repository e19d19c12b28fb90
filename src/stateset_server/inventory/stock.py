"""Stock changes inside the caller's transaction. Every change of `on_hand` or `reserved` is one
conditional UPDATE (so concurrent orders can never oversell: the check and the change are one
statement, row-locked on PostgreSQL, serialised by SQLite's single writer) plus one movement row.

available = on_hand - reserved. Reservations take stock from locations in name order until the
quantity is covered; fulfilment commits them (on_hand and reserved both fall); cancellation, payment
failure (a rolled-back transaction) and expiry release them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import msgspec

from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.events import log
from stateset_server.storage import IN_WORKSPACE, Row, Tx
from stateset_server.workspaces.keys import Principal

__all__ = [
    "DEFAULT_LOCATION",
    "RESERVATION_TTL_US",
    "Level",
    "adjust",
    "commit_order",
    "expire_due",
    "insufficient",
    "keep_for_payment",
    "levels",
    "reconcile",
    "release_order",
    "reserve",
    "restock",
    "transfer",
]

DEFAULT_LOCATION = "default"
# How long an unpaid order holds its stock; paying keeps it until fulfilment or cancellation.
RESERVATION_TTL_US = int(os.environ.get("STATESET_RESERVATION_TTL_SECONDS") or "1800") * 1_000_000
_encode = msgspec.json.encode


@dataclass(frozen=True)
class Level:
    sku: str
    location: str
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


def insufficient(sku: str, requested: int, available: int) -> ApiError:
    return ApiError(
        "INSUFFICIENT_INVENTORY",
        f"Not enough stock for {sku}: {requested} requested, {available} available.",
        {"sku": sku, "requested": requested, "available": available},
    )


async def levels(tx: Tx, principal: Principal, sku: str) -> list[Level]:
    rows = await tx.fetch(
        "SELECT sku, location, on_hand, reserved FROM inventory_levels"
        " WHERE workspace_id = $1 AND mode = $2 AND sku = $3 ORDER BY location",
        principal.workspace_id,
        principal.mode,
        sku,
    )
    return [Level(r["sku"], r["location"], r["on_hand"], r["reserved"]) for r in rows]


async def _ensure(tx: Tx, principal: Principal, sku: str, location: str, now: int) -> None:
    await tx.execute(
        "INSERT INTO inventory_levels (workspace_id, mode, sku, location, on_hand, reserved, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, 0, 0, $5, $5) ON CONFLICT (workspace_id, mode, sku, location) DO NOTHING",
        principal.workspace_id,
        principal.mode,
        sku,
        location,
        now,
    )


async def _move(
    tx: Tx,
    principal: Principal,
    *,
    sku: str,
    location: str,
    kind: str,
    on_hand: int,
    reserved: int,
    reason: str | None,
    reference: str | None,
    now: int,
) -> Row | None:
    """Apply deltas if the level stays valid (on_hand ≥ reserved ≥ 0); returns the new level or None."""
    row = await tx.fetchrow(
        "UPDATE inventory_levels SET on_hand = on_hand + $5, reserved = reserved + $6, updated_at = $7"
        " WHERE workspace_id = $1 AND mode = $2 AND sku = $3 AND location = $4"
        " AND on_hand + $5 >= reserved + $6 AND reserved + $6 >= 0"
        " RETURNING on_hand, reserved",
        principal.workspace_id,
        principal.mode,
        sku,
        location,
        on_hand,
        reserved,
        now,
    )
    if row is None:
        return None
    await tx.execute(
        "INSERT INTO inventory_movements"
        " (workspace_id, mode, sku, location, kind, on_hand_delta, reserved_delta, reason, reference, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        principal.workspace_id,
        principal.mode,
        sku,
        location,
        kind,
        on_hand,
        reserved,
        reason,
        reference,
        now,
    )
    return row


async def _announce(
    tx: Tx,
    principal: Principal,
    sku: str,
    before: int,
    after: Level,
    now: int,
    request_id: str | None,
    *,
    changed: bool,
) -> None:
    """inventory.updated for explicit stock changes; low_stock / out_of_stock when a threshold is crossed."""
    threshold = await tx.fetchval(
        "SELECT low_stock_threshold FROM products WHERE workspace_id = $1 AND mode = $2 AND sku = $3"
        " AND deleted_at IS NULL",
        principal.workspace_id,
        principal.mode,
        sku,
    )
    snapshot = {
        "object": "inventory_level",
        "sku": sku,
        "location": after.location,
        "on_hand": after.on_hand,
        "reserved": after.reserved,
        "available": after.available,
        "low_stock_threshold": threshold,
    }
    types = ["inventory.updated"] if changed else []
    if after.available <= 0 < before:
        types.append("inventory.out_of_stock")
    elif threshold is not None and after.available <= threshold < before:
        types.append("inventory.low_stock")
    for event_type in types:
        await log.append(
            tx,
            principal=principal,
            type=event_type,
            object_type="inventory_level",
            object_id=f"{sku}@{after.location}",
            data=_encode(snapshot),
            created_at=now,
            request_id=request_id,
        )


async def _available(tx: Tx, principal: Principal, sku: str, location: str) -> int:
    value = await tx.fetchval(
        "SELECT on_hand - reserved FROM inventory_levels WHERE workspace_id = $1 AND mode = $2 AND sku = $3"
        " AND location = $4",
        principal.workspace_id,
        principal.mode,
        sku,
        location,
    )
    return int(value or 0)


async def adjust(
    tx: Tx,
    principal: Principal,
    *,
    sku: str,
    location: str,
    delta: int,
    kind: str,
    reason: str | None,
    reference: str | None,
    now: int,
    request_id: str | None,
) -> Level:
    """Add (or remove, with a negative delta) stock on hand. Removing reserved stock is refused."""
    await _ensure(tx, principal, sku, location, now)
    before = await _available(tx, principal, sku, location)
    row = await _move(
        tx, principal, sku=sku, location=location, kind=kind, on_hand=delta, reserved=0, reason=reason,
        reference=reference, now=now,
    )  # fmt: skip
    if row is None:
        current = await levels(tx, principal, sku)
        level = next(l for l in current if l.location == location)  # noqa: E741
        raise ApiError(
            "INSUFFICIENT_INVENTORY",
            f"{sku} at {location} cannot lose {-delta}: {level.on_hand} on hand, {level.reserved} reserved.",
            {
                "sku": sku,
                "location": location,
                "on_hand": level.on_hand,
                "reserved": level.reserved,
                "requested": -delta,
            },
        )
    level = Level(sku, location, row["on_hand"], row["reserved"])
    await _announce(tx, principal, sku, before, level, now, request_id, changed=True)
    return level


async def transfer(
    tx: Tx,
    principal: Principal,
    *,
    sku: str,
    source: str,
    target: str,
    quantity: int,
    reason: str | None,
    now: int,
    request_id: str | None,
) -> tuple[Level, Level]:
    reference = new_id("trf")
    out = await adjust(
        tx, principal, sku=sku, location=source, delta=-quantity, kind="transfer_out", reason=reason,
        reference=reference, now=now, request_id=None,
    )  # fmt: skip
    into = await adjust(
        tx, principal, sku=sku, location=target, delta=quantity, kind="transfer_in", reason=reason,
        reference=reference, now=now, request_id=None,
    )  # fmt: skip
    await log.append(
        tx,
        principal=principal,
        type="inventory.transfer",
        object_type="inventory_transfer",
        object_id=reference,
        data=_encode(
            {
                "object": "inventory_transfer",
                "id": reference,
                "sku": sku,
                "from_location": source,
                "to_location": target,
                "quantity": quantity,
                "reason": reason,
            }
        ),
        created_at=now,
        request_id=request_id,
    )
    return out, into


async def reserve(
    tx: Tx,
    principal: Principal,
    *,
    order_id: str,
    sku: str,
    quantity: int,
    expires_at: int | None,
    now: int,
    request_id: str | None,
) -> None:
    """Reserve `quantity` across locations (in name order) or raise INSUFFICIENT_INVENTORY."""
    left = quantity
    for level in await levels(tx, principal, sku):
        if left == 0:
            break
        take = min(left, level.available)
        if take <= 0:
            continue
        row = await _move(
            tx, principal, sku=sku, location=level.location, kind="reserve", on_hand=0, reserved=take,
            reason="order", reference=order_id, now=now,
        )  # fmt: skip
        if row is None:  # changed since we read it (another transaction on PostgreSQL): try the next one
            continue
        await tx.execute(
            "INSERT INTO reservations (id, workspace_id, mode, order_id, sku, location, quantity, status, expires_at,"
            " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $9)",
            new_id("res"),
            principal.workspace_id,
            principal.mode,
            order_id,
            sku,
            level.location,
            take,
            expires_at,
            now,
        )
        after = Level(sku, level.location, row["on_hand"], row["reserved"])
        await _announce(tx, principal, sku, level.available, after, now, request_id, changed=False)
        left -= take
    if left > 0:
        available = sum(level.available for level in await levels(tx, principal, sku)) + (quantity - left)
        raise insufficient(sku, quantity, available)


Held = list[tuple[str, str, str, int]]  # an order's active reservations: (id, sku, location, quantity)


async def _finish(
    tx: Tx,
    principal: Principal,
    order_id: str,
    *,
    kind: str,
    status: str,
    only_expired_before: int | None,
    now: int,
    held: Held | None = None,
) -> int:
    if held is None:
        clause = " AND expires_at IS NOT NULL AND expires_at <= $4" if only_expired_before is not None else ""
        args: list[object] = [order_id, principal.workspace_id, principal.mode]
        if only_expired_before is not None:
            args.append(only_expired_before)
        rows = await tx.fetch(
            "SELECT id, sku, location, quantity FROM reservations"
            f" WHERE order_id = $1 AND {IN_WORKSPACE}"
            f" AND status = 'active'{clause} ORDER BY id",
            *args,
        )
        held = [(row["id"], row["sku"], row["location"], row["quantity"]) for row in rows]
    for reservation_id, sku, location, quantity in held:
        on_hand = -quantity if kind == "commit" else 0
        await _move(
            tx, principal, sku=sku, location=location, kind=kind, on_hand=on_hand,
            reserved=-quantity, reason=status, reference=order_id, now=now,
        )  # fmt: skip
        await tx.execute(
            "UPDATE reservations SET status = $2, updated_at = $3 WHERE id = $1", reservation_id, status, now
        )
    return len(held)


async def commit_order(tx: Tx, principal: Principal, order_id: str, now: int, *, held: Held | None = None) -> int:
    """Fulfilment: reserved stock leaves the building. `held`: the order's active reservations, when
    read in this transaction with the order row held (else they are read here)."""
    return await _finish(
        tx, principal, order_id, kind="commit", status="committed", only_expired_before=None, now=now, held=held
    )


async def release_order(
    tx: Tx, principal: Principal, order_id: str, now: int, *, expired_only: bool = False, held: Held | None = None
) -> int:
    """Cancellation (or expiry): reserved stock is available again. `held` as for `commit_order`."""
    status = "expired" if expired_only else "released"
    cutoff = now if expired_only else None
    return await _finish(
        tx, principal, order_id, kind="release", status=status, only_expired_before=cutoff, now=now,
        held=None if expired_only else held,
    )  # fmt: skip


async def restock(
    tx: Tx,
    principal: Principal,
    *,
    sku: str,
    location: str,
    quantity: int,
    reference: str,
    now: int,
    request_id: str | None,
) -> Level:
    """Returned goods back on hand (returns)."""
    return await adjust(
        tx, principal, sku=sku, location=location, delta=quantity, kind="restock", reason="return received",
        reference=reference, now=now, request_id=request_id,
    )  # fmt: skip


async def keep_for_payment(
    tx: Tx, principal: Principal, order_id: str, wanted: dict[str, int], now: int, *, held: Held | None = None
) -> None:
    """A paid order's reservations no longer expire, and what expired before it was paid is reserved
    again (INSUFFICIENT_INVENTORY if gone). One statement when nothing is missing; one that needs
    no answer when the order wants none (PostgreSQL sends it with the next: storage/batching.py);
    none when it wants none and holds none (`held`, as for `commit_order`: only the order's own
    creation and payment make reservations, and both change the order)."""
    if not wanted and held is not None and not held:
        return
    sql = f"UPDATE reservations SET expires_at = NULL, updated_at = $4 WHERE order_id = $1 AND {IN_WORKSPACE}"
    sql += " AND status = 'active'"
    if not wanted:
        await tx.execute(sql, order_id, principal.workspace_id, principal.mode, now)
        return
    rows = await tx.fetch(sql + " RETURNING sku, quantity", order_id, principal.workspace_id, principal.mode, now)
    held: dict[str, int] = {}
    for row in rows:
        held[row["sku"]] = held.get(row["sku"], 0) + int(row["quantity"])
    for sku, quantity in wanted.items():
        missing = quantity - held.get(sku, 0)
        if missing > 0:
            await reserve(
                tx, principal, order_id=order_id, sku=sku, quantity=missing, expires_at=None, now=now, request_id=None
            )


async def expire_due(tx: Tx, now: int) -> int:
    """Release every reservation past its expiry, in every workspace (run by the server periodically)."""
    due = await tx.fetch(
        "SELECT DISTINCT order_id, workspace_id, mode FROM reservations"
        " WHERE status = 'active' AND expires_at IS NOT NULL AND expires_at <= $1",
        now,
    )
    released = 0
    for row in due:
        owner = Principal("system", row["workspace_id"], row["mode"], "secret", frozenset())
        released += await release_order(tx, owner, row["order_id"], now, expired_only=True)
    return released


async def reconcile(tx: Tx, principal: Principal, now: int) -> list[dict[str, object]]:
    """Recompute `reserved` from the active reservations; fix and report every drift."""
    rows = await tx.fetch(
        "SELECT l.sku, l.location, l.reserved, COALESCE(SUM(r.quantity), 0) AS held FROM inventory_levels l"
        " LEFT JOIN reservations r ON r.workspace_id = l.workspace_id AND r.mode = l.mode AND r.sku = l.sku"
        " AND r.location = l.location AND r.status = 'active'"
        " WHERE l.workspace_id = $1 AND l.mode = $2 GROUP BY l.sku, l.location, l.reserved ORDER BY l.sku, l.location",
        principal.workspace_id,
        principal.mode,
    )
    drift = []
    for row in rows:
        difference = int(row["held"]) - int(row["reserved"])
        if difference == 0:
            continue
        await tx.execute(
            "UPDATE inventory_levels SET reserved = $5, updated_at = $6"
            " WHERE workspace_id = $1 AND mode = $2 AND sku = $3 AND location = $4",
            principal.workspace_id,
            principal.mode,
            row["sku"],
            row["location"],
            int(row["held"]),
            now,
        )
        await tx.execute(
            "INSERT INTO inventory_movements"
            " (workspace_id, mode, sku, location, kind, on_hand_delta, reserved_delta, reason, reference, created_at)"
            " VALUES ($1, $2, $3, $4, 'reconcile', 0, $5, 'reconcile', NULL, $6)",
            principal.workspace_id,
            principal.mode,
            row["sku"],
            row["location"],
            difference,
            now,
        )
        drift.append({"sku": row["sku"], "location": row["location"], "recorded": int(row["reserved"]),
                      "actual": int(row["held"])})  # fmt: skip
    return drift
