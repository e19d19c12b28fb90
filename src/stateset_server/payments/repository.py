"""SQL for payments and refunds."""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.payments.model import Payment, Refund
from stateset_server.storage import Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["PAYMENT_COLUMNS", "add_refunded", "insert_payment", "insert_refund", "order_payments"]

PAYMENT_COLUMNS = (
    "id, order_id, method, status, amount, amount_refunded, currency, network_fee, processing_fee,"
    " wallet_address, card_brand, card_last4, card_token, transaction_hash, created_at"
)


async def insert_payment(
    tx: Tx, principal: Principal, payment: Payment, billing_address: dict[str, Any] | None
) -> None:
    await tx.execute(
        f"INSERT INTO payments (workspace_id, mode, billing_address, {PAYMENT_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        principal.workspace_id,
        principal.mode,
        None if billing_address is None else msgspec.json.encode(billing_address).decode(),
        *msgspec.structs.astuple(payment),
    )


async def order_payments(tx: Tx, order_id: str) -> list[Payment]:
    rows = await tx.fetch(
        f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_at, id", order_id
    )
    return [Payment(*row) for row in rows]


async def add_refunded(tx: Tx, payment_id: str, amount: int) -> None:
    await tx.execute("UPDATE payments SET amount_refunded = amount_refunded + $2 WHERE id = $1", payment_id, amount)


async def insert_refund(tx: Tx, principal: Principal, refund: Refund) -> None:
    await tx.execute(
        "INSERT INTO refunds"
        " (workspace_id, mode, id, order_id, payment_id, amount, reason, transaction_hash, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        principal.workspace_id,
        principal.mode,
        *msgspec.structs.astuple(refund),
    )
