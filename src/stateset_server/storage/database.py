"""The storage protocols and the factory that picks an engine from a database URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = [
    "IN_WORKSPACE",
    "NEXT_NUMBER",
    "WRITE_ATTEMPTS",
    "Database",
    "Lookup",
    "RequiredRowMissing",
    "Row",
    "Stale",
    "StorageUnavailable",
    "Tx",
    "is_unique_violation",
    "open_database",
    "sqlite_path",
    "still_stale",
    "with_database",
]

T = TypeVar("T")
# Both sqlite3.Row and asyncpg.Record index by column name and by position.
Row = Any


# A lookup by id (`$1`) stays in the caller's workspace (`$2`) and mode (`$3`) with this clause, not
# `workspace_id = $2 AND mode = $3`: no index can use IS NOT DISTINCT FROM, so the primary key finds
# the row. With `=`, a PostgreSQL table without statistics yet (a new database under load) was planned
# as a walk of an index that leads with workspace and mode and ends with `id`: every row of the
# workspace per lookup (tests/unit/test_query_plans.py). The columns are NOT NULL, so it means `=`.
IN_WORKSPACE = "(workspace_id, mode) IS NOT DISTINCT FROM ($2, $3)"

# Take `$5` numbers from a counter at once; the last one taken is returned.
NEXT_NUMBER = (
    "INSERT INTO counters (workspace_id, mode, name, value)"
    " VALUES ($1, $2, $3, CAST($4 AS BIGINT) + CAST($5 AS BIGINT) - 1) ON CONFLICT (workspace_id, mode, name)"
    " DO UPDATE SET value = counters.value + CAST($5 AS BIGINT) RETURNING value"
)


class StorageUnavailable(Exception):
    """The database could not be reached or is locked beyond the busy timeout."""


class RequiredRowMissing(Exception):
    """A write transaction's `Tx.require` statement returned no row after all: nothing it wrote was
    kept (PostgreSQL sends it at the end, with the work, as one statement)."""


class Stale(Exception):
    """A `Tx.guard` statement returned no row: the work was decided against a state that has changed
    since it was read, and nothing of it is kept. The caller decides it again; or, raised out of a
    transaction function (on PostgreSQL the check may come only when the work is sent at the end;
    on SQLite after other writes of the function), the database undoes the function's writes and
    runs it again (it must not guard the same way twice)."""


# Runs in all of a transaction function that raised Stale (or, on PostgreSQL, hit a deadlock).
WRITE_ATTEMPTS = 4


def still_stale() -> StorageUnavailable:
    """What a write gets whose function was still Stale on its last attempt."""
    return StorageUnavailable("the write kept finding its rows changed")


class Tx(Protocol):
    """One open transaction. SQL uses `$1, $2, …` placeholders in both dialects."""

    dialect: str
    epochs: Any  # the database's cache markers (storage/epoch.py), or None
    invalidated: set[str]  # the caches this transaction has invalidated so far

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def require(self, sql: str, *args: Any) -> bool:
        """The transaction's last statement, an INSERT or UPDATE … RETURNING: False when it returned
        no row, and the caller must then fail the transaction. On PostgreSQL it may instead be sent
        with the work after the function returns; no row then fails the write with
        RequiredRowMissing, and nothing is kept."""
        ...

    async def guard(self, sql: str, *args: Any) -> None:
        """An INSERT or UPDATE … RETURNING that must return a row for the work to stand (a
        version-checked update of a row read outside the transaction): Stale when it does not. On
        PostgreSQL it may be held back and checked when sent, even after the function returned."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def next_number(self, workspace_id: str, mode: str, name: str, first: int) -> int:
        """The next value of a per-workspace counter (`first` for the first one).

        SQLite's single writer takes it inside this transaction: gapless, undone with a failed one.
        PostgreSQL takes it outside, committed at once, like a sequence: holding the counter's row
        lock until this transaction commits would queue every create of a workspace behind the one
        before it. A number taken by a transaction that then fails is not handed out again."""
        ...

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: an exception inside undoes only what was written inside."""
        ...

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn` once the transaction has ended (committed or not: callers only invalidate caches,
        and invalidating for nothing is harmless)."""
        ...

    async def invalidate(self, name: str) -> None:
        """Once this transaction commits, every process's cache `name` is stale (storage/epoch.py)."""
        ...


@dataclass(frozen=True)
class Lookup:
    """A read of one row by its key, in two forms: `one` takes the key as `$1`; `many` takes an
    array of keys as `$1` and returns the key as its first column. PostgreSQL sends the look-ups that
    come in while others are on their way as one `many` statement (postgres.py: `_Lookups`)."""

    one: str
    many: str


class Database(Protocol):
    dialect: str
    url: str

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """Run `fn` in one transaction; returns once the transaction is durably committed."""
        ...

    async def read(self, fn: Callable[[Tx], Awaitable[T]], *, snapshot: bool = True) -> T:
        """Run `fn` against one consistent snapshot. `snapshot=False` is for a single statement, which
        is consistent by itself: it runs without BEGIN/COMMIT (on PostgreSQL, two round trips fewer)."""
        ...

    async def lookup(self, query: Lookup, key: str) -> Row | None:
        """The row `query` finds for `key`, read as a single statement (no snapshot around it)."""
        ...

    async def flush(self) -> None:
        """Until every write committed so far is on disk. A read can show a committed write a moment
        before its writer is answered (SQLite flushes after COMMIT): a response built from what
        another request wrote, such as an idempotent replay, waits for this first."""
        ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...

    # The change markers of per-process caches (storage/epoch.py), or None: cache nothing.
    epochs: Any


def is_unique_violation(exc: BaseException) -> bool:
    """A write lost to a concurrent change (both engines): a unique constraint refused it, or, on
    PostgreSQL, a deadlock or serialization failure outlasted the engine's own retries."""
    import sqlite3

    import asyncpg

    if isinstance(exc, asyncpg.UniqueViolationError | asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
        return True
    return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(exc)


def sqlite_path(url: str) -> str:
    """`sqlite:///stateset.db` (relative), `sqlite:////var/lib/x.db` (absolute), or a bare path."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite://"):
        return url[len("sqlite://") :]
    return url


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


async def with_database(url: str, action: Callable[[Database], Awaitable[T]]) -> T:
    """Migrate, open, run `action`, close: for commands and tools that use the database briefly."""
    from stateset_server.storage.migrate import migrate

    await migrate(url)
    db = await open_database(url)
    try:
        return await action(db)
    finally:
        await db.close()


async def open_database(url: str) -> Database:
    if is_postgres(url):
        from stateset_server.storage.postgres import PostgresDatabase

        return await PostgresDatabase.open(url)
    from stateset_server.storage.sqlite import SQLiteDatabase

    return SQLiteDatabase.open(url)
