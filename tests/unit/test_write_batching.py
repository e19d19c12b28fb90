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
from stateset_server.storage.database import RequiredRowMissing, Stale
from stateset_server.storage.migrate import migrate
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
        if name == "transaction":  # BEGIN (or, inside one, SAVEPOINT) is sent when it starts
            self.sent.append("TRANSACTION")
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
        await migrate(url)  # the server's own schema too: its SQL function for `require`
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
    """`body` as a write transaction, run as `PostgresDatabase.write` runs one."""

    async def run() -> Any:
        conn = await asyncpg.connect(url)
        try:
            counting = _Counting(conn)
            tx = PostgresTx(counting, buffered=True)  # type: ignore[arg-type]
            try:
                result = await body(tx, counting)
                await tx.finish()
            except BaseException:
                await tx.rollback()
                raise
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
    assert (hits, sent) == (1, 2)  # BEGIN, then one statement; the children's foreign key was checked
    # after the parent was in
    assert _rows(pg_url, "SELECT id, parent_id, label FROM child ORDER BY id") == [("c1", "p1", "a"), ("c2", "p1", "b")]


def test_a_table_written_twice_or_read_gets_what_was_held_back_first(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        await tx.execute("UPDATE parent SET n = n + 1 WHERE id = $1", "p1")  # must see the row: sent apart
        await tx.execute("UPDATE parent SET n = n + 1 WHERE id = $1", "p1")  # and not race the first update
        seen = await tx.fetchval("SELECT n FROM parent WHERE id = $1", "p1")
        return seen, len(counting.sent)

    seen, sent = _in_transaction(pg_url, body)
    assert seen == 2 and sent == 5  # BEGIN, the insert, each update, the read
    assert _rows(pg_url, "SELECT id, n FROM parent") == [("p1", 2)]


def test_a_select_of_other_tables_does_not_send_what_is_held_back(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "t")
        children = await tx.fetch("SELECT id FROM child")  # runs ahead: nothing held back writes child
        ahead = len(counting.sent)
        parents = await tx.fetchval("SELECT count(*) FROM parent")  # must see p1: sent first
        return children, ahead, parents, len(counting.sent)

    assert _in_transaction(pg_url, body) == ([], 2, 1, 4)  # after BEGIN: ahead, then the writes, the count


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


def test_a_write_that_only_writes_is_one_statement_without_begin_or_commit(pg_url: str) -> None:
    async def body(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        await tx.executemany("INSERT INTO child (id, parent_id) VALUES ($1, $2)", [("c1", "p1"), ("c2", "p1")])
        kept = await tx.require(
            "INSERT INTO tally (name, hits) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING RETURNING 1", "t"
        )
        return kept, counting

    kept, counting = _in_transaction(pg_url, body)
    assert kept is True
    assert len(counting.sent) == 1 and counting.sent[0].startswith("WITH ")  # no TRANSACTION: no BEGIN
    assert _rows(pg_url, "SELECT id FROM child ORDER BY id") == [("c1",), ("c2",)]
    assert _rows(pg_url, "SELECT name, hits FROM tally") == [("t", 1)]


def test_a_required_row_that_is_not_returned_keeps_nothing_of_the_write(pg_url: str) -> None:
    taken = "INSERT INTO tally (name, hits) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING RETURNING 1"

    async def first(tx: PostgresTx, _counting: _Counting) -> bool:
        return await tx.require(taken, "t")

    assert _in_transaction(pg_url, first) is True

    async def sent_alone(tx: PostgresTx, _counting: _Counting) -> bool:
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p1")
        return await tx.require(taken, "t")  # held back: the answer comes with the commit

    with pytest.raises(RequiredRowMissing):
        _in_transaction(pg_url, sent_alone)

    async def after_a_read(tx: PostgresTx, _counting: _Counting) -> bool:
        await tx.fetch("SELECT id FROM child")  # begins the transaction: `require` answers at once
        await tx.execute("INSERT INTO parent (id) VALUES ($1)", "p2")
        if not await tx.require(taken, "t"):
            raise LookupError("taken")  # as the idempotency layer does: the transaction rolls back
        return True

    with pytest.raises(LookupError):
        _in_transaction(pg_url, after_a_read)
    assert _rows(pg_url, "SELECT id FROM parent") == []


def test_nothing_may_follow_require(pg_url: str) -> None:
    async def body(tx: PostgresTx, _counting: _Counting) -> None:
        await tx.require("INSERT INTO tally (name, hits) VALUES ($1, 1) RETURNING 1", "t")
        await tx.fetch("SELECT id FROM parent")

    with pytest.raises(RuntimeError, match="last statement"):
        _in_transaction(pg_url, body)
    assert _rows(pg_url, "SELECT name FROM tally") == []


_GUARDED = "UPDATE parent SET n = $2 WHERE id = $1 AND n = $3 RETURNING id"  # a version-checked update


def _seed(url: str) -> None:
    async def body(tx: PostgresTx, _counting: _Counting) -> None:
        await tx.execute("INSERT INTO parent (id, n) VALUES ($1, 1)", "p1")

    _in_transaction(url, body)


def test_a_guarded_write_is_one_statement_and_keeps_nothing_when_its_row_moved(pg_url: str) -> None:
    _seed(pg_url)

    async def optimistic(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.guard(_GUARDED, "p1", 2, 1)
        await tx.execute("INSERT INTO child (id, parent_id) VALUES ($1, $2)", "c1", "p1")
        kept = await tx.require("INSERT INTO tally (name, hits) VALUES ($1, 1) RETURNING 1", "t")
        return kept, counting

    kept, counting = _in_transaction(pg_url, optimistic)
    assert kept is True and len(counting.sent) == 1 and "stateset_still_current" in counting.sent[0]
    assert _rows(pg_url, "SELECT id, n FROM parent") == [("p1", 2)]

    async def stale(tx: PostgresTx, _counting: _Counting) -> None:
        await tx.guard(_GUARDED, "p1", 3, 1)  # decided against n = 1, which is 2 now
        await tx.execute("INSERT INTO child (id, parent_id) VALUES ($1, $2)", "c2", "p1")
        await tx.require("INSERT INTO tally (name, hits) VALUES ($1, 1) RETURNING 1", "u")

    with pytest.raises(Stale):
        _in_transaction(pg_url, stale)
    assert _rows(pg_url, "SELECT id, n FROM parent") == [("p1", 2)]
    assert _rows(pg_url, "SELECT id FROM child") == [("c1",)]
    assert _rows(pg_url, "SELECT name FROM tally") == [("t",)]


def test_a_guard_is_checked_before_any_answer_that_follows_it(pg_url: str) -> None:
    _seed(pg_url)

    async def read_after(tx: PostgresTx, counting: _Counting) -> Any:
        await tx.guard(_GUARDED, "p1", 5, 9)  # n is 1: stale
        await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "t")
        # An answer that could have gone out with the held-back parts goes apart, after their check:
        await tx.fetchval("INSERT INTO child (id, parent_id) VALUES ($1, $2) RETURNING id", "c1", "p1")

    with pytest.raises(Stale):
        _in_transaction(pg_url, read_after)

    async def in_savepoint(tx: PostgresTx, _counting: _Counting) -> str:
        try:
            async with tx.savepoint():
                await tx.guard(_GUARDED, "p1", 5, 9)
                await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "s")
        except Stale:
            pass
        await tx.execute("INSERT INTO child (id, parent_id) VALUES ($1, $2)", "c3", "p1")
        return "kept the rest"

    assert _in_transaction(pg_url, in_savepoint) == "kept the rest"
    assert _rows(pg_url, "SELECT id, n FROM parent") == [("p1", 1)]
    assert _rows(pg_url, "SELECT id FROM child") == [("c3",)]
    assert _rows(pg_url, "SELECT name FROM tally") == []


def test_the_database_runs_a_function_again_when_its_guard_failed_at_the_end(pg_url: str) -> None:
    _seed(pg_url)
    calls: list[int] = []

    async def scenario() -> str:
        db = await PostgresDatabase.open(pg_url)
        try:

            async def unit(tx: PostgresTx) -> str:
                calls.append(1)
                if len(calls) == 1:
                    await tx.guard(_GUARDED, "p1", 7, 0)  # stale: found only when sent at the end
                    await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "first")
                    return "first"
                await tx.execute("INSERT INTO tally (name, hits) VALUES ($1, 1)", "again")
                return "again"

            return await db.write(unit)
        finally:
            await db.close()

    assert asyncio.run(scenario()) == "again" and len(calls) == 2
    assert _rows(pg_url, "SELECT name FROM tally") == [("again",)]
