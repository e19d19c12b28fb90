"""Query plans that must not depend on statistics a new database does not have yet.

PostgreSQL finds an order by id through its primary key even before the table has statistics.

A new database that fills fast (a bulk import, a benchmark) goes unanalyzed for a minute or more.
Without statistics the planner took `WHERE id = $1 AND workspace_id = $2 AND mode = $3` as three
equally selective keys and walked an index that leads with workspace and mode, with `id` last:
every order of the workspace, per lookup. Lookups by id now compare workspace and mode in a form
no index can use, so only the primary key is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
from starlette.datastructures import QueryParams

from stateset_server.core.errors import ApiError
from stateset_server.core.listing import ListSpec, fetch_page, parse_list_query
from stateset_server.core.pagination import encode_cursor
from stateset_server.inventory import stock
from stateset_server.orders import repository
from stateset_server.orders.listing import ORDER_LIST
from stateset_server.orders.service import order_currency
from stateset_server.returns import repository as returns_repository
from stateset_server.returns.listing import RETURN_LIST
from stateset_server.storage.migrate import migrate
from stateset_server.storage.sqlite import _sql as sqlite_sql
from stateset_server.webhooks import repository as webhooks_repository
from stateset_server.webhooks.service import DELIVERY_LIST
from stateset_server.workspaces.keys import Principal
from tests.conftest import dispose_database_url, make_database_url

ORDERS = 5_000


class _Explaining:
    """A transaction that explains each statement instead of running it."""

    dialect = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.plans: list[str] = []

    async def _explain(self, sql: str, *args: Any) -> None:
        rows = await self.conn.fetch("EXPLAIN " + sql, *args)
        self.plans.append("\n".join(row[0] for row in rows))

    async def fetchrow(self, sql: str, *args: Any) -> None:
        await self._explain(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> None:
        await self._explain(sql, *args)


class _Reads:
    """A database whose reads run on `_Explaining`."""

    dialect = "postgres"

    def __init__(self, tx: _Explaining) -> None:
        self.tx = tx

    async def read(self, fn: Any, *, snapshot: bool = True) -> Any:
        return await fn(self.tx)


async def _plans(url: str) -> list[str]:
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO orders (id, workspace_id, mode, order_number, status, currency, customer_email,"
            " subtotal, tax, shipping, total, version, created_at, updated_at)"
            " SELECT 'ord_' || lpad(n::text, 22, '0'), 'ws_1', 'test', n, 'pending', 'USD', 'same@example.com',"
            " 100, 0, 0, 100, 1, n, n FROM generate_series(1, $1) AS n",
            ORDERS,
        )
        analyzed = await conn.fetchval(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables"
            " WHERE relname = 'orders'"
        )
        assert not analyzed  # the situation under test: no statistics yet
        tx = _Explaining(conn)
        order_id = "ord_" + "1234".rjust(22, "0")
        await repository.get_order(tx, "ws_1", "test", order_id)  # type: ignore[arg-type]
        await repository.get_order(tx, "ws_1", "test", order_id, for_update=True)  # type: ignore[arg-type]
        await tx.fetchrow(repository.DOCUMENT.one, order_id)
        await tx.fetchrow(repository.DOCUMENT.many, [order_id, "ord_" + "77".rjust(22, "0")])
        await tx.fetchrow(repository.HELD_ORDER["postgres"].one, order_id)
        await tx.fetchrow(repository.HELD_ORDER["postgres"].many, [order_id, "ord_" + "77".rjust(22, "0")])
        await tx.fetchrow(repository.STATE_ORDER["postgres"].one, order_id)
        await tx.fetchrow(repository.STATE_ORDER["postgres"].many, [order_id, "ord_" + "77".rjust(22, "0")])
        principal = Principal("key_1", "ws_1", "test", "secret", frozenset())
        with contextlib.suppress(ApiError):  # it explains the statement, then finds no row
            await order_currency(_Reads(tx), principal, order_id)  # type: ignore[arg-type]
        return tx.plans
    finally:
        await conn.close()


def test_orders_are_found_by_primary_key_before_the_table_has_statistics(tmp_path: object) -> None:
    url = make_database_url("postgres", str(tmp_path))
    try:
        plans = asyncio.run(_plans(url))
    finally:
        dispose_database_url(url)
    assert len(plans) == 9
    for plan in plans:
        scans = [line.strip().removeprefix("->").strip() for line in plan.splitlines() if " on orders" in line]
        if scans[0].startswith("Bitmap Heap Scan on orders"):  # many ids: their rows through the key's bitmap
            assert len(scans) == 2 and scans[1].startswith("Bitmap Index Scan on orders_pkey"), plan
        else:
            assert len(scans) == 1 and scans[0].startswith("Index Scan using orders_pkey on orders"), plan
        held = [line for line in plan.splitlines() if " on reservations" in line]
        assert all("using reservations_order_status on reservations" in line for line in held), plan


def test_an_order_is_read_with_its_reservations_by_order_not_by_status(tmp_path: Path) -> None:
    """SQLite, without statistics, took the reservations of an order read (`HELD_ORDER`, and now
    `STATE_ORDER`, before every pay, fulfil, cancel and update) through the index on (status,
    expires_at): every active reservation of every workspace, per read. They are now found by order
    and status together."""
    path = tmp_path / "plans.db"
    asyncio.run(migrate(f"sqlite:///{path}"))
    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            "INSERT INTO reservations (id, workspace_id, mode, order_id, sku, location, quantity, status,"
            " expires_at, created_at, updated_at) VALUES (?, 'ws_1', 'test', ?, 'SKU-1', 'default', 1, 'active',"
            " 9000000000000000, 1, 1)",
            [(f"rsv_{n}", f"ord_{n}") for n in range(2_000)],
        )
        for sql, args in (
            (repository.HELD_ORDER["sqlite"].one, ("ord_7",)),
            (repository.STATE_ORDER["sqlite"].one, ("ord_7",)),
            (repository._GET_ORDER["sqlite", True], ("ord_7", "ws_1", "test")),
        ):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sqlite_sql(sql), args)]
            searches = [step for step in plan if "reservations" in step]
            assert searches == [
                "SEARCH reservations USING INDEX reservations_order_status (order_id=? AND status=?)"
            ], plan
    finally:
        conn.close()


class _Planning:
    """A SQLite transaction that records each statement's query plan (`EXPLAIN QUERY PLAN` with the
    statement's own arguments) and returns no rows: the project's code builds the statements."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.plans: list[list[str]] = []

    def _explain(self, sql: str, args: tuple[Any, ...]) -> None:
        self.plans.append([row[3] for row in self.conn.execute("EXPLAIN QUERY PLAN " + sqlite_sql(sql), args)])

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self._explain(sql, args)
        return []

    async def fetchrow(self, sql: str, *args: Any) -> None:
        self._explain(sql, args)

    async def fetchval(self, sql: str, *args: Any) -> int:
        self._explain(sql, args)
        return 0

    async def execute(self, sql: str, *args: Any) -> str:
        self._explain(sql, args)
        return ""


def _skewed(tmp_path: Path) -> sqlite3.Connection:
    """A migrated SQLite database (no statistics) with one busy workspace: 2,000 of each row, every
    one of them on whatever index would be walked instead of the one meant."""
    path = tmp_path / "skewed.db"
    asyncio.run(migrate(f"sqlite:///{path}"))
    conn = sqlite3.connect(path)
    rows = range(2_000)
    conn.executemany(
        "INSERT INTO orders (id, workspace_id, mode, order_number, status, currency, customer_id, customer_email,"
        " subtotal, tax, shipping, total, created_at, updated_at)"
        " VALUES (?, 'ws_1', 'test', ?, 'pending', 'USD', ?, ?, 100, 0, 0, 100, ?, ?)",
        [(f"ord_{n}", n, f"cus_{n % 10}", f"buyer{n % 10}@example.com", n, n) for n in rows],
    )
    conn.executemany(
        "INSERT INTO reservations (id, workspace_id, mode, order_id, sku, location, quantity, status, expires_at,"
        " created_at, updated_at) VALUES (?, 'ws_1', 'test', ?, 'SKU-1', 'default', 1, 'active', ?, 1, 1)",
        [(f"rsv_{n}", f"ord_{n}", n) for n in rows],
    )
    conn.executemany(
        "INSERT INTO returns (id, workspace_id, mode, order_id, status, created_at, updated_at)"
        " VALUES (?, 'ws_1', 'test', ?, 'requested', ?, ?)",
        [(f"ret_{n}", f"ord_{n}", n, n) for n in rows],
    )
    conn.executemany(
        "INSERT INTO events (id, workspace_id, mode, type, object_type, object_id, data, created_at)"
        " VALUES (?, 'ws_1', 'test', 'order.created', 'order', ?, '{}', ?)",
        [(f"evt_{n}", f"ord_{n}", n) for n in rows],
    )
    conn.executemany(
        "INSERT INTO inventory_movements (workspace_id, mode, sku, location, kind, on_hand_delta, reserved_delta,"
        " reference, created_at) VALUES ('ws_1', 'test', 'SKU-1', 'default', 'reserve', 0, 1, ?, ?)",
        [(f"ord_{n}", n) for n in rows],
    )
    conn.executemany(
        "INSERT INTO webhook_deliveries (id, workspace_id, mode, endpoint_id, event_id, event_type, status,"
        " created_at, updated_at) VALUES (?, 'ws_1', 'test', 'we_1', ?, 'order.created', 'succeeded', ?, ?)",
        [(f"wdl_{n}", f"evt_{n}", n, n) for n in rows],
    )
    conn.commit()
    return conn


PRINCIPAL = Principal("key_1", "ws_1", "test", "secret", frozenset())


def _planned(tmp_path: Path, *calls: Callable[[Any], Coroutine[Any, Any, object]]) -> list[list[str]]:
    """Per call, the plan steps of all its statements, on a fresh `_skewed` database."""
    conn = _skewed(tmp_path)
    try:
        found = []
        for call in calls:
            tx = _Planning(conn)
            asyncio.run(call(tx))
            found.append([step for plan in tx.plans for step in plan])
        return found
    finally:
        conn.close()


def _page(spec: ListSpec, params: list[tuple[str, str]]) -> Callable[[Any], Coroutine[Any, Any, object]]:
    """A list page as `GET` builds it (first pages also count their rows, in the same statement)."""
    query = parse_list_query(QueryParams(params), spec)
    return lambda tx: fetch_page(tx, spec, query, PRINCIPAL, "id")


def _searches(plan: list[str], *tables: str) -> list[str]:
    """The steps that read `tables` (by name or alias)."""
    return [step for step in plan if step.split(" ")[0] in ("SEARCH", "SCAN") and step.split(" ")[1] in tables]


def test_an_orders_expired_reservations_are_found_by_order_not_by_expiry(tmp_path: Path) -> None:
    """Releasing an order's expired reservations (`release_order(expired_only=True)`) adds a range on
    expires_at: SQLite took it on `reservations_expiry (status, expires_at)`, every active reservation
    of every workspace (21 ms with 40,000). The order's index now carries expires_at as well."""
    plans = _planned(tmp_path, lambda tx: stock.release_order(tx, PRINCIPAL, "ord_7", 10**9, expired_only=True))
    assert [_searches(plan, "reservations") for plan in plans] == [
        [
            "SEARCH reservations USING INDEX reservations_order_status"
            " (order_id=? AND status=? AND expires_at>? AND expires_at<?)"
        ]
    ]


def test_an_orders_returns_are_found_by_order_not_by_status(tmp_path: Path) -> None:
    """What an order's returns already count (checked before each new return and refund), and
    `GET /v1/returns?order_id=`: SQLite walked the workspace's returns on `returns_status` or
    `returns_created` (4-7 ms with 10,000), not the index on order_id alone."""
    plans = _planned(
        tmp_path,
        lambda tx: returns_repository.returned_quantities(tx, PRINCIPAL, "ord_7"),
        lambda tx: returns_repository.allocated(tx, PRINCIPAL, "ord_7"),
        _page(RETURN_LIST, [("order_id", "ord_7")]),
    )
    assert len(plans) == 3
    for plan in plans:
        searches = _searches(plan, "returns", "r")
        assert searches, plan
        assert all("INDEX returns_order (workspace_id=? AND mode=? AND order_id=?)" in step for step in searches), plan
        assert not any("TEMP B-TREE FOR ORDER BY" in step for step in plan), plan


def test_the_events_of_several_returns_are_found_by_object_not_through_the_feed(tmp_path: Path) -> None:
    """A page of returns reads their events in one statement ordered by seq: SQLite walked the whole
    workspace's feed (`events_feed (workspace_id, mode, seq)`) to skip the sort (60 ms with 100,000
    events). Ordered by `+seq`, the few rows come by object and are sorted."""
    plans = _planned(tmp_path, lambda tx: returns_repository.events_of(tx, PRINCIPAL, ["ret_1", "ret_2"]))
    assert [_searches(plan, "events") for plan in plans] == [
        ["SEARCH events USING INDEX events_object (object_id=? AND workspace_id=? AND mode=?)"]
    ]


def test_the_restocks_of_several_returns_are_found_by_reference_not_by_sku(tmp_path: Path) -> None:
    """A page of returns reads their restock movements in one statement: with the index on reference
    alone, SQLite walked the workspace's movements on `inventory_movements_sku` (51 ms with 50,000)."""
    plans = _planned(tmp_path, lambda tx: returns_repository.restocks_of(tx, PRINCIPAL, ["ret_1", "ret_2"]))
    assert [_searches(plan, "inventory_movements") for plan in plans] == [
        [
            "SEARCH inventory_movements USING INDEX inventory_movements_reference"
            " (reference=? AND workspace_id=? AND mode=?)"
        ]
    ]


def test_orders_by_customer_email_are_found_by_email_not_by_date(tmp_path: Path) -> None:
    """`GET /v1/orders?customer_email=` (newest first) walked every order of the workspace on
    `orders_created` to skip sorting one customer's (20 ms with 20,000). Sorting by email still
    walks the email index, pages after a cursor seek into it."""
    after = encode_cursor(
        {
            "k": ["buyer1@example.com", "ord_7"],
            "s": "customer_email:asc,id:asc",
            "d": "next",
            "t": 2000,
            "x": True,
            "p": 2,
        }
    )
    by_email, sorted_first, sorted_next = _planned(
        tmp_path,
        _page(ORDER_LIST, [("customer_email", "buyer1@example.com")]),
        _page(ORDER_LIST, [("sort", "customer_email")]),
        _page(ORDER_LIST, [("sort", "customer_email"), ("cursor", after)]),
    )
    searches = _searches(by_email, "orders")
    by_email_index = "INDEX orders_email (workspace_id=? AND mode=? AND customer_email=?)"
    assert searches and all(by_email_index in step for step in searches), by_email
    assert not any("TEMP B-TREE" in step for step in by_email), by_email
    assert "INDEX orders_email (workspace_id=? AND mode=?)" in _searches(sorted_first, "orders")[0], sorted_first
    [seek] = _searches(sorted_next, "orders")
    assert "INDEX orders_email (workspace_id=? AND mode=? AND customer_email>?)" in seek, sorted_next
    for plan in (sorted_first, sorted_next):  # the email order comes from the index
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_an_endpoints_deliveries_by_status_or_event_are_found_by_them(tmp_path: Path) -> None:
    """Failing an endpoint's queue (`cancel_pending`, when it is disabled) and its deliveries listed by
    status or event walked every delivery of the endpoint on `webhook_deliveries_endpoint` (18-31 ms
    with 10,000)."""
    endpoint = SimpleNamespace(id="we_1", workspace_id="ws_1", mode="test")
    cancel, by_status, by_event, unfiltered = _planned(
        tmp_path,
        lambda tx: webhooks_repository.cancel_pending(tx, endpoint, 10**9, "disabled"),
        _page(DELIVERY_LIST, [("status", "pending"), ("endpoint_id", "we_1")]),  # as the route adds it
        _page(DELIVERY_LIST, [("event_id", "evt_7"), ("endpoint_id", "we_1")]),
        _page(DELIVERY_LIST, [("endpoint_id", "we_1")]),
    )
    status = "INDEX webhook_deliveries_status (workspace_id=? AND mode=? AND endpoint_id=? AND status=?)"
    event = "INDEX webhook_deliveries_event (workspace_id=? AND mode=? AND endpoint_id=? AND event_id=?)"
    for plan, index in ((cancel, status), (by_status, status), (by_event, event)):
        searches = _searches(plan, "webhook_deliveries")
        assert searches and all(index in step for step in searches), plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
    endpoint_index = "INDEX webhook_deliveries_endpoint (workspace_id=? AND mode=? AND endpoint_id=?)"
    assert endpoint_index in _searches(unfiltered, "webhook_deliveries")[0], unfiltered


def test_a_page_narrowed_to_one_customer_is_read_by_customer_whatever_its_sort(tmp_path: Path) -> None:
    """`customer_id=…&sort=total` walked the workspace's orders on `orders_total` to skip sorting
    one customer's (40 ms with 40,000). An equality on a selective field now takes the sort's index
    out of SQLite's choice; a page of a common status still walks it (sorting that is dearer)."""
    after = encode_cursor({"k": [100, "ord_7"], "s": "total:desc,id:desc", "d": "next", "t": 200, "x": True, "p": 2})
    first, following, by_status, by_email = _planned(
        tmp_path,
        _page(ORDER_LIST, [("customer_id", "cus_1"), ("sort", "total"), ("order", "desc")]),
        _page(ORDER_LIST, [("customer_id", "cus_1"), ("sort", "total"), ("order", "desc"), ("cursor", after)]),
        _page(ORDER_LIST, [("status", "pending"), ("sort", "total")]),
        _page(ORDER_LIST, [("customer_email", "buyer1@example.com"), ("sort", "updated_at")]),
    )
    for plan in (first, following):
        assert "INDEX orders_customer (workspace_id=? AND mode=? AND customer_id=?)" in _searches(plan, "orders")[0], (
            plan
        )
        assert "USE TEMP B-TREE FOR ORDER BY" in plan, plan
    assert "INDEX orders_total" in _searches(by_status, "orders")[0], by_status
    assert "INDEX orders_email (workspace_id=? AND mode=? AND customer_email=?)" in _searches(by_email, "orders")[0]
