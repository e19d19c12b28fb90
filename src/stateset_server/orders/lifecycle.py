"""Order commands after creation: every status change, payment, refund and edit.

Each command is a small `decide(tx, order, now) -> Outcome` function; `run` gives them all the same
spine: lock and load the order, decide, write the new order (version-checked), and append one event
per outcome type with the new snapshot and the attributes that changed — all in one transaction.
Only `orders.machine.transition` decides a status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.metadata import merge_metadata
from stateset_server.core.money import format_amount
from stateset_server.events import log
from stateset_server.inventory import stock
from stateset_server.orders import repository
from stateset_server.orders.document import render, timeline_json
from stateset_server.orders.machine import IllegalTransition, Position, allowed_next, transition
from stateset_server.orders.model import Order
from stateset_server.orders.present import order_out, timeline
from stateset_server.orders.schemas import OrderOut, TimelineEntry
from stateset_server.orders.status import OrderStatus as S
from stateset_server.payments import service as payments
from stateset_server.payments.fees import FeeSchedule
from stateset_server.payments.model import Payment, Refund
from stateset_server.payments.repository import order_payments
from stateset_server.products.catalog import catalog_in
from stateset_server.storage import Database, Tx
from stateset_server.storage.database import Stale
from stateset_server.workspaces.keys import Principal

__all__ = ["Outcome", "apply", "conflict", "move", "pay", "predicted", "pure", "refund", "run", "run_in", "update"]

_encode = msgspec.json.encode
_UNTRACKED = {"updated_at", "timeline"}
# A document's fields as their JSON: comparing two renderings field by field needs no Python objects.
_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_steps_of = msgspec.json.Decoder(list[TimelineEntry])
_NO_TX: Tx = None  # type: ignore[assignment]  # what a pure command is given: it never uses its tx


@dataclass
class Outcome:
    order: Order
    events: list[str]
    payment: Payment | None = None
    refunds: list[Refund] = field(default_factory=list)
    # A predicted outcome's own writes besides the order and its events (a payment's ledger rows):
    # the prepared transaction runs them instead of deciding again. Stale when they no longer hold.
    writes: Callable[[Tx], Awaitable[None]] | None = field(default=None, compare=False)


Decide = Callable[[Tx, Order, int], Awaitable[Outcome]]


def conflict(error: IllegalTransition, order_id: str) -> ApiError:
    return ApiError(
        "RESOURCE_CONFLICT",
        f"Order {order_id} is {error.current} and cannot become {error.requested}.",
        {
            "current_status": error.current.value,
            "requested_status": error.requested.value,
            "allowed_statuses": [s.value for s in error.allowed],
        },
    )


def _position(order: Order) -> Position:
    return Position(order.status, order.resume_status)


def _micros(moment: datetime | None, default: int) -> int:
    return default if moment is None else int(moment.timestamp() * 1_000_000)


def move(order: Order, target: S, **changes: Any) -> Order:
    """The order in `target` status (IllegalTransition if the table forbids it), with `changes`."""
    position = transition(_position(order), target)
    return msgspec.structs.replace(order, status=position.status, resume_status=position.resume_status, **changes)


def _previous(before: Order, data: bytes, base_url: str) -> dict[str, msgspec.Raw]:
    """The fields of the order as shown before the change that `data` (its JSON after) changed, as
    JSON. The stored document is the order as shown before (orders/document.py): splitting it into
    fields costs far less than rendering the order again. Both renderings come from one encoder, so a
    field is unchanged exactly when its JSON is."""
    shown = before.document + b"}" if before.document is not None else _encode(order_out(before, base_url))
    old = _fields.decode(shown)
    new = _fields.decode(data)
    return {key: value for key, value in old.items() if key not in _UNTRACKED and new.get(key) != value}


async def apply(
    tx: Tx,
    principal: Principal,
    before: Order,
    decide: Decide,
    *,
    now: int,
    base_url: str,
    request_id: str | None,
) -> tuple[OrderOut, Outcome]:
    """Decide, write the new order and its events; the caller owns the transaction."""
    try:
        outcome = await decide(tx, before, now)
    except IllegalTransition as error:
        raise conflict(error, before.id) from None
    after = msgspec.structs.replace(outcome.order, version=before.version + 1, updated_at=now)
    await _stock_follows_status(tx, principal, before, after, now)
    if outcome.payment is not None:
        after = msgspec.structs.replace(after, payments=[*after.payments, outcome.payment])
    if outcome.refunds:
        after = msgspec.structs.replace(after, payments=await order_payments(tx, before.id))
    shown = _render(before, after, outcome.events, base_url)
    await _append_events(tx, principal, before, after, outcome.events, shown, now, request_id)
    document = shown.document
    if document is None:  # an order from before documents: its timeline comes from its events
        shown.order.timeline = timeline(await log.object_events(tx, principal, before.id))
        document = render(shown.order).document
    await repository.update_order(tx, before, after, document)
    return shown.order, outcome


@dataclass
class _Shown:
    """An order after a change as the API shows it, with what its events carry."""

    order: OrderOut  # its timeline is set by the caller
    data: bytes  # the events' snapshot (no timeline)
    previous: bytes  # previous_attributes
    event_ids: list[str]
    first_event: TimelineEntry | None  # the timeline step the change adds, if its status changed
    document: bytes | None  # as stored (packed); None: the timeline must be read from the events first


def _render(before: Order, after: Order, events: list[str], base_url: str) -> _Shown:
    """Pure: the rendering a change needs, whether it runs in the transaction or ahead of it. The
    order's stored document gives its timeline, so the order is encoded once (`document.render`);
    an order from before documents is encoded for its events now and, once its timeline has been
    read, again for its document (`apply`)."""
    shown = order_out(after, base_url)
    event_ids = [new_id("evt") for _ in events]
    first = TimelineEntry(after.status.value, shown.updated_at, events[0], event_ids[0]) if events else None
    document = None
    if before.document is not None:
        shown.timeline = _steps(before.document, first)
        _body, document, data = render(shown)
    else:
        data = _encode(shown)
    return _Shown(shown, data, _encode(_previous(before, data, base_url)), event_ids, first, document)


async def _append_events(
    tx: Tx,
    principal: Principal,
    before: Order,
    after: Order,
    events: list[str],
    shown: _Shown,
    now: int,
    request_id: str | None,
) -> None:
    if events:
        await log.append_each(
            tx,
            principal=principal,
            types=events,
            event_ids=shown.event_ids,
            object_type="order",
            object_id=before.id,
            data=shown.data,
            previous_attributes=shown.previous,
            created_at=now,
            request_id=request_id,
            object_status=after.status.value,
        )


def _steps(document: bytes, first_event: TimelineEntry | None) -> list[TimelineEntry]:
    """The timeline after a change: the stored one plus a step if the status changed (as
    `present.timeline` would compute from the events)."""
    steps = _steps_of.decode(timeline_json(document))
    if first_event is not None and (not steps or steps[-1].status != first_event.status):
        steps.append(first_event)
    return steps


async def _stock_follows_status(tx: Tx, principal: Principal, before: Order, after: Order, now: int) -> None:
    """Reservations move with the order: paid → kept (taken again if they expired), fulfilled →
    committed, cancelled or refunded before fulfilment → released."""
    if after.status == before.status:
        return
    if after.status == S.PAID:
        tracked = await catalog_in(tx, principal, [item.sku for item in after.items])
        wanted: dict[str, int] = {}
        for item in after.items:
            if item.sku in tracked and tracked[item.sku].track_inventory:
                wanted[item.sku] = wanted.get(item.sku, 0) + item.quantity
        await stock.keep_for_payment(tx, principal, after.id, wanted, now, held=before.held)
    elif after.status == S.FULFILLED:
        await stock.commit_order(tx, principal, after.id, now, held=before.held)
    elif after.status in (S.CANCELLED, S.REFUNDED):
        await stock.release_order(tx, principal, after.id, now, held=before.held)


async def run(
    db: Database,
    principal: Principal,
    order_id: str,
    decide: Decide,
    *,
    base_url: str,
    request_id: str | None,
) -> tuple[OrderOut, Outcome]:
    """One command on one order, in one transaction: prepared ahead and written if the order has not
    changed meanwhile (`_prepare`), else with the order row held (locked on PostgreSQL)."""
    prepared = await _prepare(db, principal, order_id, decide, base_url)

    async def write(tx: Tx) -> tuple[OrderOut, Outcome]:
        nonlocal prepared
        if prepared is not None:
            attempt, prepared = prepared, None  # once: run again (PostgreSQL, Stale), it takes the lock
            done = await _write_prepared(tx, principal, attempt, request_id)
            if done is not None:
                return done
        return await run_in(tx, principal, order_id, decide, base_url=base_url, request_id=request_id)

    return await db.write(write)


def pure(decide: Decide) -> Decide:
    """Mark a command that decides from the order alone (it never touches its `tx`)."""
    decide.pure = True  # type: ignore[attr-defined]
    return decide


def predicted(decide: Decide, predict: Callable[[Order, int], Outcome | None]) -> Decide:
    """Attach to a command that moves money the pure function that tells its outcome ahead, with
    the writes that record it (`Outcome.writes`). The transaction runs those writes, guarded, and
    `decide` only if the order or what the writes check changed meanwhile."""
    decide.predict = predict  # type: ignore[attr-defined]
    return decide


@dataclass
class _Prepared:
    """A pure command decided and rendered against a snapshot of the order, outside the write
    transaction; written only if the order is still at that version."""

    before: Order
    after: Order
    outcome: Outcome
    shown: _Shown
    document: bytes  # packed
    now: int
    decide: Decide


async def _prepare(
    db: Database, principal: Principal, order_id: str, decide: Decide, base_url: str
) -> _Prepared | None:
    """A pure command's Python (deciding, rendering the order, its event snapshot and document) runs
    before its transaction, against the last committed order; the transaction then only checks the
    version and writes. On SQLite every write waits for one lock shared by all server processes, and
    this keeps the Python out of it (commands that move money are predicted, with the writes that
    record them, checked inside). On PostgreSQL a command that needs no other answer is then one
    statement (`Tx.guard`) instead of BEGIN, a locked read, the writes and COMMIT. The order's
    active reservations are read with it: they change only with the order's version, or expire
    before it is paid. None when this cannot be done ahead (the command needs the transaction, or
    fails: it is decided again in the transaction, which gives the authoritative answer)."""
    is_pure, predict = getattr(decide, "pure", False), getattr(decide, "predict", None)
    if not is_pure and predict is None:
        return None
    before = await repository.read_order(db, principal.workspace_id, principal.mode, order_id)
    if before is None or before.document is None:
        return None
    now = now_us()
    try:
        outcome = await decide(_NO_TX, before, now) if is_pure else predict(before, now)
    except (IllegalTransition, ApiError):
        return None
    if outcome is None or outcome.refunds or (is_pure and outcome.payment is not None):
        return None
    after = msgspec.structs.replace(outcome.order, version=before.version + 1, updated_at=now)
    if outcome.payment is not None:
        after = msgspec.structs.replace(after, payments=[*after.payments, outcome.payment])
    shown = _render(before, after, outcome.events, base_url)
    assert shown.document is not None  # (before.document is not None)
    return _Prepared(before, after, outcome, shown, shown.document, now, decide)


async def _write_prepared(
    tx: Tx, principal: Principal, prepared: _Prepared, request_id: str | None
) -> tuple[OrderOut, Outcome] | None:
    """Write a prepared command, if the order is still at the version it was decided on and what
    a predicted command's own writes check still holds (`Outcome.writes`). Else nothing of it is
    kept: a pure command on SQLite, whose only guard is its first statement, then gets None and is
    decided again in the same call; otherwise Stale is raised (on PostgreSQL possibly only when the
    write is sent at the end as one statement), its writes are undone with the transaction or the
    unit, and the database runs the transaction function again (`Stale`), which decides it then."""
    if tx.dialect == "sqlite" and getattr(prepared.decide, "pure", False):
        try:
            await _write_checked(tx, principal, prepared, request_id)
        except Stale:
            return None  # only its first statement guards: nothing was written
        return prepared.shown.order, prepared.outcome
    try:
        await _write_checked(tx, principal, prepared, request_id)
    except ApiError:  # e.g. stock no longer held; PostgreSQL: held-back parts may be waiting
        raise Stale from None
    return prepared.shown.order, prepared.outcome


async def _write_checked(tx: Tx, principal: Principal, prepared: _Prepared, request_id: str | None) -> None:
    await repository.update_order_if_current(tx, prepared.before, prepared.after, prepared.document)
    writes = prepared.outcome.writes
    if writes is not None:
        await writes(tx)
    await _write_rest(tx, principal, prepared, request_id)


async def _write_rest(tx: Tx, principal: Principal, prepared: _Prepared, request_id: str | None) -> None:
    before, after, now = prepared.before, prepared.after, prepared.now
    await _stock_follows_status(tx, principal, before, after, now)
    await _append_events(tx, principal, before, after, prepared.outcome.events, prepared.shown, now, request_id)


async def run_in(
    tx: Tx, principal: Principal, order_id: str, decide: Decide, *, base_url: str, request_id: str | None
) -> tuple[OrderOut, Outcome]:
    """One command on one order inside the caller's transaction."""
    before = await repository.get_order(tx, principal.workspace_id, principal.mode, order_id, for_update=True)
    if before is None:
        raise ApiError.not_found("order", order_id)
    return await apply(tx, principal, before, decide, now=now_us(), base_url=base_url, request_id=request_id)


# --- commands -------------------------------------------------------------------------------------


def simple(target: S, event_types: list[str], **stamp: str) -> Callable[..., Decide]:
    """A status change that needs nothing but the table (hold, release, return, dispute, resolve)."""

    def command(reason: str | None = None) -> Decide:
        async def decide(_tx: Tx, order: Order, now: int) -> Outcome:
            changes: dict[str, Any] = {name: now for name in stamp.values()}
            if reason is not None or target in (S.HELD, S.DISPUTED, S.RETURNED):
                changes["status_reason"] = reason
            return Outcome(move(order, target, **changes), list(event_types))

        return pure(decide)

    return command


hold = simple(S.HELD, ["order.held"])
release = simple(S.RELEASED, ["order.released"])
return_order = simple(S.RETURNED, ["order.returned"])
dispute = simple(S.DISPUTED, ["order.disputed"])
resolve = simple(S.RESOLVED, ["order.resolved"])


def fulfill(tracking_number: str | None = None, carrier: str | None = None) -> Decide:
    async def decide(_tx: Tx, order: Order, now: int) -> Outcome:
        changes: dict[str, Any] = {"fulfilled_at": now}
        if tracking_number is not None:
            changes["tracking_number"] = tracking_number
        if carrier is not None:
            changes["carrier"] = carrier
        # The API reference calls this step "processing": both event names are sent.
        return Outcome(move(order, S.FULFILLED, **changes), ["order.fulfilled", "order.processing"])

    return pure(decide)


def ship(
    tracking_number: str | None = None,
    carrier: str | None = None,
    shipped_at: datetime | None = None,
    estimated_delivery: datetime | None = None,
) -> Decide:
    async def decide(_tx: Tx, order: Order, now: int) -> Outcome:
        changes: dict[str, Any] = {"shipped_at": _micros(shipped_at, now)}
        if tracking_number is not None:
            changes["tracking_number"] = tracking_number
        if carrier is not None:
            changes["carrier"] = carrier
        if estimated_delivery is not None:
            changes["estimated_delivery"] = _micros(estimated_delivery, now)
        return Outcome(move(order, S.SHIPPED, **changes), ["order.shipped"])

    return pure(decide)


def deliver(delivered_at: datetime | None = None) -> Decide:
    async def decide(_tx: Tx, order: Order, now: int) -> Outcome:
        return Outcome(move(order, S.DELIVERED, delivered_at=_micros(delivered_at, now)), ["order.delivered"])

    return pure(decide)


def _amount_error(field: str, issue: str, limit: int, currency: str, received: str | None) -> ApiError:
    return ApiError.field(field, issue, expected=f"at most {format_amount(limit, currency)}", received=received)


def pay(
    principal: Principal,
    request: payments.PaymentRequest,
    schedule: FeeSchedule,
    *,
    received: str | None = None,
    accounts: dict[str, str] | None = None,
) -> Decide:
    """`accounts`: the committed ledger account ids the payment will use, when known (by address;
    `ledger.committed_account_ids`): the transaction then skips looking them up."""
    ids = payments.ChargeIds.new()  # chosen now, so that `predict` knows the payment `decide` makes

    def amount_of(order: Order) -> int:
        if S.PAID not in allowed_next(_position(order)):
            raise IllegalTransition(_position(order), S.PAID)
        due = order.amount_due
        amount = due if request.amount is None else request.amount
        if amount > due:
            raise _amount_error("amount", "exceeds the amount due", due, order.currency, received)
        if amount == 0 and due > 0:
            raise ApiError.field("amount", "must be positive", expected="an amount above zero", received=received)
        return amount

    def outcome(order: Order, amount: int, payment: Payment | None, now: int) -> Outcome:
        paid = order.amount_paid + amount
        if amount < order.amount_due:
            return Outcome(msgspec.structs.replace(order, amount_paid=paid), ["order.updated"], payment)
        return Outcome(move(order, S.PAID, amount_paid=paid, paid_at=now), ["order.paid"], payment)

    async def decide(tx: Tx, order: Order, now: int) -> Outcome:
        amount = amount_of(order)
        payment = None
        if amount > 0:
            payment = await payments.charge(
                tx,
                principal,
                order_id=order.id,
                currency=order.currency,
                amount=amount,
                request=request,
                schedule=schedule,
                now=now,
                ids=ids,
                accounts=accounts,
            )
        return outcome(order, amount, payment, now)

    def predict(order: Order, now: int) -> Outcome | None:
        amount = amount_of(order)
        if amount == 0:
            return outcome(order, 0, None, now)
        charge = payments.predict_charge(
            order_id=order.id, currency=order.currency, amount=amount, request=request, schedule=schedule,
            now=now, ids=ids, accounts=accounts or {},
        )  # fmt: skip
        if charge is None:
            return None
        predicted = outcome(order, amount, charge.payment, now)
        predicted.writes = lambda tx: charge.write(tx, principal)
        return predicted

    return predicted(decide, predict)


async def _refund_across_payments(
    tx: Tx, principal: Principal, order: Order, amount: int, reason: str | None, now: int
) -> list[Refund]:
    """Newest payment first, as card processors and wallets expect."""
    refunds, left = [], amount
    for payment in reversed(order.payments):
        if left == 0:
            break
        part = min(left, payment.refundable)
        if part > 0:
            refunds.append(await payments.refund(tx, principal, payment=payment, amount=part, reason=reason, now=now))
            left -= part
    return refunds


def refund(principal: Principal, amount: int | None, reason: str | None, *, received: str | None = None) -> Decide:
    async def decide(tx: Tx, order: Order, now: int) -> Outcome:
        if order.paid_at is None and order.refundable > 0 and order.status not in (S.CANCELLED, S.REFUNDED):
            # Money of an order not yet fully paid goes back by cancelling it; refunds are for paid
            # orders, so what an order has received never exceeds its total.
            raise ApiError(
                "RESOURCE_CONFLICT",
                f"Order {order.id} is not fully paid; cancel it to return its partial payments.",
                {
                    "current_status": order.status.value,
                    "amount_paid": format_amount(order.amount_paid, order.currency),
                    "amount_due": format_amount(order.amount_due, order.currency),
                },
            )
        if order.status in (S.CANCELLED, S.REFUNDED) or order.refundable == 0:
            raise ApiError(
                "RESOURCE_CONFLICT",
                f"Order {order.id} has nothing left to refund.",
                {
                    "current_status": order.status.value,
                    "amount_paid": format_amount(order.amount_paid, order.currency),
                    "amount_refunded": format_amount(order.amount_refunded, order.currency),
                },
            )
        value = order.refundable if amount is None else amount
        if value == 0 or value > order.refundable:
            raise _amount_error(
                "amount",
                "must be above zero and at most what is refundable",
                order.refundable,
                order.currency,
                received,
            )
        refunded = order.amount_refunded + value
        if value == order.refundable and order.paid_at is not None:
            # Refunding everything ends a paid order: the table says from where (PAID, RETURNED, DISPUTED).
            updated = move(order, S.REFUNDED, amount_refunded=refunded)
        else:
            updated = msgspec.structs.replace(order, amount_refunded=refunded)
        refunds = await _refund_across_payments(tx, principal, order, value, reason, now)
        return Outcome(updated, ["order.refunded"], refunds=refunds)

    return decide


def cancel(principal: Principal, reason: str | None) -> Decide:
    """Cancel; money already received goes back in the same transaction."""

    async def decide(tx: Tx, order: Order, now: int) -> Outcome:
        cancelled = move(order, S.CANCELLED, cancelled_at=now, status_reason=reason)
        if order.refundable == 0:
            return Outcome(cancelled, ["order.cancelled"])
        refunds = await _refund_across_payments(
            tx, principal, order, order.refundable, reason or "order cancelled", now
        )
        cancelled = msgspec.structs.replace(cancelled, amount_refunded=order.amount_paid)
        return Outcome(cancelled, ["order.refunded", "order.cancelled"], refunds=refunds)

    return decide


# Status changes a PUT/PATCH may ask for, and the command each one is.
_BY_STATUS: dict[S, Callable[[Principal, str | None], Decide]] = {
    S.FULFILLED: lambda _p, _r: fulfill(),
    S.SHIPPED: lambda _p, _r: ship(),
    S.DELIVERED: lambda _p, _r: deliver(),
    S.HELD: lambda _p, r: hold(r),
    S.RELEASED: lambda _p, r: release(r),
    S.CANCELLED: cancel,
    S.RETURNED: lambda _p, r: return_order(r),
    S.DISPUTED: lambda _p, r: dispute(r),
    S.RESOLVED: lambda _p, r: resolve(r),
}


def command_for_status(principal: Principal, target: S, reason: str | None) -> Decide:
    if target not in _BY_STATUS:
        endpoint = {S.PAID: "pay", S.REFUNDED: "refund"}.get(target)
        raise ApiError.field(
            "status",
            f"{target.value} is reached through POST /v1/orders/{{id}}/{endpoint}"
            if endpoint
            else f"an order cannot be set to {target.value}",
            expected="one of " + ", ".join(s.value for s in _BY_STATUS),
            received=target.value,
        )
    return _BY_STATUS[target](principal, reason)


def update(
    principal: Principal,
    *,
    metadata: dict[str, Any] | None,
    addresses: dict[str, Any],
    notes: str | None,
    status: S | None,
    reason: str | None,
) -> Decide:
    """Edit metadata (merged; null or "" removes a key), notes and — before shipping — addresses,
    then apply a requested status change. One transaction, `order.updated` first."""

    async def decide(tx: Tx, order: Order, now: int) -> Outcome:
        changes: dict[str, Any] = {}
        if metadata is not None:
            changes["metadata"] = merge_metadata(order.metadata, metadata)
        if addresses:
            if order.shipped_at is not None or order.status in (S.CANCELLED, S.REFUNDED):
                raise ApiError(
                    "RESOURCE_CONFLICT",
                    f"Addresses of order {order.id} can no longer change: it is {order.status.value}.",
                    {"current_status": order.status.value, "fields": sorted(addresses)},
                )
            changes.update(addresses)
        if notes is not None:
            changes["notes"] = notes
        edited = msgspec.structs.replace(order, **changes)
        events = ["order.updated"] if changes else []
        if status is None:
            return Outcome(edited, events)
        following = await command_for_status(principal, status, reason)(tx, edited, now)
        return Outcome(following.order, events + following.events, following.payment, following.refunds)

    return decide
