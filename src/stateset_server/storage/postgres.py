"""PostgreSQL engine on asyncpg: a connection pool, one transaction per unit of work.

Row locks are explicit (`SELECT … FOR UPDATE`) in the transaction functions; the same SQL runs on
SQLite, whose single writer makes the lock clause unnecessary (it is stripped there).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import asyncpg

from stateset_server.storage.database import Row, StorageUnavailable

__all__ = ["PostgresDatabase", "PostgresTx"]

T = TypeVar("T")
# Failures of the database itself (down, restarting, dropped, connection lost), as opposed to errors
# in a statement: these become 503 SERVICE_UNAVAILABLE.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


async def _reset(conn: asyncpg.Connection) -> None:
    """What a connection needs before going back to the pool. Nothing here sets session state on a
    pooled connection (no LISTEN, SET, advisory locks or cursors outside transactions), so asyncpg's
    default reset — a round trip on every release — is only a safety net for an unfinished
    transaction."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresTx:
    dialect = "postgres"

    access_epoch = None

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.committed: list[Callable[[], None]] = []

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.committed.append(fn)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._conn.fetchrow(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, list(rows))

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        return self._conn.transaction()  # nested inside a transaction, asyncpg makes it a SAVEPOINT


class PostgresDatabase:
    dialect = "postgres"

    # No cross-host marker yet: on PostgreSQL every request reads its key from the database.
    access_epoch = None

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.url = url
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        size = int(os.environ.get("STATESET_PG_POOL_SIZE", "20"))
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=size, command_timeout=60, reset=_reset)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(url, pool)

    async def write(self, fn: Callable[[PostgresTx], Awaitable[T]]) -> T:
        tx = None
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                tx = PostgresTx(conn)
                return await fn(tx)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc)) from exc
        finally:
            for callback in tx.committed if tx is not None else ():
                callback()

    async def read(self, fn: Callable[[PostgresTx], Awaitable[T]], *, snapshot: bool = True) -> T:
        try:
            async with self._pool.acquire() as conn:
                if not snapshot:
                    return await fn(PostgresTx(conn))
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    return await fn(PostgresTx(conn))
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._pool.close()
