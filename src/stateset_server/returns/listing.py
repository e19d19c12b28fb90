"""`GET /v1/returns`: the return list's fields for the shared list engine."""

from __future__ import annotations

from typing import Any

from stateset_server.core.listing import Field, ListQuery, ListSpec, fetch_page
from stateset_server.returns import repository
from stateset_server.returns.model import ReturnStatus, parse_return_status
from stateset_server.returns.service import shown_returns
from stateset_server.storage import Database, Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["RETURN_LIST", "list_returns"]

_CREATED = Field("created_at", "datetime", sortable=True)

RETURN_LIST = ListSpec(
    table="returns",
    fields={
        "id": Field("id", "string", sortable=True, selective=True),
        "order_id": Field("order_id", "string", selective=True),
        "status": Field(
            "status", "enum", sortable=True, parse=parse_return_status, choices=tuple(s.value for s in ReturnStatus)
        ),
        "refund_amount": Field("refund_amount", "money", sortable=True),
        "created_at": _CREATED,
        "created": _CREATED,
        "updated_at": Field("updated_at", "datetime", sortable=True),
    },
    aliases={"created_after": ("created_at", "gt"), "created_before": ("created_at", "lt")},
    search=("id", "order_id", "reason"),
)


async def list_returns(db: Database, principal: Principal, query: ListQuery) -> dict[str, Any]:
    async def read(tx: Tx) -> dict[str, Any]:
        page = await fetch_page(tx, RETURN_LIST, query, principal, repository.RETURN_COLUMNS)
        rets = await repository.returns_from_rows(tx, page.rows)
        return {"data": await shown_returns(tx, principal, rets, timeline=False), "pagination": page.pagination()}

    return await db.read(read)
