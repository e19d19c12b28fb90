"""PostgreSQL engine on asyncpg: a connection pool, one transaction per unit of work.

Row locks are explicit (`SELECT … FOR UPDATE`) in the transaction functions; the same SQL runs on
SQLite, whose single writer makes the lock clause unnecessary (it is stripped there).
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from stateset_server.storage.batching import MAX_ARGS, PendingWrites, rows_statement, tables_read, target_table
from stateset_server.storage.database import (
    NEXT_NUMBER,
    WRITE_ATTEMPTS,
    Lookup,
    RequiredRowMissing,
    Row,
    Stale,
    StorageUnavailable,
    still_stale,
)
from stateset_server.storage.epoch import NotifyEpochs, TxCacheHooks, channel

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


_ROW_MISSING = "SS001"  # stateset_require_row (migration 0010): a required row was not returned
_NOT_CURRENT = "SS002"  # stateset_still_current (migration 0011): a guarded statement matched no row


# A statement that runs longer than this is cancelled by the server. (asyncpg's own command_timeout
# would arm a timer on the event loop for every statement; the server's limit costs nothing.)
_SESSION = {"statement_timeout": "60000"}


class PostgresTx(TxCacheHooks):
    """`buffered` (write transactions): INSERTs and UPDATEs that return nothing are held back and
    sent with the next statement that must run (`batching.py`). BEGIN is sent only before the first
    statement that must run inside the transaction; when the transaction function has returned and
    nothing has been sent yet, what is held back goes as one statement without BEGIN and COMMIT
    (`finish`), which PostgreSQL applies atomically by itself: a create is then one round trip."""

    dialect = "postgres"

    def __init__(
        self,
        conn: asyncpg.Connection,
        counters: _Counters | None = None,
        epochs: NotifyEpochs | None = None,
        *,
        buffered: bool = False,
    ) -> None:
        super().__init__(epochs)
        self._conn = conn
        self._counters = counters
        self._pending = PendingWrites() if buffered else None
        self._xact: Any = None  # the open transaction block, once begun (write transactions only)
        self._required: str | None = None  # `require` held back: the CTE that must return a row
        self._guards: list[str] = []  # `guard`s held back: CTEs that must return a row, else Stale

    async def _begin(self) -> None:
        if self._required is not None:
            raise RuntimeError("`require` must be the transaction's last statement")
        if self._pending is not None and self._xact is None:
            self._xact = self._conn.transaction()
            await self._xact.start()

    async def flush(self) -> None:
        if self._pending:
            await self._begin()
            if not self._guards:
                sql, args = self._pending.combined()
                await self._conn.execute(sql, *args)
                return
            await self._send_checked(self._checks())

    def _checks(self) -> str:
        """The statement that ends what is held back: it fails when a required or guarded part
        returned no row (the parts of one WITH all run, whatever the main statement reads)."""
        checks = [f"stateset_still_current(EXISTS (SELECT 1 FROM {name}))" for name in self._guards]
        if self._required is not None:
            checks.append(f"stateset_require_row(EXISTS (SELECT 1 FROM {self._required}))")
        return "SELECT " + ", ".join(checks) if checks else "SELECT 1"

    async def _send_checked(self, check: str) -> None:
        required, self._guards = self._required, []
        sql, args = self._pending.combined(check)  # type: ignore[union-attr]
        try:
            await self._conn.execute(sql, *args)
        except asyncpg.PostgresError as exc:
            state = getattr(exc, "sqlstate", None)
            if state == _NOT_CURRENT:
                raise Stale from None
            if required is not None and state == _ROW_MISSING:
                raise RequiredRowMissing from None
            raise

    async def _ready(self, sql: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...] | list[Any]]:
        """The statement to run for `sql`: with what is held back in front of it when it can be,
        else after sending that on its own."""
        await self._begin()
        pending = self._pending
        if not pending:
            return sql, args
        table = target_table(sql)
        if table is not None and pending.fits(table, len(args)) and not self._guards:
            return pending.combined(sql, args)  # (guards need a statement of their own to check them)
        reads = tables_read(sql)
        if reads is None or not reads.isdisjoint(pending.tables):
            await self.flush()
        return sql, args

    async def require(self, sql: str, *args: Any) -> bool:
        """The transaction's last statement, an INSERT or UPDATE … RETURNING that decides whether
        the transaction's work is kept: False when it returned no row (the caller then raises, and
        nothing of the transaction is kept). When nothing has been sent yet it is held back with the
        rest, and `finish` sends them as one statement that fails, writing nothing, if it returns no
        row (RequiredRowMissing)."""
        pending = self._pending
        table = target_table(sql)
        if pending is None or self._xact is not None or table is None or not pending.fits(table, len(args)):
            return await self.fetchrow(sql, *args) is not None
        self._required = pending.add(table, sql, args)
        return True

    async def guard(self, sql: str, *args: Any) -> None:
        """Held back when it can be: then the statement that sends it checks it (`_checks`)."""
        pending = self._pending
        table = target_table(sql)
        if pending is None or table is None or not pending.fits(table, len(args)) or self._required is not None:
            if await self.fetchrow(sql, *args) is None:
                raise Stale
            return
        self._guards.append(pending.add(table, sql, args))

    async def finish(self) -> None:
        """End of the transaction function: send what is held back, then COMMIT; or, when nothing
        was sent, all of it as one statement outside a transaction block (no BEGIN, no COMMIT)."""
        if self._xact is not None:
            await self.flush()
            await self._xact.commit()
            return
        if self._pending:
            await self._send_checked(self._checks())

    async def rollback(self) -> None:
        if self._xact is not None:
            await self._xact.rollback()

    async def invalidate(self, name: str) -> None:
        # Delivered to every listening process if, and when, this transaction commits.
        await self.execute("SELECT pg_notify($1, '')", channel(name))
        self._mark_invalidated(name)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        sql, params = await self._ready(sql, args)
        return await self._conn.fetchrow(sql, *params)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        sql, params = await self._ready(sql, args)
        return list(await self._conn.fetch(sql, *params))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        sql, params = await self._ready(sql, args)
        return await self._conn.fetchval(sql, *params)

    async def execute(self, sql: str, *args: Any) -> None:
        pending = self._pending
        if pending is not None:
            table = target_table(sql)
            if table is not None and len(args) <= MAX_ARGS:
                if not pending.fits(table, len(args)) or self._required is not None:
                    await self.flush()  # after `require`: refused there
                pending.add(table, sql, args)
                return
        sql, params = await self._ready(sql, args)
        await self._conn.execute(sql, *params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        width = len(rows[0])
        if self._pending is not None and width * len(rows) <= MAX_ARGS and all(len(row) == width for row in rows):
            many = rows_statement(sql, width, len(rows))
            if many is not None:  # one multi-row INSERT, held back like any other
                await self.execute(many, *(value for row in rows for value in row))
                return
        await self.flush()
        await self._begin()
        await self._conn.executemany(sql, rows)

    async def next_number(self, workspace_id: str, mode: str, name: str, first: int) -> int:
        if self._counters is None:
            raise RuntimeError("counters are taken in write transactions")
        return await self._counters.take((workspace_id, mode, name, first))

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A SAVEPOINT (asyncpg nests a transaction as one). What is held back goes out before it
        starts, and before it ends, so that its statements' errors are raised inside it."""
        await self.flush()
        await self._begin()  # a savepoint lives in a transaction block
        try:
            async with self._conn.transaction():
                yield
                await self.flush()
        except BaseException:
            if self._pending is not None:
                self._pending.clear()  # rolled back with the savepoint; never sent
                self._guards.clear()
            raise


_CounterKey = tuple[str, str, str, int]  # workspace, mode, counter name, first value


class _Counters:
    """Counter values for this process, taken on one connection of their own, each increment
    committed by itself (see `Tx.next_number`); requests that queue meanwhile for the same counter
    are served by one statement that takes as many numbers as they are.

    `synchronous_commit = off` is safe for the increments: a transaction that uses a number commits
    later with a synchronous commit, which flushes the WAL up to and past the increment.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._waiting: dict[_CounterKey, list[asyncio.Future[int]]] = {}

    async def take(self, key: _CounterKey) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(key, [])
        waiting.append(future)
        if len(waiting) == 1:  # the first in line takes for everyone who joins before its turn
            asyncio.get_running_loop().create_task(self._serve(key))
        return await future

    async def _serve(self, key: _CounterKey) -> None:
        async with self._lock:
            waiting = self._waiting.pop(key)
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self._url, server_settings=_SESSION)
                    await self._conn.execute("SET synchronous_commit = off")
                last = int(await self._conn.fetchval(NEXT_NUMBER, *key, len(waiting)))
            except BaseException as exc:
                for future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            first = last - len(waiting) + 1
            for index, future in enumerate(waiting):
                if not future.done():
                    future.set_result(first + index)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


# Errors after which a connection is not given out again: it may be mid-statement or gone.
_BROKEN = (asyncio.CancelledError, *_UNAVAILABLE)


class _Pool:
    """This process's connections: a free list, opened on demand up to `size`.

    asyncpg's pool wraps every acquire and release in a task, a shield and a timeout, which cost a
    fifth of a GET's CPU here. A connection goes back to the list after use unless it broke or its
    user was cancelled mid-statement (then it is terminated, and a new one opened when needed).
    Nothing sets session state on these connections, so there is nothing to reset."""

    def __init__(self, url: str, size: int) -> None:
        self._url, self._size = url, size
        self._free: list[asyncpg.Connection] = []
        self._open = 0
        self._waiting: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()

    async def _acquire(self) -> asyncpg.Connection:
        while True:
            while self._free:
                conn = self._free.pop()
                if not conn.is_closed():
                    return conn
                self._open -= 1
            if self._open < self._size:
                self._open += 1
                try:
                    return await asyncpg.connect(self._url, server_settings=_SESSION)
                except asyncpg.TooManyConnectionsError:
                    self._open -= 1
                    if self._open == 0:
                        raise
                    self._size = self._open  # the server is full: make do with what this process has
                except BaseException:
                    self._open -= 1
                    self._hand_over(None)
                    raise
            waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result(), reusable=True)
                raise
            if conn is not None:
                return conn
            # None: a connection was closed meanwhile; loop to open a new one

    def _release(self, conn: asyncpg.Connection, *, reusable: bool) -> None:
        if not reusable or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._open -= 1
            self._hand_over(None)
        elif not self._hand_over(conn):
            self._free.append(conn)

    def _hand_over(self, conn: asyncpg.Connection | None) -> bool:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._acquire()
        try:
            yield conn
        except _BROKEN:
            self._release(conn, reusable=False)
            raise
        except BaseException:
            self._release(conn, reusable=True)  # e.g. an ApiError: its transaction has rolled back
            raise
        else:
            self._release(conn, reusable=True)

    async def close(self) -> None:
        free, self._free = self._free, []
        for conn in free:
            self._open -= 1
            await conn.close()


class _Lookups:
    """Look-ups of one `Lookup`, sent together: a look-up that comes in while `IN_FLIGHT` statements
    of it are on their way waits for the next, which carries every key asked for meanwhile as one
    `many` statement. Idle, a look-up goes at once, alone; under load, one round trip and one
    statement serve many (each costs the server and asyncpg more than a row does). Every statement
    is sent after each of its keys was asked for, so it sees every write acknowledged before that."""

    IN_FLIGHT = 2

    def __init__(self, pool: _Pool, query: Lookup) -> None:
        self._pool = pool
        self._sql = query.many
        self._waiting: dict[str, list[asyncio.Future[Row | None]]] = {}
        self._sending: set[asyncio.Task[None]] = set()  # referenced, so that no running one is collected
        self.statements = 0

    async def get(self, key: str) -> Row | None:
        future: asyncio.Future[Row | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if len(self._sending) < self.IN_FLIGHT:
            self._send()
        return await future

    def _send(self) -> None:
        batch, self._waiting = self._waiting, {}
        self.statements += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._waiting and len(self._sending) < self.IN_FLIGHT:
            self._send()

    async def _run(self, batch: dict[str, list[asyncio.Future[Row | None]]]) -> None:
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(self._sql, list(batch))
        except BaseException as exc:  # every look-up of the statement fails with it
            for futures in batch.values():
                for future in futures:
                    if future.done():
                        continue
                    if isinstance(exc, _UNAVAILABLE):
                        future.set_exception(StorageUnavailable(str(exc)))
                    elif isinstance(exc, Exception):
                        future.set_exception(exc)
                    else:
                        future.cancel()
            if not isinstance(exc, Exception):
                raise
        else:
            found = {row[0]: row for row in rows}
            for key, futures in batch.items():
                row = found.get(key)
                for future in futures:
                    if not future.done():
                        future.set_result(row)


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, url: str, pool: _Pool) -> None:
        self.url = url
        self._pool = pool
        self._counters = _Counters(url)
        self.epochs = NotifyEpochs(url)
        self._lookups: dict[Lookup, _Lookups] = {}

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        pool = _Pool(url, int(os.environ.get("STATESET_PG_POOL_SIZE", "20")))
        try:
            async with pool.acquire():  # fail at start when the database cannot be reached
                pass
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(url, pool)

    async def write(self, fn: Callable[[PostgresTx], Awaitable[T]]) -> T:
        """Run `fn` in one transaction. A deadlock (two transactions locking the same rows in other
        orders, e.g. bulk payments from overlapping wallets) rolls one back: it is run again, as
        transaction functions only change the database."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return await self._write_once(fn)
            except Stale:  # an optimistic write found its row changed: the function decides again
                if attempt == WRITE_ATTEMPTS - 1:
                    raise still_stale() from None
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))  # noqa: S311 (jitter)
        raise AssertionError("unreachable")

    async def _write_once(self, fn: Callable[[PostgresTx], Awaitable[T]]) -> T:
        tx = None
        try:
            async with self._pool.acquire() as conn:
                tx = PostgresTx(conn, self._counters, self.epochs, buffered=True)
                try:
                    result = await fn(tx)
                    await tx.finish()  # what was held back, then COMMIT (if a transaction was begun)
                except BaseException:
                    await tx.rollback()
                    raise
                return result
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

    async def lookup(self, query: Lookup, key: str) -> Row | None:
        if "\x00" in key:  # PostgreSQL text cannot hold it, so no row has it; sent, it would fail the
            return None  # statement, and with it every look-up sent together (a path id can carry one)
        lookups = self._lookups.get(query)
        if lookups is None:
            lookups = self._lookups[query] = _Lookups(self._pool, query)
        return await lookups.get(key)

    async def flush(self) -> None:
        """Nothing to wait for: PostgreSQL shows a transaction only once its commit is on disk."""

    async def ping(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self.epochs.close()
        await self._counters.close()
        await self._pool.close()
