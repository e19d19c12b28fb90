"""Customer commands and queries. Each command is one transaction that writes the customer and its
event together (`customer.created`, `customer.updated` with `previous_attributes`, `customer.deleted`).

`resolve_for_order` is the hook order creation calls inside its own transaction to link an order to a
customer: by id, or by email (finding or creating the customer). `EmailIds` remembers, per process,
which live customer an email belongs to, so that a returning customer's order skips that look-up.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.metadata import check_metadata, merge_metadata
from stateset_server.customers import repository
from stateset_server.customers.model import Customer, email_key, is_customer_id
from stateset_server.customers.schemas import (
    CreateCustomerIn,
    CustomerOut,
    DeletedCustomerOut,
    UpdateCustomerIn,
    customer_out,
)
from stateset_server.events import log
from stateset_server.orders.intake import _email as valid_email  # one email rule for orders and customers
from stateset_server.orders.intake import address_dict
from stateset_server.storage import Database, Tx
from stateset_server.storage.epoch import MarkedCache
from stateset_server.workspaces.keys import Principal

__all__ = [
    "EmailIds",
    "create_customer",
    "delete_customer",
    "draft_customer",
    "edit_customer",
    "get_customer",
    "require_customer",
    "resolve_for_order",
    "update_customer",
]

_encode = msgspec.json.encode
_UNTRACKED = {"updated_at"}  # changes with every update: not news in previous_attributes
_OPTIONAL_TEXT = ("first_name", "last_name", "phone", "tier")


def _text(value: str | None) -> str | None:
    """Optional text trimmed; blank means absent (a form that clears a field sends "")."""
    if value is None:
        return None
    return value.strip() or None


def draft_customer(body: CreateCustomerIn, principal: Principal, *, now: int) -> Customer:
    """A new customer from a validated request — all the checks that need no database."""
    return Customer(
        id=new_id("cus"),
        workspace_id=principal.workspace_id,
        mode=principal.mode,
        email=valid_email(body.email, "email"),
        first_name=_text(body.first_name),
        last_name=_text(body.last_name),
        phone=_text(body.phone),
        tier=_text(body.tier),
        addresses=[address_dict(a) for a in body.addresses or ()],
        metadata=check_metadata(body.metadata),
        version=1,
        created_at=now,
        updated_at=now,
    )


def edit_customer(customer: Customer, body: UpdateCustomerIn, *, now: int) -> Customer:
    """The customer after an update (the same object when nothing actually changes)."""
    changes: dict[str, Any] = {}
    if body.email is not UNSET:
        email = valid_email(body.email, "email")
        if email != customer.email:
            changes["email"] = email
    for name in _OPTIONAL_TEXT:
        value = getattr(body, name)
        if value is not UNSET and _text(value) != getattr(customer, name):
            changes[name] = _text(value)
    if body.addresses is not UNSET:
        addresses = [address_dict(a) for a in body.addresses or ()]
        if addresses != customer.addresses:
            changes["addresses"] = addresses
    if body.metadata is not None:
        merged = merge_metadata(customer.metadata, body.metadata)
        if merged != customer.metadata:
            changes["metadata"] = merged
    if not changes:
        return customer
    return msgspec.structs.replace(customer, **changes, version=customer.version + 1, updated_at=now)


def _already_exists(existing: Customer, email: str) -> ApiError:
    return ApiError(
        "RESOURCE_ALREADY_EXISTS",
        f"A customer with the email '{email}' already exists: {existing.id}",
        {"resource": "customer", "field": "email", "received": email, "existing_id": existing.id},
    )


async def _announce(
    tx: Tx,
    principal: Principal,
    kind: str,
    shown: CustomerOut,
    *,
    now: int,
    request_id: str | None,
    previous: dict[str, Any] | None = None,
) -> None:
    await log.append(
        tx,
        principal=principal,
        type=f"customer.{kind}",
        object_type="customer",
        object_id=shown.id,
        data=_encode(shown),
        previous_attributes=None if previous is None else _encode(previous),
        created_at=now,
        request_id=request_id,
    )


async def _insert(tx: Tx, principal: Principal, customer: Customer, request_id: str | None) -> Customer | None:
    """Store and announce a new customer; the live customer holding its email instead, if there is one."""
    if not await repository.insert_customer(tx, customer):
        existing = await repository.find_by_email(tx, customer.workspace_id, customer.mode, customer.email)
        assert existing is not None  # the unique index said so, in this very transaction
        return existing
    await _announce(tx, principal, "created", customer_out(customer), now=customer.created_at, request_id=request_id)
    return None


async def create_customer(
    db: Database, principal: Principal, draft: Customer, *, request_id: str | None
) -> CustomerOut:
    async def write(tx: Tx) -> CustomerOut:
        existing = await _insert(tx, principal, draft, request_id)
        if existing is not None:
            raise _already_exists(existing, draft.email)
        return customer_out(draft)

    return await db.write(write)


async def _current(tx: Tx, principal: Principal, customer_id: str, *, for_update: bool = False) -> Customer:
    customer = await repository.get_customer(
        tx, principal.workspace_id, principal.mode, customer_id, for_update=for_update
    )
    if customer is None:
        raise ApiError.not_found("customer", customer_id)
    return customer


async def get_customer(db: Database, principal: Principal, customer_id: str) -> CustomerOut:
    async def read(tx: Tx) -> CustomerOut:
        return customer_out(await _current(tx, principal, customer_id))

    return await db.read(read)


async def require_customer(db: Database, principal: Principal, customer_id: str) -> None:
    """404 unless the customer exists (live, in the caller's workspace and mode)."""

    async def read(tx: Tx) -> None:
        await _current(tx, principal, customer_id)

    await db.read(read)


async def update_customer(
    db: Database, principal: Principal, customer_id: str, body: UpdateCustomerIn, *, request_id: str | None
) -> CustomerOut:
    async def write(tx: Tx) -> CustomerOut:
        before = await _current(tx, principal, customer_id, for_update=True)
        after = edit_customer(before, body, now=now_us())
        if after is before:
            return customer_out(before)
        if after.email_key != before.email_key:
            holder = await repository.find_by_email(tx, principal.workspace_id, principal.mode, after.email)
            if holder is not None:
                raise _already_exists(holder, after.email)
        await repository.update_customer(tx, before, after)
        shown_before, shown = customer_out(before), customer_out(after)
        old, new = msgspec.to_builtins(shown_before), msgspec.to_builtins(shown)
        previous = {key: value for key, value in old.items() if key not in _UNTRACKED and new[key] != value}
        await _announce(tx, principal, "updated", shown, now=after.updated_at, request_id=request_id, previous=previous)
        return shown

    return await db.write(write)


async def delete_customer(
    db: Database, principal: Principal, customer_id: str, *, request_id: str | None
) -> DeletedCustomerOut:
    """Soft delete: the row stays (orders keep pointing at it) but reads as absent, and its email is
    free for a new customer (the unique index covers live customers only)."""

    async def write(tx: Tx) -> DeletedCustomerOut:
        before = await _current(tx, principal, customer_id, for_update=True)
        now = now_us()
        after = msgspec.structs.replace(before, version=before.version + 1, updated_at=now, deleted_at=now)
        await repository.update_customer(tx, before, after)
        # The event carries the customer as it last was, as Stripe's customer.deleted does.
        await _announce(tx, principal, "deleted", customer_out(before), now=now, request_id=request_id)
        return DeletedCustomerOut(id=customer_id)

    return await db.write(write)


async def resolve_for_order(
    tx: Tx,
    principal: Principal,
    *,
    customer_id: str | None,
    email: str | None,
    now: int,
    request_id: str | None,
    field: str = "customer_id",
    known_id: str | None = None,
) -> tuple[str | None, str | None]:
    """The (customer_id, customer_email) an order stores, inside the order's transaction.

    - An id of this server's shape (`cus_` + 22 base62 characters) must name a live customer of the
      caller's workspace and mode — else 422 naming `field`: it is a bad reference in a body, not a
      missing URL resource. The customer's email fills in when the order gives none.
    - Any other id (`cust_123`, a Stripe `cus_…`) is the client's own reference: kept as given, no
      look-up, no customer created.
    - Only an email: the customer with that email (ignoring case), created (`customer.created`) when
      there is none. The order keeps the email as the client wrote it.
    `email` must already be validated (orders' intake does it). `known_id`: the customer `EmailIds`
    remembers for that email, used without looking it up.
    """
    if customer_id is not None:
        if not is_customer_id(customer_id):
            return customer_id, email
        customer = await repository.get_customer(tx, principal.workspace_id, principal.mode, customer_id)
        if customer is None:
            raise ApiError.field(
                field, "no such customer", expected="the id of an existing customer", received=customer_id
            )
        return customer.id, email if email is not None else customer.email
    if email is None:
        return None, None
    if known_id is not None:
        return known_id, email
    found = await repository.find_id_by_email(tx, principal.workspace_id, principal.mode, email_key(email))
    if found is not None:
        return found, email
    draft = Customer(
        id=new_id("cus"),
        workspace_id=principal.workspace_id,
        mode=principal.mode,
        email=email.strip(),
        first_name=None,
        last_name=None,
        phone=None,
        tier=None,
        addresses=[],
        metadata={},
        version=1,
        created_at=now,
        updated_at=now,
    )
    # Lost a race with a concurrent order for the same new email: use the customer that won.
    existing = await _insert(tx, principal, draft, request_id)
    return (existing or draft).id, email


# (workspace, mode, email key) → the id of the live customer with that email. Only ids an order's
# committed transaction linked are remembered; a change of a customer's email, or its deletion,
# changes the "customers" marker (repository.update_customer).
_email_ids: MarkedCache[tuple[str, str, str], str] = MarkedCache("customers", 100_000)


class EmailIds:
    """The customer an order's email belongs to, as remembered from earlier orders: `known` before
    the order's transaction, `remember` after it committed."""

    __slots__ = ("_db", "_key", "_marker", "known")

    def __init__(self, db: Database, principal: Principal, customer_id: str | None, email: str | None) -> None:
        self._db = db
        self._key = None if customer_id is not None or email is None else (
            principal.workspace_id, principal.mode, email_key(email)
        )  # fmt: skip
        self._marker = _email_ids.marker(db.epochs) if self._key is not None else None  # taken before the look-up
        self.known = _email_ids.get(db.epochs, self._marker, self._key)[1] if self._key is not None else None

    def remember(self, customer_id: str | None) -> None:
        """After the commit: the customer the order was linked to (found or created by it)."""
        if self._key is not None and self.known is None and customer_id is not None:
            _email_ids.put(self._db.epochs, self._marker, self._key, customer_id)
