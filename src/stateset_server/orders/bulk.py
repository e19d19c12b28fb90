"""Bulk operations: create up to 1,000 orders atomically, and pay many orders one by one.

Bulk create validates every order before writing any and reports each bad one with its index; the
good ones are then written in one transaction, so the batch lands whole or not at all (a payment
that fails inside it rolls the whole batch back, naming the order). Bulk pay is the opposite by
design: each payment is its own transaction and the response reports every result.
"""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.core.errors import ApiError
from stateset_server.core.money import format_amount
from stateset_server.core.validation import decode_body
from stateset_server.orders import lifecycle, service
from stateset_server.orders.intake import payment_request
from stateset_server.orders.pricing import Pricing
from stateset_server.orders.schemas import CreateOrderIn, OrderOut, PayIn
from stateset_server.payments import ledger
from stateset_server.payments.fees import FeeSchedule
from stateset_server.payments.service import SANDBOX_WALLET
from stateset_server.products.catalog import known_products
from stateset_server.storage import IN_WORKSPACE, Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["MAX_BATCH", "create_bulk", "pay_bulk", "split_batch"]

MAX_BATCH = 1000


class _Envelope(msgspec.Struct):
    orders: list[msgspec.Raw] | None = None
    payments: list[msgspec.Raw] | None = None


def split_batch(body: bytes, key: str) -> list[bytes]:
    """The raw items of a batch: a JSON array, or an object holding the array under `key`. Items stay
    raw bytes so each is decoded exactly (money in JSON numbers included) and errors carry its index."""
    items: list[msgspec.Raw] | None
    try:
        decoded = msgspec.json.decode(body, type=list[msgspec.Raw] | _Envelope)
    except msgspec.ValidationError:
        decoded = None
    except msgspec.DecodeError:
        decode_body(body, dict)  # raises the standard 400 for malformed JSON
        raise
    items = decoded if isinstance(decoded, list) else (getattr(decoded, key) if decoded is not None else None)
    if items is None:
        raise ApiError.field(
            key,
            f"a batch is a JSON array, or an object with an `{key}` array",
            expected=f'[{{…}}, …] or {{"{key}": [{{…}}, …]}}',
            received=None,
            code="VALIDATION_ERROR",
        )
    if not 1 <= len(items) <= MAX_BATCH:
        raise ApiError.field(
            key,
            f"a batch holds 1 to {MAX_BATCH} items; this one has {len(items)} (split it into several requests)",
            expected=f"1 to {MAX_BATCH} items",
            received=len(items),
        )
    return [bytes(item) for item in items]


def _item_error(index: int, error: ApiError) -> dict[str, Any]:
    return {"index": index, "code": error.code, "message": error.message, "details": error.details}


async def create_bulk(
    db: Database,
    principal: Principal,
    raw_items: list[bytes],
    *,
    strict: bool,
    pricing: Pricing,
    fees: FeeSchedule,
    base_url: str,
    request_id: str | None,
) -> list[OrderOut]:
    plans, errors, bodies = [], [], []
    for index, raw in enumerate(raw_items):
        try:
            bodies.append((index, decode_body(raw, CreateOrderIn, strict=strict)))
        except ApiError as error:
            errors.append(_item_error(index, error))
    skus = sorted({item.sku for _index, body in bodies for item in body.items})
    known = await known_products(db, principal, skus)
    for index, body in bodies:
        try:
            plans.append(
                service.plan_order(body, principal, pricing=pricing, fees=fees, known=known, base_url=base_url)
            )
        except ApiError as error:
            errors.append(_item_error(index, error))
    errors.sort(key=lambda error: error["index"])
    if errors:
        raise ApiError(
            "VALIDATION_ERROR",
            f"{len(errors)} of {len(raw_items)} orders are invalid; nothing was created.",
            {"errors": errors},
        )

    async def write(tx: Tx) -> list[OrderOut]:
        created = []
        for index, plan in enumerate(plans):
            try:
                created.append(
                    await service.insert_planned(tx, principal, plan, base_url=base_url, request_id=request_id)
                )
            except ApiError as error:
                raise ApiError(
                    error.code,
                    f"Order {index} failed: {error.message} Nothing was created.",
                    {"errors": [_item_error(index, error)]},
                    status=error.status,
                ) from None
        return created

    return await db.write(write)


class PayBulkItem(PayIn, kw_only=True, forbid_unknown_fields=True):
    order_id: str


async def pay_bulk(
    db: Database,
    principal: Principal,
    raw_items: list[bytes],
    *,
    strict: bool,
    fees: FeeSchedule,
    base_url: str,
    request_id: str | None,
) -> list[dict[str, Any]]:
    """One transaction, one savepoint per payment: each succeeds or fails on its own, and the whole
    report commits at once (one fsync, and one idempotent unit)."""
    prepared: list[tuple[int, Any]] = []
    for index, raw in enumerate(raw_items):
        try:
            prepared.append((index, decode_body(raw, PayBulkItem, strict=strict)))
        except ApiError as error:
            prepared.append((index, error))

    wallets = [w for _index, item in prepared if (w := _paying_wallet(principal, item)) is not None]

    async def write(tx: Tx) -> list[dict[str, Any]]:
        await ledger.lock_wallets(tx, principal, wallets)
        return [await _pay_one(tx, principal, index, item, fees, base_url, request_id) for index, item in prepared]

    return await db.write(write)


def _paying_wallet(principal: Principal, item: PayBulkItem | ApiError) -> str | None:
    """The wallet a USDC item pays from, to lock up front (None: not a USDC payment, or invalid)."""
    if isinstance(item, ApiError):
        return None
    try:
        request = payment_request(item, "USDC", livemode=principal.livemode)
    except ApiError:
        return None
    return (request.wallet_address or SANDBOX_WALLET) if request.method == "usdc" else None


async def _pay_one(
    tx: Tx,
    principal: Principal,
    index: int,
    item: PayBulkItem | ApiError,
    fees: FeeSchedule,
    base_url: str,
    request_id: str | None,
) -> dict[str, Any]:
    if isinstance(item, ApiError):
        return {"index": index, "order_id": None, "status": "failed", "error": _item_error(index, item)}
    try:
        async with tx.savepoint():
            currency = await tx.fetchval(
                f"SELECT currency FROM orders WHERE id = $1 AND {IN_WORKSPACE}",
                item.order_id,
                principal.workspace_id,
                principal.mode,
            )
            if currency is None:
                raise ApiError.not_found("order", item.order_id)
            request = payment_request(item, currency, livemode=principal.livemode)
            received = None if item.amount is None else str(item.amount)
            decide = lifecycle.pay(principal, request, fees, received=received)
            order, outcome = await lifecycle.run_in(
                tx, principal, item.order_id, decide, base_url=base_url, request_id=request_id
            )
    except ApiError as error:
        return {"index": index, "order_id": item.order_id, "status": "failed", "error": _item_error(index, error)}
    payment = outcome.payment
    return {
        "index": index,
        "order_id": item.order_id,
        "status": "succeeded",
        "payment_id": payment.id if payment else None,
        "amount": order.amount_paid if payment is None else format_amount(payment.amount, currency),
        "transaction_hash": payment.transaction_hash if payment else None,
        "order_status": order.status,
        "amount_due": order.amount_due,
    }
