"""Product wire types."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from stateset_server.orders.schemas import Amount, Metadata, Sku

__all__ = ["CreateProductIn", "ProductOut", "UpdateProductIn"]

Name = Annotated[str, Meta(min_length=1, max_length=300)]


class CreateProductIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Sku
    name: Name
    description: Annotated[str, Meta(max_length=5000)] | None = None
    category: Annotated[str, Meta(max_length=100)] | None = None
    price: Amount | None = None  # orders may leave an item's price out when its product has one
    currency: Annotated[str, Meta(min_length=3, max_length=5)] = "USDC"
    track_inventory: bool = True
    low_stock_threshold: Annotated[int, Meta(ge=0, le=1_000_000_000)] | None = None
    active: bool = True
    metadata: Metadata | None = None


class UpdateProductIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    description: Annotated[str, Meta(max_length=5000)] | None = None
    category: Annotated[str, Meta(max_length=100)] | None = None
    price: Amount | None = None
    currency: Annotated[str, Meta(min_length=3, max_length=5)] | None = None
    track_inventory: bool | None = None
    low_stock_threshold: Annotated[int, Meta(ge=0, le=1_000_000_000)] | None = None
    active: bool | None = None
    metadata: Metadata | None = None


class ProductOut(msgspec.Struct):
    id: str
    sku: str
    name: str
    description: str | None
    category: str | None
    price: str | None
    currency: str | None
    track_inventory: bool
    low_stock_threshold: int | None
    active: bool
    metadata: dict[str, Any]
    livemode: bool
    created_at: str
    updated_at: str
    object: str = "product"
