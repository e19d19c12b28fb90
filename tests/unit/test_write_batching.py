"""PostgreSQL write transactions hold back INSERTs and UPDATEs and send them with the next statement
that must run (storage/batching.py): fewer round trips, the same results, the same errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stateset_server.storage.batching import PendingWrites, rows_statement, tables_read, target_table
from stateset_server.storage.postgres import PostgresDatabase, PostgresTx
from tests.conftest import dispose_database_url, make_database_url

_SCHEMA = """
CREATE TABLE parent (id TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0);
CREATE TABLE child (id TEXT PRIMARY KEY, parent_id TEXT NOT NULL REFERENCES parent (id), label TEXT);
CREATE TABLE tally (name TEXT PRIMARY KEY, hits INTEGER NOT NULL);
"""


def test_only_plain_inserts_and_updates_are_held_back() -> None:
    assert target_table("INSERT INTO child (id, parent_id) VALUES ($1, $2)") == "child"
    assert (
        target_table("UPDATE parent SET n = n + 1 WHERE id = $1 AND (a, b) IS NOT DISTINCT FROM ($2, $3)") == "parent"
    )
    assert target_table("insert into Tally (name, hits) values ($1, 1) on conflict (name) do update set hits = 2") == (
        "tally"
    )
    # They read other tables, whose rows held-back statements could have changed unseen:
    assert target_table("INSERT INTO child (id, parent_id) SELECT $1, id FROM parent") is None
    assert target_table("UPDATE parent SET n = c.n FROM child c WHERE c.parent_id = parent.id") is None
    assert target_table("UPDATE parent SET n = (SELECT count(*) FROM child) WHERE id = $1") is None
    assert target_table("WITH x AS (SELECT 1) INSERT INTO parent (id) VALUES ($1)") is None
    # Not writes it may hold back at all:
    assert target_table("DELETE FROM parent WHERE id = $1") is None
    assert target_table("SELECT pg_notify($1, '')") is None


def test_the_tables_a_select_reads_are_plain_or_unknown() -> None:
    sql = "SELECT p.id FROM parent p JOIN child c ON c.parent_id = p.id WHERE (p.id, p.n) IS NOT DISTINCT FROM ($1, $2)"
    assert tables_read(sql) == {"parent", "child"}
    assert tables_read("SELECT pg_notify($1, '')") == frozenset()
    assert tables_read("SELECT n FROM (SELECT n FROM parent) AS x") is None  # a subquery in FROM
    assert tables_read("WITH x AS (SELECT 1) SELECT * FROM x") is None
    assert tables_read("UPDATE parent SET n = 1 RETURNING n") is None


def test_a_many_rows_insert_becomes_one_statement_only_in_its_plain_shape() -> None:
    sql = "INSERT INTO child (id, parent_id, label) VALUES ($1, $2, $3)"
    assert rows_statement(sql, 3, 2) == "INSERT INTO child (id, parent_id, label) VALUES ($1, $2, $3), ($4, $5, $6)"
    assert rows_statement("INSERT INTO tally (name, hits) VALUES ($1, CAST($2 AS INTEGER))", 2, 2) == (
        "INSERT INTO tally (name, hits) VALUES ($1, CAST($2 AS INTEGER)), ($3, CAST($4 AS INTEGER))"
    )
    # Two rows with one key in one ON CONFLICT statement is an error row by row is not: left alone.
    assert rows_statement("INSERT INTO tally (name, hits) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", 2, 2) is None
    conflict = "INSERT INTO tally (name, hits) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET hits = abs($2)"
    assert rows_statement(conflict, 2, 2) is None
    assert rows_statement(sql, 4, 2) is None  # the rows are not as wide as the statement


def test_held_back_statements_become_ctes_numbered_in_order() -> None:
    pending = PendingWrites()
    pending.add("parent", "INSERT INTO parent (id) VALUES ($1)", ["p"])
    pending.add("child", "INSERT INTO child (id, parent_id) VALUES ($1, $2)", ["c", "p"])
    assert not pending.fits("child", 1) and pending.fits("tally", 2)
    sql, args = pending.combined("UPDATE tally SET hits = $2 WHERE name = $1 RETURNING hits", ["t", 5])
    assert sql == (
        "WITH w0 AS (INSERT INTO parent (id) VALUES ($1)), w1 AS (INSERT INTO child (id, parent_id) VALUES ($2, $3))"
        " UPDATE tally SET hits = $5 WHERE name = $4 RETURNING hits"
    )
    assert args == ["p", "c", "p", "t", 5]
    assert not pending and not pending.tables


class _Counting:
    """An asyncpg connection that counts the statements sent to the server."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.conn, name)
        if name in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):

            async def counted(sql: str, *args: Any) -> Any:
                self.sent.append(sql)
                return await attr(sql, *args)

            return counted
        return attr


@pytest.fixture
def pg_url(tmp_path: Path) -> Any:
    url = make_database_url("postgres", str(tmp_path))

    async def schema() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(_SCHEMA)
        finally:
            await conn.close()

    asyncio.run(schema())
    try:
        yield url
    finally:
        dispose_database_url(url)


def _in_transaction(url: str, body: Callable[[PostgresTx, _Counting], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(url)
        try:
            counting = _Counting(conn)
            async with conn.transaction():
                tx = PostgresTx(counting, buffered=True)  # type: ignore[arg-type]
                result = await body(tx, counting)
                await tx.flush()
            return result
        finally:
            await conn.close()

    return asyncio.run(run())


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_writes_to_different_tables_go_in_one_round_trip_with_the_next_answer(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        await tx.executemany(
            "INSERT INTO child (id, parent_id, label) VALUES ($1, $2, $3)", [("c1", "p1", "a"), ("c2", "p1", "b")]
        )
        assert counting.sent == []  # nothing sent yet
        hits = await tx.fetchval(
            "INSERT INTO tally (name, hits) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET hits = tally.hits + 1"
            " RETURNING hits",
            "t",
        )
        return hits, len(counting.sent)

    hits, sent = _in_transaction(pg_url, body)
    assert (hits, sent) == (1, 1)  # the child rows' foreign key was checked after the parent was in
    assert _rows(pg_url, "SELECT id, parent_id, label FROM child ORDER BY id") == [("c1", "p1", "a"), ("c2", "p1", "b")]


def test_a_table_written_twice_or_read_gets_what_was_held_back_first(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        await tx.execute("UPDATE parent SET n = n + 1 WHERE id = $1", "p1")  # must see the row: sent apart
        await tx.execute("UPDATE parent SET n = n + 1 WHERE id = $1", "p1")  # and not race the first update
        seen = await tx.fetchval("SELECT n FROM parent WHERE id = $1", "p1")
        return seen, len(counting.sent)

    seen, sent = _in_transaction(pg_url, body)
    assert seen == 2 and sent == 4
    assert _rows(pg_url, "SELECT id, n FROM parent") == [("p1", 2)]


def test_a_select_of_other_tables_does_not_send_what_is_held_back(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "t")
        children = await tx.fetch("SELECT id FROM child")  # runs ahead: nothing held back writes child
        ahead = len(counting.sent)
        parents = await tx.fetchval("SELECT count(*) FROM parent")  # must see p1: sent first
        return children, ahead, parents, len(counting.sent)

    assert _in_transaction(pg_url, body) == ([], 1, 1, 3)


def test_an_error_in_a_held_back_statement_fails_the_write_and_nothing_commits(pg_url: str) -> None:
    async def scenario() -> None:
        db = await PostgresDatabase.open(pg_url)
        try:

            async def unit(tx: PostgresTx) -> str:
                await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
                await tx.execute("INSERT INTO child (id, parent_id) VALUES ($1, $2)", "c1", "missing")
                return "answered"

            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await db.write(unit)
        finally:
            await db.close()

    asyncio.run(scenario())
    assert _rows(pg_url, "SELECT id FROM parent") == []


def test_a_savepoint_raises_its_own_held_back_errors_and_keeps_what_came_before(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        failed = None
        try:
            async with tx.savepoint():
                await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "t")
                await tx.execute("INSERT INTO child (id, parent_id) VALUES ($1, $2)", "c1", "missing")
        except asyncpg.ForeignKeyViolationError as exc:
            failed = exc
        await tx.execute("INSERT INTO child (id, parent_id) VALUES ($1, $2)", "c2", "p1")
        return failed

    assert isinstance(_in_transaction(pg_url, body), asyncpg.ForeignKeyViolationError)
    assert _rows(pg_url, "SELECT id FROM parent") == [("p1",)]
    assert _rows(pg_url, "SELECT id FROM child") == [("c2",)]
    assert _rows(pg_url, "SELECT name FROM tally") == []  # rolled back with its savepoint
