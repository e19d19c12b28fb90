"""SQLite engine: WAL, an fsync before every answer, and one group-commit writer per process.

Why a writer that commits in groups: every durable commit costs an fsync (0.13-2.5 ms here). The
writer takes every unit of work queued by the time it holds the write lock (all that came in while
another process held it), runs them (one failing unit never fails its neighbours), and commits the
group once. The fsync comes right after the COMMIT, once the lock is released (`_flush_wal`): a
caller's future resolves only when the WAL holding its commit is on disk, so every acknowledged
write is durable, while another process's group already runs. At low load a group is a single
write; there is no timer and no added latency.

Everything from BEGIN IMMEDIATE to COMMIT runs on the event loop (`_GroupCommitWriter` says why);
waiting for another process's lock does not block it (`wakeup.py`).

Reads run on the event loop over a separate connection in one short read transaction (a WAL
snapshot), which never blocks the writer; a single-statement read skips BEGIN/COMMIT.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from stateset_server.storage.database import (
    NEXT_NUMBER,
    WRITE_ATTEMPTS,
    Lookup,
    Row,
    Stale,
    StorageUnavailable,
    sqlite_path,
    still_stale,
)
from stateset_server.storage.epoch import FileEpochs, TxCacheHooks
from stateset_server.storage.wakeup import WriteWakeups

__all__ = ["SQLiteDatabase", "connect", "run_sync"]

T = TypeVar("T")
MAX_GROUP = 512
BUSY_TIMEOUT = 10.0  # seconds a group waits for another connection's write lock before it fails
CHECKPOINT_EVERY = 0.25  # seconds between checkpoints after commits (SQLite's own: every 1,000 pages).
# A page changed by many commits meanwhile is copied once: creates +4.6 % over 0.05 s (docs/benchmarks.md).
MMAP_SIZE = 1 << 30  # bytes of the database file mapped (address space, not memory)
CHECKPOINT_LOCKED_PAGES = 16_384  # a WAL this long (64 MiB) is checkpointed holding the writers' lock
_fdatasync = getattr(os, "fdatasync", os.fsync)  # the WAL's data and its length; macOS has only fsync
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


# Python's sqlite3 binds int, float, str and bytearray as they are, but "adapts" any other value, None
# and bytes included: it looks for `__adapt__` and `__conform__`, formatting an AttributeError for
# each it does not find (~0.6 µs a parameter here; an order's row has a dozen NULLs, and every change
# binds packed documents). An adapter registered for a type is found first, in one dict look-up.
# None and bytes bind exactly as before; no base type is adapted, which would slow every parameter.
sqlite3.register_adapter(type(None), lambda _value: None)
sqlite3.register_adapter(bytes, bytes)


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
    # Pages of the database file are read through a memory map, not read() calls: any commit (by any
    # process) empties every connection's page cache, and the next statements read their pages
    # again (gets +9-11 % over HTTP, docs/benchmarks.md). The WAL's pages are still read().
    conn.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    return conn


# A savepoint's name and the counters as they were when it began (`SQLiteTx.mark`).
_Mark = tuple[str, list[tuple[tuple[str, str, str], int, int]]]


class SQLiteTx(TxCacheHooks):
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, epochs: FileEpochs | None = None) -> None:
        super().__init__(epochs)
        self._conn = conn
        self._depth = 0
        # Counters taken in the open transaction: key → [last value handed out, value in the row].
        # A group's units take numbers in memory after the first; `flush_numbers` writes them back,
        # and a rolled-back savepoint gives its numbers back (`undoable`): gapless on SQLite.
        self._numbers: dict[tuple[str, str, str], list[int]] = {}

    def forget_numbers(self) -> None:
        """The transaction rolled back: the counters' rows are as they were."""
        self._numbers.clear()

    def flush_numbers(self) -> None:
        for (workspace_id, mode, name), (value, stored) in self._numbers.items():
            if value != stored:
                self._conn.execute(
                    "UPDATE counters SET value = ? WHERE workspace_id = ? AND mode = ? AND name = ?",
                    (value, workspace_id, mode, name),
                )
        self._numbers.clear()

    async def invalidate(self, name: str) -> None:
        self._mark_invalidated(name)  # the shared marker file changes once the group has committed

    @contextmanager
    def undoable(self, name: str) -> Iterator[None]:
        """A SAVEPOINT: on an exception its writes, and the numbers taken since, are undone."""
        mark = self.mark(name)
        try:
            yield
        except BaseException:
            self.undo(mark)
            raise
        self.keep(mark)

    # `undoable` in three calls, for the group writer's loop (a generator-based context manager per
    # unit cost more than its two statements).
    def mark(self, name: str) -> _Mark:
        numbers = [(key, held[0], held[1]) for key, held in self._numbers.items()] if self._numbers else []
        self._conn.execute(f"SAVEPOINT {name}")
        return name, numbers

    def undo(self, mark: _Mark) -> None:
        name, numbers = mark
        self._conn.execute(f"ROLLBACK TO {name}")
        self._conn.execute(f"RELEASE {name}")
        self._numbers = {key: [value, stored] for key, value, stored in numbers}

    def keep(self, mark: _Mark) -> None:
        self._conn.execute(f"RELEASE {mark[0]}")

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._depth += 1
        try:
            with self.undoable(f"nested_{self._depth}"):
                yield
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

    async def require(self, sql: str, *args: Any) -> bool:
        return self._conn.execute(_sql(sql), args).fetchone() is not None

    async def guard(self, sql: str, *args: Any) -> None:
        if self._conn.execute(_sql(sql), args).fetchone() is None:
            raise Stale

    async def next_number(self, workspace_id: str, mode: str, name: str, first: int) -> int:
        held = self._numbers.get((workspace_id, mode, name))
        if held is not None:  # the row is this transaction's to write back: no statement per number
            held[0] += 1
            return held[0]
        row = self._conn.execute(_sql(NEXT_NUMBER), (workspace_id, mode, name, first, 1)).fetchone()
        value = int(row[0])
        self._numbers[(workspace_id, mode, name)] = [value, value]
        return value


_Unit = tuple[Callable[[SQLiteTx], Awaitable[Any]], asyncio.Future[Any]]
_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


class _Retry(Exception):
    """A unit run without a savepoint of its own failed: the group is rolled back and run again,
    that unit and the ones after it each in a savepoint."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class _GroupCommitWriter:
    """Runs each group of write units on the event loop, from BEGIN IMMEDIATE to COMMIT, without
    handing anything to a thread while it holds the write lock.

    Units run without savepoints, so a failing unit could not be undone alone: the group is then
    rolled back and run again (`_Retry`), with that unit and every later one in a SAVEPOINT of its
    own, which undoes a failing unit's writes and nothing else. Units are transaction functions and
    may run again (PostgreSQL runs them again too). A savepoint per unit made SQLite copy every page
    a unit changed first to its statement journal, for every unit: a fifth of a create's time under
    the lock (docs/benchmarks.md, session 8).

    The units' statements are short and run where their Python runs, so no statement hands the GIL
    to another thread (handing it over per statement cost more than the statements). BEGIN and
    COMMIT used to go to a thread too, so the loop could serve requests while they waited; but a
    thread that has the lock must then wait for the GIL before it can go on or let go, and with the
    loop busy that wait was longer than the fsync (py-spy, docs/benchmarks.md), all of it with every
    writer of the file locked out. So the loop now waits for the other processes' lock without
    blocking (`WriteWakeups`: it serves requests meanwhile) and blocks only through its own fsync
    (`_flush_wal`, after COMMIT let go of the lock), during which the other core runs the process
    that writes next.

    The WAL checkpoint runs in a thread on its own connection, after COMMIT released the lock.

    COMMIT does not fsync (`synchronous=NORMAL` on this connection): `_flush_wal` fdatasyncs the WAL
    file right after it, on the loop, and only then are the group's callers answered. The loop still
    waits through the fsync, but the write lock is no longer held through it, so the other processes
    write meanwhile (fsyncs of 100-400 ms happen on this disk). The fsync in a thread of its own was
    slower: answering from it waits for the GIL (docs/benchmarks.md, session 11). The WAL is written
    in order, so an fsync covers every commit before it, another process's included: a write that
    read another's change is answered after both are on disk. With NORMAL, SQLite still syncs the
    WAL before a checkpoint copies it and the database file after (the checkpoint connection is FULL
    anyway), so a WAL that starts over never drops a commit that is only in the WAL. A committed but
    not yet flushed write is visible to reads for that moment, and a power cut (not a crash: the OS
    has the pages) in it would undo it, though no caller was told it succeeded; an idempotent replay
    flushes first (`flush`).
    """

    def __init__(self, path: str, epochs: FileEpochs | None) -> None:
        self._conn = connect(path)
        # BEGIN IMMEDIATE answers at once when another process writes; `_wakeups` says when to retry.
        self._conn.execute("PRAGMA busy_timeout = 0")
        # SQLite's automatic checkpoint runs inside COMMIT, while this process holds every writer's
        # lock; `_checkpoint` runs it after the lock is released instead, on a connection of its own.
        self._conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._conn.execute("PRAGMA synchronous = NORMAL")  # the fsync is `_flush_wal`'s, after the lock
        self._checkpointer = connect(path)
        self._checkpointer.execute("PRAGMA wal_autocheckpoint = 0")
        self._wakeups = WriteWakeups.beside(path)
        self._checkpoint_every = CHECKPOINT_EVERY
        self._checkpoint_locked_pages = CHECKPOINT_LOCKED_PAGES
        self._checkpointed_at = 0.0
        self._checkpointing: asyncio.Future[bool] | None = None
        self._wal_pages = 0  # frames in the WAL at the last checkpoint
        self._tx = SQLiteTx(self._conn, epochs)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        self._wal_path = path + "-wal"
        self._wal_fd: int | None = None  # opened after the first COMMIT, which creates the file
        self._pending: list[_Unit] = []
        self._isolated: set[asyncio.Future[Any]] = set()  # units to run in a savepoint of their own
        self._draining: asyncio.Task[None] | None = None
        self.groups = 0
        self.units = 0
        self.retries = 0  # groups run again because a unit without a savepoint failed
        self.run_seconds = 0.0  # time the units ran while holding the write lock (bench/inprocess.py)
        self.commit_seconds = 0.0  # time COMMIT took (the writers' lock is held through it)

    def submit(self, fn: Callable[[SQLiteTx], Awaitable[T]]) -> asyncio.Future[T]:
        # One look-up of the loop per write: on Python 3.11 each costs a getpid() system call.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, future))
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._pending:
                if not await self._begin():  # units submitted while it waits join this group
                    continue  # they were all answered with the error
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                self._commit_group(group)
        finally:
            self._draining = None

    async def _begin(self) -> bool:
        """BEGIN IMMEDIATE; while another connection writes, wait for a wake-up and try again. False
        when it failed for good: the pending units have then been answered with the error."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        restarted = False
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                busy = isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    _settle_all(self._pending, StorageUnavailable(f"write transaction failed: {exc}"))
                    self._pending = []
                    self._isolated.clear()
                    return False
                await self._wakeups.wait()
                continue
            if restarted or self._wal_pages < self._checkpoint_locked_pages:
                return True
            await self._restart_wal()  # once: if readers kept it from copying all, a later group tries again
            restarted = True

    async def _restart_wal(self) -> None:
        """Checkpoint the whole WAL while this connection holds the write lock, then let go of it.

        The WAL only starts over when a write begins after a checkpoint that copied all of it. Under
        constant writes from several processes one always begins before that, and the WAL would
        grow without end (checkpoints after COMMIT are PASSIVE and run beside the writers). Holding
        the lock, no frame is added while the checkpoint copies, so the next BEGIN starts it over."""
        if self._checkpointing is not None:
            await asyncio.shield(self._checkpointing)
        try:
            if await asyncio.get_running_loop().run_in_executor(self._io, lambda: self._checkpoint(holding_lock=True)):
                self._wal_pages = 0  # this BEGIN's snapshot predates the copy; the next one starts over
        finally:
            self._conn.execute("ROLLBACK")
            self._wakeups.notify()

    def _commit_group(self, group: list[_Unit]) -> None:
        try:
            started = time.perf_counter()
            try:
                try:
                    outcomes = self._run_group(group)
                except _Retry as retry:
                    self._tx.forget_numbers()
                    self._conn.execute("ROLLBACK")
                    self.run_seconds += time.perf_counter() - started
                    self._isolated.update(future for _fn, future in group[retry.index :])
                    self._pending[:0] = group  # first in line again: `_drain` begins anew
                    self.retries += 1
                    return
                self._tx.flush_numbers()
                self.run_seconds += time.perf_counter() - started
                committing = time.perf_counter()
                self._conn.execute("COMMIT")  # no fsync here (NORMAL): `_flush_wal`, once the lock is released
                self.commit_seconds += time.perf_counter() - committing
            except BaseException:
                self._tx.forget_numbers()
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            finally:
                self._wakeups.notify()
        except Exception as exc:  # a savepoint or the COMMIT failed: the whole group is undone
            _settle_all(group, StorageUnavailable(f"write transaction failed: {exc}"))
            return
        finally:
            callbacks, self._tx.committed, self._tx.invalidated = self._tx.committed, [], set()
            for callback in callbacks:
                callback()
        self.groups += 1
        self.units += len(group)
        unflushed = self._flush_wal()
        for future, result, exc in outcomes:
            if future.cancelled():
                continue
            if exc is not None:
                future.set_exception(exc)  # its writes were undone
            elif unflushed is not None:  # committed, but whether it is on disk is unknown: no success
                future.set_exception(StorageUnavailable(f"the write was committed but not flushed: {unflushed}"))
            else:
                future.set_result(result)
        self._maybe_checkpoint()

    def _flush_wal(self) -> OSError | None:
        """fdatasync the WAL: everything committed so far, by any process, is then on disk."""
        try:
            if self._wal_fd is None:
                self._wal_fd = os.open(self._wal_path, os.O_RDONLY)
            _fdatasync(self._wal_fd)
        except OSError as exc:
            return exc
        return None

    async def flush(self) -> None:
        """Until everything committed so far, by any process, is on disk."""
        unflushed = self._flush_wal()
        if unflushed is not None:
            raise StorageUnavailable(f"the database could not be flushed: {unflushed}")

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if self._checkpointing is not None or now - self._checkpointed_at < self._checkpoint_every:
            return
        self._checkpointed_at = now
        self._checkpointing = asyncio.get_running_loop().run_in_executor(self._io, self._checkpoint)
        self._checkpointing.add_done_callback(self._checkpointed)

    def _checkpointed(self, _done: asyncio.Future[bool]) -> None:
        self._checkpointing = None

    def _checkpoint(self, *, holding_lock: bool = False) -> bool:
        """Copy committed pages from the WAL into the database file, in a thread on the checkpoint's
        own connection. PASSIVE: it waits for no one, and copies what no reader still needs. True
        when it copied the whole WAL. Holding the write lock, it waits out another process's
        checkpoint (no frame can be added meanwhile, so it will end)."""
        for attempt in range(200 if holding_lock else 1):
            if attempt:
                time.sleep(0.001)
            try:
                # (busy, frames in the WAL, frames copied); -1: another connection is checkpointing.
                _busy, frames, copied = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                return False  # the next commit tries again
            if frames >= 0:
                self._wal_pages = int(frames)
                return copied == frames
        return False

    def _run_group(self, group: list[_Unit]) -> list[_Outcome]:
        tx, isolated = self._tx, self._isolated
        outcomes: list[_Outcome] = []
        for index, (fn, future) in enumerate(group):
            if not isolated or future not in isolated:
                try:
                    result = run_sync(fn(tx))
                except Exception:
                    raise _Retry(index) from None
                outcomes.append((future, result, None))
                continue
            isolated.discard(future)
            outcomes.append(self._run_isolated(fn, future))
        return outcomes

    def _run_isolated(self, fn: Callable[[SQLiteTx], Awaitable[Any]], future: asyncio.Future[Any]) -> _Outcome:
        """One unit in a savepoint of its own: its error undoes its writes and goes back to its caller
        only. Stale undoes them and runs the function again, as PostgreSQL does (`Stale`)."""
        tx = self._tx
        for _attempt in range(WRITE_ATTEMPTS):
            mark = tx.mark("unit")
            try:
                result = run_sync(fn(tx))
            except Stale:
                tx.undo(mark)
                continue
            except BaseException as exc:
                tx.undo(mark)
                if not isinstance(exc, Exception):
                    raise
                return future, None, exc
            tx.keep(mark)
            return future, result, None
        return future, None, still_stale()

    async def close(self) -> None:
        while self._draining is not None:
            await asyncio.shield(self._draining)
        if self._checkpointing is not None:
            await asyncio.shield(self._checkpointing)
        self._io.shutdown(wait=True)
        if self._wal_fd is not None:
            os.close(self._wal_fd)
        self._conn.close()
        self._checkpointer.close()
        self._wakeups.close()


def _settle_all(group: list[_Unit], exc: BaseException) -> None:
    for _fn, future in group:
        if not future.cancelled():
            future.set_exception(exc)


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, url: str, path: str) -> None:
        self.url = url
        self.path = path
        self.epochs = FileEpochs.beside(path)
        self._writer = _GroupCommitWriter(path, self.epochs)
        self._reader = connect(path, readonly=True)
        self._read_tx = SQLiteTx(self._reader)

    @classmethod
    def open(cls, url: str) -> SQLiteDatabase:
        return cls(url, sqlite_path(url))

    async def write(self, fn: Callable[[SQLiteTx], Awaitable[T]]) -> T:
        return await self._writer.submit(fn)

    async def read(self, fn: Callable[[SQLiteTx], Awaitable[T]], *, snapshot: bool = True) -> T:
        # Synchronous on the loop: no other coroutine can interleave inside this snapshot.
        reader = self._reader
        if not snapshot:
            return run_sync(fn(self._read_tx))
        try:
            reader.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc
        try:
            return run_sync(fn(self._read_tx))
        finally:
            reader.execute("COMMIT")

    async def lookup(self, query: Lookup, key: str) -> Row | None:
        return self._reader.execute(_sql(query.one), (key,)).fetchone()

    async def flush(self) -> None:
        """Until every write committed so far is on disk (a read may have shown one that is not yet)."""
        await self._writer.flush()

    async def ping(self) -> None:
        try:
            self._reader.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self._writer.close()
        self._reader.close()
        if self.epochs is not None:
            self.epochs.close()
