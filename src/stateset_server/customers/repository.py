"""SQL for customers. Every query is scoped to a workspace and mode, and a deleted customer (soft
deleted: `deleted_at` set) reads as absent everywhere."""

from __future__ import annotations

import msgspec

from stateset_server.customers.model import Customer
from stateset_server.storage import IN_WORKSPACE, Row, Tx

__all__ = [
    "CUSTOMER_COLUMNS",
    "ConcurrentUpdate",
    "customer_from_row",
    "find_by_email",
    "find_id_by_email",
    "get_customer",
    "insert_customer",
    "update_customer",
]

_encode = msgspec.json.encode
CUSTOMER_COLUMNS = (
    "id, workspace_id, mode, email, first_name, last_name, phone, tier, addresses, metadata, version,"
    " created_at, updated_at, deleted_at"
)
# What an update may rewrite; id, tenant and created_at are fixed. email_key follows email.
_MUTABLE = ("email", "first_name", "last_name", "phone", "tier", "addresses", "metadata", "version", "updated_at")
_JSON_FIELDS = {"addresses", "metadata"}


class ConcurrentUpdate(Exception):
    """Another transaction changed the customer first; the caller's transaction must be rolled back."""


def customer_from_row(row: Row) -> Customer:
    return Customer(
        id=row["id"],
        workspace_id=row["workspace_id"],
        mode=row["mode"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        phone=row["phone"],
        tier=row["tier"],
        addresses=msgspec.json.decode(row["addresses"]),
        metadata=msgspec.json.decode(row["metadata"]),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


async def get_customer(
    tx: Tx, workspace_id: str, mode: str, customer_id: str, *, for_update: bool = False
) -> Customer | None:
    """The live customer with this id in this workspace and mode; anything else reads as absent."""
    lock = " FOR UPDATE" if for_update else ""
    row = await tx.fetchrow(
        f"SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1 AND {IN_WORKSPACE} AND deleted_at IS NULL{lock}",
        customer_id,
        workspace_id,
        mode,
    )
    return None if row is None else customer_from_row(row)


async def find_by_email(tx: Tx, workspace_id: str, mode: str, email: str) -> Customer | None:
    """The live customer with this email, ignoring case (the unique index `customers_email`)."""
    row = await tx.fetchrow(
        f"SELECT {CUSTOMER_COLUMNS} FROM customers"
        " WHERE workspace_id = $1 AND mode = $2 AND email_key = $3 AND deleted_at IS NULL",
        workspace_id,
        mode,
        email.strip().lower(),
    )
    return None if row is None else customer_from_row(row)


async def find_id_by_email(tx: Tx, workspace_id: str, mode: str, email: str) -> str | None:
    """`find_by_email`, for callers that need only the customer's id (an order being created)."""
    value = await tx.fetchval(
        "SELECT id FROM customers WHERE workspace_id = $1 AND mode = $2 AND email_key = $3 AND deleted_at IS NULL",
        workspace_id,
        mode,
        email.strip().lower(),
    )
    return None if value is None else str(value)


async def insert_customer(tx: Tx, customer: Customer) -> bool:
    """Insert the customer unless a live one already has its email: False then, and nothing written.

    ON CONFLICT on the partial unique index rather than a look-up first: on PostgreSQL two concurrent
    inserts of one email would otherwise both pass the look-up and the second fail with a 500. Here
    the second waits for the first to commit and then does nothing.
    """
    inserted = await tx.fetchval(
        "INSERT INTO customers (id, workspace_id, mode, email, email_key, first_name, last_name, phone, tier,"
        " addresses, metadata, version, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT (workspace_id, mode, email_key) WHERE deleted_at IS NULL DO NOTHING RETURNING 1",
        customer.id,
        customer.workspace_id,
        customer.mode,
        customer.email,
        customer.email_key,
        customer.first_name,
        customer.last_name,
        customer.phone,
        customer.tier,
        _encode(customer.addresses).decode(),
        _encode(customer.metadata).decode(),
        customer.version,
        customer.created_at,
        customer.updated_at,
    )
    return inserted is not None


def _column_value(customer: Customer, name: str) -> object:
    value = getattr(customer, name)
    return _encode(value).decode() if name in _JSON_FIELDS else value


async def update_customer(tx: Tx, before: Customer, after: Customer) -> None:
    """Write the changed columns of `after` (which must be `before` plus one change: version + 1), or
    set `deleted_at` when `after` is the deletion. The version check makes a lost update impossible."""
    assert after.version == before.version + 1
    changed = [name for name in _MUTABLE if getattr(before, name) != getattr(after, name)]
    if after.email != before.email:
        changed.append("email_key")
    if after.deleted_at != before.deleted_at:
        changed.append("deleted_at")
    values = [after.email_key if name == "email_key" else _column_value(after, name) for name in changed]
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changed, start=5))
    row = await tx.fetchrow(
        f"UPDATE customers SET {assignments}"
        f" WHERE id = $1 AND {IN_WORKSPACE} AND version = $4"
        " AND deleted_at IS NULL RETURNING id",
        before.id,
        before.workspace_id,
        before.mode,
        before.version,
        *values,
    )
    if row is None:
        raise ConcurrentUpdate(before.id)
    if "email_key" in changed or "deleted_at" in changed:
        await tx.invalidate("customers")  # orders remember which customer an email belongs to
