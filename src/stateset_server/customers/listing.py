"""`GET /v1/customers`: the customer list's filters and sorts for the shared list engine."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams

from stateset_server.core.listing import OPERATORS, Field, ListQuery, ListSpec, parse_list_query, read_page
from stateset_server.customers.repository import CUSTOMER_COLUMNS, customer_from_row
from stateset_server.customers.schemas import customer_out
from stateset_server.storage import Database
from stateset_server.workspaces.keys import Principal

__all__ = ["CUSTOMER_LIST", "list_customers", "parse_customer_query"]

_CREATED = Field("created_at", "datetime", sortable=True)

CUSTOMER_LIST = ListSpec(
    # The list engine scopes by workspace and mode only; deleted customers are never listed. Both
    # engines inline this subquery, so the (workspace_id, mode, …) indexes still serve the page.
    table="(SELECT * FROM customers WHERE deleted_at IS NULL) AS customers",
    fields={
        "id": Field("id", "string", selective=True),
        # Filters and sorts on the lower-cased key (values are lower-cased too, parse_customer_query):
        # emails compare ignoring case, like their uniqueness.
        "email": Field("email_key", "string", sortable=True, selective=True),
        "first_name": Field("first_name", "string"),
        # A missing last name sorts as "": NULLs order differently on the two engines and a keyset
        # cursor cannot compare with NULL.
        "last_name": Field("coalesce(last_name, '')", "string", sortable=True),
        "tier": Field("tier", "string"),
        "created_at": _CREATED,
        "created": _CREATED,
        "updated_at": Field("updated_at", "datetime", sortable=True),
    },
    aliases={
        "created_after": ("created_at", "gt"),
        "created_before": ("created_at", "lt"),
        "customer_tier": ("tier", "eq"),  # the spec's name
    },
    search=("email", "first_name", "last_name", "phone"),
)

_EMAIL_PARAMS = {"email", *(f"email_{op}" for op in OPERATORS)}


def parse_customer_query(params: QueryParams) -> ListQuery:
    """The list query, with email filter values lower-cased to match `email_key`."""
    lowered = [(name, value.lower() if name in _EMAIL_PARAMS else value) for name, value in params.multi_items()]
    return parse_list_query(QueryParams(lowered), CUSTOMER_LIST)


async def list_customers(db: Database, principal: Principal, query: ListQuery) -> dict[str, Any]:
    data, pagination = await read_page(
        db, CUSTOMER_LIST, query, principal, CUSTOMER_COLUMNS, lambda row: customer_out(customer_from_row(row))
    )
    return {"data": data, "pagination": pagination}
