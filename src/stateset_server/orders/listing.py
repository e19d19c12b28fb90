"""`GET /v1/orders`: the orders list, its filters and sorts, in both specs' shapes."""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.core.clock import iso
from stateset_server.core.listing import Field, ListQuery, ListSpec, fetch_page
from stateset_server.core.money import format_amount
from stateset_server.orders import repository
from stateset_server.orders.document import listed
from stateset_server.orders.present import order_out
from stateset_server.orders.status import ALIASES, OrderStatus, parse_status
from stateset_server.storage import Database, Tx
from stateset_server.storage.packing import unpack
from stateset_server.workspaces.keys import Principal

__all__ = ["ORDER_LIST", "list_orders"]

_encode = msgspec.json.encode
# What a page shows: the stored document and the Orders API's summary fields (the sort keys come
# with the page as `_k…`). Building 20 rows of every order column cost more than the statement.
_COLUMNS = "id, customer_id, status, total, currency, created_at, document"


def _status(text: str) -> str | None:
    status = parse_status(text)
    return None if status is None else status.value


def _currency(text: str) -> str | None:
    upper = text.strip().upper()
    return upper if 3 <= len(upper) <= 5 and upper.isalpha() else None


_STATUS = Field("status", "enum", sortable=True, parse=_status, choices=(*OrderStatus, *ALIASES))
_TOTAL = Field("total", "money", sortable=True)
_CREATED = Field("created_at", "datetime", sortable=True)

ORDER_LIST = ListSpec(
    table="orders",
    fields={
        "id": Field("id", "string", sortable=True, selective=True),
        "status": _STATUS,
        "order_number": Field("order_number", "integer", sortable=True, selective=True),
        "customer_id": Field("customer_id", "string", selective=True),
        "customer_email": Field("customer_email", "string", sortable=True, selective=True),
        "currency": Field("currency", "enum", parse=_currency, choices=("USD", "USDC", "EUR", "…")),
        "total": _TOTAL,
        "total_amount": _TOTAL,
        "subtotal": Field("subtotal", "money"),
        "amount_paid": Field("amount_paid", "money"),
        "amount_refunded": Field("amount_refunded", "money"),
        "created_at": _CREATED,
        "created": _CREATED,
        "updated_at": Field("updated_at", "datetime", sortable=True),
        "tracking_number": Field("tracking_number", "string"),
        "carrier": Field("carrier", "string"),
    },
    aliases={
        "created_after": ("created_at", "gt"),
        "created_before": ("created_at", "lt"),
        "amount_min": ("total", "gte"),
        "amount_max": ("total", "lte"),
    },
    search=("id", "customer_email", "customer_id", "tracking_number", "notes"),
)


async def list_orders(db: Database, principal: Principal, query: ListQuery, *, base_url: str) -> dict[str, Any]:
    async def read(tx: Tx, *, in_snapshot: bool) -> dict[str, Any] | None:
        page = await fetch_page(tx, ORDER_LIST, query, principal, _COLUMNS)
        # Each order as stored (orders/document.py); orders from before documents are rendered.
        missing = [row["id"] for row in page.rows if row["document"] is None]
        if missing and not in_snapshot:
            return None  # rendering reads their items and payments: do it all in one snapshot
        rendered = {
            order.id: _encode(order_out(order, base_url))
            for order in (await repository.orders_by_id(tx, missing) if missing else [])
        }
        return {
            "object": "list",
            "data": [
                msgspec.Raw(
                    rendered[row["id"]]
                    if row["document"] is None
                    else listed(unpack(row["document"]), base_url, row["id"])
                )
                for row in page.rows
            ],
            "pagination": page.pagination(),
            # The Orders API's shape, side by side: its list items are order summaries.
            "orders": [
                {
                    "id": row["id"],
                    "customer_id": row["customer_id"],
                    "status": row["status"],
                    "total": format_amount(row["total"], row["currency"]),
                    "currency": row["currency"],
                    "created_at": iso(row["created_at"]),
                }
                for row in page.rows
            ],
            "total_count": page.total_count,
            "has_more": page.has_more,
        }

    # The page and its count are two statements; outside a snapshot they may see commits a moment
    # apart (the count is a courtesy, exact only up to 1,000 anyway), and it saves BEGIN and COMMIT
    # — two round trips on PostgreSQL.
    page = await db.read(lambda tx: read(tx, in_snapshot=False), snapshot=False)
    if page is None:
        page = await db.read(lambda tx: read(tx, in_snapshot=True))
    assert page is not None
    return page
