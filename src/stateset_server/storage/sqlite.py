"""SQLite engine: WAL, fsync on every commit, and one group-commit writer thread per process.

Why a writer thread that commits in groups: with `synchronous=FULL` every COMMIT costs an fsync
(~100 µs here). The writer takes everything that queued while the previous fsync ran, runs each unit
of work under its own SAVEPOINT (one failing unit never fails its neighbours), and commits the group
once. A caller's future resolves only after that COMMIT returned, so every acknowledged write is on
disk. At low load a group is a single write; there is no timer and no added latency.

Reads run on the event loop over a separate connection in one short read transaction (a WAL
snapshot), which never blocks the writer.
"""

from __future__ import annotations

import asyncio
import queue
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from stateset_server.storage.database import Row, StorageUnavailable, sqlite_path

__all__ = ["SQLiteDatabase", "connect", "run_sync"]

T = TypeVar("T")
MAX_GROUP = 512
_PLACEHOLDER = re.compile(r"\$(\d+)")
_translated: dict[str, str] = {}


def _sql(sql: str) -> str:
    """`$n` → `?n` (SQLite's numbered parameters); row locks are implicit in SQLite's single writer."""
    out = _translated.get(sql)
    if out is None:
        out = _PLACEHOLDER.sub(r"?\1", sql).replace(" FOR UPDATE", "")
        _translated[sql] = out
    return out


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (it only awaits a SQLite `Tx`) to completion."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite transaction function awaited real I/O; it must only await its Tx")


def connect(path: str, *, readonly: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")
    conn.execute("PRAGMA temp_store = MEMORY")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


class SQLiteTx:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._depth = 0

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._depth += 1
        name = f"nested_{self._depth}"
        self._conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self._conn.execute(f"ROLLBACK TO {name}")
            self._conn.execute(f"RELEASE {name}")
            raise
        else:
            self._conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return self._conn.execute(_sql(sql), args).fetchone()

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._conn.execute(_sql(sql), args).fetchall()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = self._conn.execute(_sql(sql), args).fetchone()
        return None if row is None else row[0]

    async def execute(self, sql: str, *args: Any) -> None:
        self._conn.execute(_sql(sql), args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._conn.executemany(_sql(sql), rows)


_Item = tuple[Callable[[SQLiteTx], Awaitable[Any]], asyncio.Future[Any], asyncio.AbstractEventLoop]


class _GroupCommitWriter(threading.Thread):
    def __init__(self, path: str) -> None:
        super().__init__(name="sqlite-writer", daemon=True)
        self._path = path
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.groups = 0
        self.units = 0

    def submit(self, fn: Callable[[SQLiteTx], Awaitable[T]]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, future, loop))
        return future

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        conn = connect(self._path)
        tx = SQLiteTx(conn)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group = [first]
                stopping = False
                while len(group) < MAX_GROUP:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stopping = True
                        break
                    group.append(item)
                try:
                    self._commit_group(conn, tx, group)
                except Exception as exc:  # never let the writer die: later writes would hang
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._settle_all(group, StorageUnavailable(f"write failed: {exc}"))
                if stopping:
                    return
        finally:
            conn.close()

    def _commit_group(self, conn: sqlite3.Connection, tx: SQLiteTx, group: list[_Item]) -> None:
        try:
            outcomes = self._run_group(conn, tx, group)
        except sqlite3.Error as exc:  # BEGIN, SAVEPOINT or COMMIT failed: the whole group is undone
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._settle_all(group, StorageUnavailable(f"write transaction failed: {exc}"))
            return
        self.groups += 1
        self.units += len(group)
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_fn, _future, loop), outcome in zip(group, outcomes, strict=True):
            by_loop.setdefault(loop, []).append(outcome)
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(_settle, items)

    @staticmethod
    def _run_group(
        conn: sqlite3.Connection, tx: SQLiteTx, group: list[_Item]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn, future, _loop in group:
            conn.execute("SAVEPOINT unit")
            try:
                result = run_sync(fn(tx))
            except Exception as exc:  # the unit's own error goes back to its caller only
                conn.execute("ROLLBACK TO unit")
                conn.execute("RELEASE unit")
                outcomes.append((future, None, exc))
            else:
                conn.execute("RELEASE unit")
                outcomes.append((future, result, None))
        conn.execute("COMMIT")
        return outcomes

    def _settle_all(self, group: list[_Item], exc: BaseException) -> None:
        for _fn, future, loop in group:
            loop.call_soon_threadsafe(_settle, [(future, None, exc)])


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in outcomes:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self._writer = _GroupCommitWriter(path)
        self._reader = connect(path, readonly=True)
        self._read_tx = SQLiteTx(self._reader)
        self._writer.start()

    @classmethod
    def open(cls, url: str) -> SQLiteDatabase:
        return cls(url, sqlite_path(url))

    async def write(self, fn: Callable[[SQLiteTx], Awaitable[T]]) -> T:
        return await self._writer.submit(fn)

    async def read(self, fn: Callable[[SQLiteTx], Awaitable[T]]) -> T:
        # Synchronous on the loop: no other coroutine can interleave inside this snapshot.
        reader = self._reader
        try:
            reader.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc
        try:
            return run_sync(fn(self._read_tx))
        finally:
            reader.execute("COMMIT")

    async def ping(self) -> None:
        try:
            self._reader.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def close(self) -> None:
        self._writer.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
        self._reader.close()
