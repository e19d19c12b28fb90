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
from pathlib import Path
from typing import Any

import asyncpg

from stateset_server.core.errors import ApiError
from stateset_server.orders import repository
from stateset_server.orders.service import order_currency
from stateset_server.storage.migrate import migrate
from stateset_server.storage.sqlite import _sql as sqlite_sql
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
    assert len(plans) == 7
    for plan in plans:
        scans = [line.strip().removeprefix("->").strip() for line in plan.splitlines() if " on orders" in line]
        if scans[0].startswith("Bitmap Heap Scan on orders"):  # many ids: their rows through the key's bitmap
            assert len(scans) == 2 and scans[1].startswith("Bitmap Index Scan on orders_pkey"), plan
        else:
            assert len(scans) == 1 and scans[0].startswith("Index Scan using orders_pkey on orders"), plan
        held = [line for line in plan.splitlines() if " on reservations" in line]
        assert all("using reservations_order_status on reservations" in line for line in held), plan


def test_an_order_is_read_with_its_reservations_by_order_not_by_status(tmp_path: Path) -> None:
    """SQLite, without statistics, took the reservations of an order read (`HELD_ORDER`, before every
    pay, fulfil, cancel and update) through the index on (status, expires_at): every active
    reservation of every workspace, per read. They are now found by order and status together."""
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
            (repository._GET_ORDER["sqlite", True], ("ord_7", "ws_1", "test")),
        ):
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sqlite_sql(sql), args)]
            searches = [step for step in plan if "reservations" in step]
            assert searches == [
                "SEARCH reservations USING INDEX reservations_order_status (order_id=? AND status=?)"
            ], plan
    finally:
        conn.close()
