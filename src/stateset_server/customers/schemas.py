"""Customer wire types: what clients send and what they get back (they also generate the OpenAPI
document). Addresses are the orders' `AddressIn`, so a customer's address can be copied onto an order
as is."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from stateset_server.core.clock import iso
from stateset_server.customers.model import Customer
from stateset_server.orders.schemas import AddressIn, Metadata

__all__ = [
    "MAX_ADDRESSES",
    "CreateCustomerIn",
    "CustomerOut",
    "DeletedCustomerOut",
    "UpdateCustomerIn",
    "customer_out",
]

MAX_ADDRESSES = 10
Email = Annotated[
    str, Meta(max_length=500, description="An email address; unique per workspace and mode, ignoring case")
]
Name = Annotated[str, Meta(max_length=200)]
Phone = Annotated[str, Meta(max_length=40)]
Tier = Annotated[str, Meta(max_length=32, description="Free text, e.g. gold")]
Addresses = Annotated[list[AddressIn], Meta(max_length=MAX_ADDRESSES)]


class CreateCustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    first_name: Name | None = None
    last_name: Name | None = None
    phone: Phone | None = None
    tier: Tier | None = None
    addresses: Addresses | None = None
    metadata: Metadata | None = None


class UpdateCustomerIn(msgspec.Struct, forbid_unknown_fields=True):
    """PUT and PATCH: only the fields given change. `null` (or "") clears a name, phone or tier and
    `addresses: null` empties the list; `metadata` merges (a null or "" value removes the key)."""

    # UNSET tells "not given" (no change) apart from null (clear it).
    email: Email | UnsetType = UNSET
    first_name: Name | UnsetType | None = UNSET
    last_name: Name | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
    tier: Tier | UnsetType | None = UNSET
    addresses: Addresses | UnsetType | None = UNSET
    metadata: Metadata | None = None


class CustomerOut(msgspec.Struct):
    id: str
    email: str
    first_name: str | None
    last_name: str | None
    name: str | None  # first and last name joined
    phone: str | None
    tier: str | None
    addresses: list[dict[str, Any]]
    metadata: dict[str, Any]
    livemode: bool
    created_at: str
    updated_at: str
    object: str = "customer"


class DeletedCustomerOut(msgspec.Struct):
    id: str
    deleted: bool = True
    object: str = "customer"


def customer_out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        id=customer.id,
        email=customer.email,
        first_name=customer.first_name,
        last_name=customer.last_name,
        name=customer.name,
        phone=customer.phone,
        tier=customer.tier,
        addresses=customer.addresses,
        metadata=customer.metadata,
        livemode=customer.mode == "live",
        created_at=iso(customer.created_at),
        updated_at=iso(customer.updated_at),
    )
