"""Return commands and reads. Every command is one transaction: the return's new state, its event
(`return.created|approved|rejected|cancelled|received|processed`, object type `return`), and what it
does to the order, the stock and the money — so a failure anywhere leaves nothing behind.

Rules:
- **Create** against an order that is SHIPPED or DELIVERED (or RELEASED/RESOLVED standing for one),
  or RETURNED with items left (a second partial return); otherwise 409. Each line may return at most
  what was ordered minus what the order's other returns hold — rejected and cancelled returns hold
  nothing — else 422 naming `items[i].quantity` and "at most N". The order row is locked meanwhile,
  so two concurrent returns can never over-return a line.
- **Value** (fixed at creation, shown as `refund_amount`): Σ quantity × unit_price exactly, plus the
  items' share of the order's tax, `order.tax × subtotal / order.subtotal` rounded half-up to the
  currency's precision. The return that leaves nothing more to return gets exactly the tax the order's
  other returns have not taken, so an order returned in several parts refunds exactly its tax — never
  more. Shipping is not refunded (refund it with POST /v1/orders/{id}/refund if the merchant wishes).
- **Receive** restocks each SKU whose product tracks inventory (SKUs without a product are not
  stocked) at `location`, unless `restock: false`, and moves the order to RETURNED through the order
  state machine unless it already is (or is REFUNDED: all its money is back, nothing left to move).
- **Process** refunds the value through the order's payments (`lifecycle.refund`: newest payment
  first, back to the original method). A refund that leaves nothing refundable moves the order to
  REFUNDED per the order table; anything less is a partial refund. If the order can no longer refund
  the whole value (money went back another way) processing is refused with 409 rather than refunding
  a different amount than the return says.

Timestamps (`approved_at`…) and the notes given with a status change (`status_reason`,
`received_by`) are read back from the return's events, the one record of its changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import msgspec

from stateset_server.core.clock import iso, now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.metadata import check_metadata
from stateset_server.core.money import format_amount, round_half_up
from stateset_server.events import log
from stateset_server.inventory import stock
from stateset_server.orders import lifecycle
from stateset_server.orders import repository as orders
from stateset_server.orders.machine import Position, effective_status
from stateset_server.orders.model import LineItem, Order
from stateset_server.orders.status import OrderStatus as S
from stateset_server.returns import repository
from stateset_server.returns.model import (
    IllegalReturnTransition,
    Return,
    ReturnItem,
    ReturnStatus,
    transition,
)
from stateset_server.returns.schemas import (
    CreateReturnIn,
    ReturnItemIn,
    ReturnItemOut,
    ReturnOut,
    ReturnReceiveIn,
    ReturnRestockOut,
    ReturnTimelineEntry,
)
from stateset_server.storage import Database, Row, Tx
from stateset_server.storage.packing import unpack
from stateset_server.workspaces.keys import Principal

__all__ = [
    "RETURNABLE_ORDER_STATUSES",
    "approve",
    "cancel",
    "create",
    "get",
    "process",
    "receive",
    "reject",
    "return_out",
    "return_tax",
    "shown_returns",
]

_encode = msgspec.json.encode
RETURNABLE_ORDER_STATUSES = (S.SHIPPED, S.DELIVERED, S.RETURNED)
_UNTRACKED = {"updated_at", "timeline"}
# Which event each status is entered with.
_EVENT = {status: f"return.{status.value}" for status in ReturnStatus} | {ReturnStatus.REQUESTED: "return.created"}
_STAMPED = (
    ReturnStatus.APPROVED,
    ReturnStatus.REJECTED,
    ReturnStatus.CANCELLED,
    ReturnStatus.RECEIVED,
    ReturnStatus.PROCESSED,
)


class _Notes(msgspec.Struct):
    """What a return keeps only in its events: read from the latest event's snapshot."""

    status_reason: str | None = None
    received_by: str | None = None


# --- presentation ---------------------------------------------------------------------------------


def _trail(events: list[Row]) -> tuple[dict[ReturnStatus, int], _Notes]:
    """When each status was entered, and the notes of the latest change."""
    stamps: dict[ReturnStatus, int] = {}
    for row in events:
        if row["object_status"] is not None:
            stamps[ReturnStatus(row["object_status"])] = row["created_at"]
    notes = msgspec.json.decode(unpack(events[-1]["data"]), type=_Notes) if events else _Notes()
    return stamps, notes


def _timeline(events: list[Row]) -> list[ReturnTimelineEntry]:
    return [
        ReturnTimelineEntry(row["object_status"], iso(row["created_at"]), row["type"], row["id"])
        for row in events
        if row["object_status"] is not None
    ]


def return_out(ret: Return, stamps: dict[ReturnStatus, int], notes: _Notes, restocks: list[Row]) -> ReturnOut:
    money = ret.currency

    def when(status: ReturnStatus) -> str | None:
        return iso(stamps[status]) if status in stamps else None

    return ReturnOut(
        id=ret.id,
        order_id=ret.order_id,
        status=ret.status.value,
        livemode=ret.mode == "live",
        reason=ret.reason,
        currency=money,
        items=[
            ReturnItemOut(
                id=item.id,
                order_item_id=item.order_item_id,
                sku=item.sku,
                quantity=item.quantity,
                unit_price=format_amount(item.unit_price, money),
                total=format_amount(item.total, money),
            )
            for item in ret.items
        ],
        subtotal=format_amount(ret.subtotal, money),
        tax=format_amount(ret.tax, money),
        refund_amount=format_amount(ret.refund_amount, money),
        refund_id=ret.refund_id,
        refunded_at=when(ReturnStatus.PROCESSED) if ret.refund_id is not None else None,
        restock_location=ret.restock_location,
        restocked=[ReturnRestockOut(r["sku"], r["location"], int(r["on_hand_delta"])) for r in restocks],
        metadata=ret.metadata,
        status_reason=notes.status_reason,
        received_by=notes.received_by,
        created_at=iso(ret.created_at),
        updated_at=iso(ret.updated_at),
        approved_at=when(ReturnStatus.APPROVED),
        rejected_at=when(ReturnStatus.REJECTED),
        cancelled_at=when(ReturnStatus.CANCELLED),
        received_at=when(ReturnStatus.RECEIVED),
        processed_at=when(ReturnStatus.PROCESSED),
    )


async def shown_returns(tx: Tx, principal: Principal, rets: list[Return], *, timeline: bool) -> list[ReturnOut]:
    """Returns as shown, with their events and restocks read in two queries for the whole list."""
    ids = [ret.id for ret in rets]
    events = await repository.events_of(tx, principal, ids)
    restocks = await repository.restocks_of(tx, principal, ids)
    shown = []
    for ret in rets:
        out = return_out(ret, *_trail(events[ret.id]), restocks[ret.id])
        if timeline:
            out.timeline = _timeline(events[ret.id])
        shown.append(out)
    return shown


async def get(db: Database, principal: Principal, return_id: str) -> ReturnOut:
    async def read(tx: Tx) -> ReturnOut | None:
        ret = await repository.get_return(tx, principal, return_id)
        return None if ret is None else (await shown_returns(tx, principal, [ret], timeline=True))[0]

    shown = await db.read(read)
    if shown is None:
        raise ApiError.not_found("return", return_id)
    return shown


async def _record(
    tx: Tx,
    principal: Principal,
    ret: Return,
    *,
    before: ReturnOut | None,
    stamps: dict[ReturnStatus, int],
    notes: _Notes,
    now: int,
    request_id: str | None,
) -> ReturnOut:
    """Append the event of the return's new status (snapshot + changed attributes); the shown return."""
    restocks = (await repository.restocks_of(tx, principal, [ret.id]))[ret.id]
    shown = return_out(ret, stamps, notes, restocks)
    previous = None
    if before is not None:
        old, new = msgspec.to_builtins(before), msgspec.to_builtins(shown)
        previous = _encode({k: v for k, v in old.items() if k not in _UNTRACKED and new.get(k) != v})
    await log.append(
        tx,
        principal=principal,
        type=_EVENT[ret.status],
        object_type="return",
        object_id=ret.id,
        data=_encode(shown),
        previous_attributes=previous,
        created_at=now,
        request_id=request_id,
        object_status=ret.status.value,
    )
    shown.timeline = _timeline((await repository.events_of(tx, principal, [ret.id]))[ret.id])
    return shown


# --- create ---------------------------------------------------------------------------------------


def return_tax(order: Order, subtotal: int, *, taken: int, completes: bool) -> int:
    """The items' share of the order's tax (see the module docstring). `taken`: the tax the order's
    other counted returns already hold; `completes`: nothing is left to return after this one."""
    left = max(order.tax - taken, 0)
    if completes:
        return left
    if order.subtotal == 0:
        return 0
    return min(round_half_up(Fraction(order.tax * subtotal, order.subtotal), order.currency), left)


def _item_error(index: int, name: str, issue: str, expected: str, received: Any, code: str) -> ApiError:
    return ApiError.field(f"items[{index}].{name}", issue, expected=expected, received=received, code=code)


def _lines_for(order: Order, index: int, wanted: ReturnItemIn) -> list[LineItem]:
    if wanted.order_item_id is not None:
        line = next((item for item in order.items if item.id == wanted.order_item_id), None)
        if line is None:
            raise _item_error(
                index,
                "order_item_id",
                f"not a line of order {order.id}",
                "one of " + ", ".join(item.id for item in order.items),
                wanted.order_item_id,
                "VALIDATION_ERROR",
            )
        if wanted.sku is not None and wanted.sku != line.sku:
            raise _item_error(index, "sku", "does not match the line's SKU", line.sku, wanted.sku, "VALIDATION_ERROR")
        return [line]
    if wanted.sku is not None:
        lines = [item for item in order.items if item.sku == wanted.sku]
        if not lines:
            skus = sorted({item.sku for item in order.items})
            raise _item_error(
                index, "sku", f"not on order {order.id}", "one of " + ", ".join(skus), wanted.sku, "VALIDATION_ERROR"
            )
        return lines
    raise _item_error(
        index, "order_item_id", "order_item_id or sku is required", "an order line id or SKU", None,
        "MISSING_REQUIRED_FIELD",
    )  # fmt: skip


def _quantities(order: Order, items: list[ReturnItemIn] | None, left: dict[str, int]) -> dict[str, int]:
    """Per order line, what this return takes. A SKU on several lines takes them in order; a line
    named twice adds up, and every request item is checked against what is still left."""
    if items is None:
        return {line_id: quantity for line_id, quantity in left.items() if quantity > 0}
    taken: dict[str, int] = {}
    for index, wanted in enumerate(items):
        lines = _lines_for(order, index, wanted)
        available = sum(left[line.id] - taken.get(line.id, 0) for line in lines)
        if wanted.quantity > available:
            raise _item_error(
                index,
                "quantity",
                "more than the order can still return (ordered, less what its other returns hold)",
                f"at most {available}",
                wanted.quantity,
                "VALIDATION_ERROR",
            )
        remaining = wanted.quantity
        for line in lines:
            part = min(remaining, left[line.id] - taken.get(line.id, 0))
            if part > 0:
                taken[line.id] = taken.get(line.id, 0) + part
                remaining -= part
    return taken


def _order_conflict(order: Order, message: str, **details: Any) -> ApiError:
    return ApiError(
        "RESOURCE_CONFLICT",
        message,
        {"order_id": order.id, "current_status": order.status.value, **details},
    )


async def create(
    db: Database, principal: Principal, order_id: str, body: CreateReturnIn, *, request_id: str | None
) -> ReturnOut:
    metadata = check_metadata(body.metadata)

    async def write(tx: Tx) -> ReturnOut:
        # Locked: a concurrent return of the same order waits, then sees this one's quantities.
        order = await orders.get_order(tx, principal.workspace_id, principal.mode, order_id, for_update=True)
        if order is None:
            raise ApiError.not_found("order", order_id)
        if effective_status(Position(order.status, order.resume_status)) not in RETURNABLE_ORDER_STATUSES:
            raise _order_conflict(
                order,
                f"Order {order.id} is {order.status.value}: only shipped or delivered orders take returns.",
                allowed_statuses=[s.value for s in RETURNABLE_ORDER_STATUSES],
            )
        held = await repository.returned_quantities(tx, principal, order.id)
        left = {line.id: line.quantity - held.get(line.id, 0) for line in order.items}
        if sum(left.values()) == 0:
            raise _order_conflict(order, f"Every item of order {order.id} is already being returned.", items_left=0)
        wanted = _quantities(order, body.items, left)
        now = now_us()
        return_id = new_id("ret")
        items = [
            ReturnItem(new_id("rti"), line.id, line.sku, wanted[line.id], line.unit_price)
            for line in order.items
            if wanted.get(line.id)
        ]
        subtotal = sum(item.total for item in items)
        value_taken, subtotal_taken = await repository.allocated(tx, principal, order.id)
        completes = all(left[line.id] == wanted.get(line.id, 0) for line in order.items)
        tax = return_tax(order, subtotal, taken=value_taken - subtotal_taken, completes=completes)
        ret = Return(
            id=return_id,
            workspace_id=principal.workspace_id,
            mode=principal.mode,
            order_id=order.id,
            currency=order.currency,
            status=ReturnStatus.REQUESTED,
            reason=body.reason,
            refund_amount=subtotal + tax,
            refund_id=None,
            restock_location=None,
            metadata=metadata,
            version=1,
            created_at=now,
            updated_at=now,
            items=items,
        )
        await repository.insert_return(tx, ret)
        return await _record(tx, principal, ret, before=None, stamps={}, notes=_Notes(), now=now, request_id=request_id)

    return await db.write(write)


# --- status changes -------------------------------------------------------------------------------

# An effect does what a status change means beyond the return row, in the same transaction, and
# returns the columns of the return it changes.
Effect = Callable[[Tx, Return, int], Awaitable[dict[str, Any]]]


def _conflict(error: IllegalReturnTransition, return_id: str) -> ApiError:
    return ApiError(
        "RESOURCE_CONFLICT",
        f"Return {return_id} is {error.current.value} and cannot become {error.requested.value}.",
        {
            "current_status": error.current.value,
            "requested_status": error.requested.value,
            "allowed_statuses": [s.value for s in error.allowed],
        },
    )


async def _change(
    db: Database,
    principal: Principal,
    return_id: str,
    target: ReturnStatus,
    *,
    status_reason: str | None,
    received_by: str | None = None,
    effect: Effect | None = None,
    request_id: str | None,
) -> ReturnOut:
    """The spine of every status change: lock, check the table, apply the effect, write, record."""

    async def write(tx: Tx) -> ReturnOut:
        before = await repository.get_return(tx, principal, return_id, for_update=True)
        if before is None:
            raise ApiError.not_found("return", return_id)
        try:
            transition(before.status, target)
        except IllegalReturnTransition as error:
            raise _conflict(error, before.id) from None
        events = (await repository.events_of(tx, principal, [before.id]))[before.id]
        stamps, notes = _trail(events)
        restocked = (await repository.restocks_of(tx, principal, [before.id]))[before.id]
        shown_before = return_out(before, stamps, notes, restocked)
        now = now_us()
        changes = await effect(tx, before, now) if effect is not None else {}
        after = msgspec.structs.replace(before, status=target, version=before.version + 1, updated_at=now, **changes)
        await repository.update_return(tx, before, after)
        return await _record(
            tx,
            principal,
            after,
            before=shown_before,
            stamps={**stamps, target: now},
            notes=_Notes(status_reason=status_reason, received_by=received_by or notes.received_by),
            now=now,
            request_id=request_id,
        )

    return await db.write(write)


async def approve(
    db: Database, principal: Principal, return_id: str, notes: str | None, *, request_id: str | None
) -> ReturnOut:
    return await _change(db, principal, return_id, ReturnStatus.APPROVED, status_reason=notes, request_id=request_id)


async def reject(
    db: Database, principal: Principal, return_id: str, reason: str | None, *, request_id: str | None
) -> ReturnOut:
    return await _change(db, principal, return_id, ReturnStatus.REJECTED, status_reason=reason, request_id=request_id)


async def cancel(
    db: Database, principal: Principal, return_id: str, reason: str | None, *, request_id: str | None
) -> ReturnOut:
    return await _change(db, principal, return_id, ReturnStatus.CANCELLED, status_reason=reason, request_id=request_id)


async def receive(
    db: Database,
    principal: Principal,
    return_id: str,
    body: ReturnReceiveIn,
    *,
    base_url: str,
    request_id: str | None,
) -> ReturnOut:
    async def effect(tx: Tx, ret: Return, now: int) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if body.restock:
            per_sku: dict[str, int] = {}
            for item in ret.items:
                per_sku[item.sku] = per_sku.get(item.sku, 0) + item.quantity
            for sku, quantity in per_sku.items():
                if await repository.tracks_inventory(tx, principal, sku):
                    await stock.restock(
                        tx, principal, sku=sku, location=body.location, quantity=quantity, reference=ret.id,
                        now=now, request_id=request_id,
                    )  # fmt: skip
                    changes["restock_location"] = body.location
        order = await orders.get_order(tx, principal.workspace_id, principal.mode, ret.order_id, for_update=True)
        assert order is not None, "a return's order is never deleted"
        # A second partial return finds the order RETURNED already; a REFUNDED one has nowhere to go.
        if order.status not in (S.RETURNED, S.REFUNDED):
            await lifecycle.run_in(
                tx, principal, order.id, lifecycle.return_order(ret.reason), base_url=base_url, request_id=request_id
            )
        return changes

    return await _change(
        db,
        principal,
        return_id,
        ReturnStatus.RECEIVED,
        status_reason=body.notes,
        received_by=body.received_by,
        effect=effect,
        request_id=request_id,
    )


async def process(
    db: Database,
    principal: Principal,
    return_id: str,
    reason: str | None,
    *,
    base_url: str,
    request_id: str | None,
) -> ReturnOut:
    async def effect(tx: Tx, ret: Return, _now: int) -> dict[str, Any]:
        if ret.refund_amount == 0:  # free items: nothing to refund
            return {}
        order = await orders.get_order(tx, principal.workspace_id, principal.mode, ret.order_id, for_update=True)
        assert order is not None, "a return's order is never deleted"
        if order.paid_at is not None and order.refundable < ret.refund_amount:
            raise _order_conflict(
                order,
                f"Order {order.id} can refund {format_amount(order.refundable, order.currency)}, less than the"
                f" {format_amount(ret.refund_amount, order.currency)} return {ret.id} is worth.",
                refund_amount=format_amount(ret.refund_amount, order.currency),
                refundable=format_amount(order.refundable, order.currency),
            )
        refund_reason = f"return {ret.id}: {reason or ret.reason or 'returned items'}"
        _shown, outcome = await lifecycle.run_in(
            tx,
            principal,
            order.id,
            lifecycle.refund(principal, ret.refund_amount, refund_reason),
            base_url=base_url,
            request_id=request_id,
        )
        return {"refund_id": outcome.refunds[0].id}

    return await _change(
        db, principal, return_id, ReturnStatus.PROCESSED, status_reason=reason, effect=effect, request_id=request_id
    )
