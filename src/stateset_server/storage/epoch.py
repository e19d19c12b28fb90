"""Change markers for per-process caches of rarely changing rows, shared by every process.

A cache (API keys and plans: "access"; products: "catalog"; webhook endpoints: "webhooks"; which
customer an email belongs to: "customers") tags each
entry with the marker it read before querying the database and serves the entry only while the
marker is unchanged (`MarkedCache`). A transaction that changes such rows calls `tx.invalidate(name)`,
which changes the marker for every process once it commits, so the next lookup anywhere misses and
reads the database again.

- SQLite (`FileEpochs`): 8 bytes per marker in a memory-mapped file beside the database
  (`<database>-epoch`); reading one is a memory load, changing one writes new random bytes (no lock
  needed). Every process on the machine sees the change at once.
- PostgreSQL (`NotifyEpochs`): a counter per marker in this process, moved on by LISTEN/NOTIFY
  (the NOTIFY is sent inside the changing transaction, so it is delivered only if it commits). A
  change made by another process is seen as soon as its notification arrives, normally within a
  millisecond of the commit; while the listening connection is down nothing is cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

import asyncpg

__all__ = ["MARKERS", "Epochs", "FileEpochs", "MarkedCache", "NotifyEpochs", "TxCacheHooks", "sidecar_path"]

MARKERS = ("access", "catalog", "webhooks", "customers")
_SIZE = 8
log = logging.getLogger("stateset_server")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Epochs(Protocol):
    def read(self, name: str) -> object | None:
        """The marker's current value; None: cache nothing now."""
        ...

    def bump(self, name: str) -> None:
        """Changed here (after the commit): stale in this process at once."""
        ...

    def listen(self) -> None:
        """Start following other processes' changes (a server does; short-lived tools need not)."""
        ...


def sidecar_path(database_path: str, suffix: str) -> str | None:
    """`<database>-<suffix>`, a file kept beside a SQLite database; None for one that is not a file."""
    if not database_path or database_path == ":memory:" or database_path.startswith("file:"):
        return None
    return f"{database_path}-{suffix}"


class MarkedCache(Generic[K, V]):
    """Entries that hold while marker `name` is what it was when they were read. A lookup takes the
    marker first (`marker`), then `get`; after a miss it reads the database and `put`s under that same
    marker, so a change committed meanwhile leaves the entry stale, never wrong. Bounded: when full it
    starts over."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self._limit = limit
        self._entries: dict[K, tuple[Epochs, object, V]] = {}

    def marker(self, epochs: Epochs | None) -> object | None:
        """The marker to read under; None: cache nothing now."""
        return None if epochs is None else epochs.read(self.name)

    def get(self, epochs: Epochs | None, marker: object | None, key: K) -> tuple[bool, V | None]:
        """(True, the value) while it holds; (False, None) otherwise."""
        entry = self._entries.get(key) if marker is not None else None
        if entry is None or entry[0] is not epochs or entry[1] != marker:
            return False, None
        return True, entry[2]

    def put(self, epochs: Epochs | None, marker: object | None, key: K, value: V) -> None:
        if epochs is None or marker is None:
            return
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[key] = (epochs, marker, value)


class FileEpochs:
    def __init__(self, path: str) -> None:
        size = _SIZE * len(MARKERS)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.pwrite(fd, os.urandom(size), 0)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._offset = {name: i * _SIZE for i, name in enumerate(MARKERS)}

    @classmethod
    def beside(cls, database_path: str) -> FileEpochs | None:
        """The markers of a database file; None (no caching) where they cannot be kept, e.g. in memory."""
        path = sidecar_path(database_path, "epoch")
        if path is None:
            return None
        try:
            return cls(path)
        except OSError:
            return None

    def read(self, name: str) -> bytes:
        at = self._offset[name]
        return self._map[at : at + _SIZE]

    def bump(self, name: str) -> None:
        at = self._offset[name]
        self._map[at : at + _SIZE] = os.urandom(_SIZE)

    def listen(self) -> None:
        pass  # the shared file is always current

    def close(self) -> None:
        self._map.close()


class TxCacheHooks:
    """What both engines' transactions keep for the caches: callbacks to run once the transaction has
    ended, and the caches it invalidated (whose markers change then, in this process at once)."""

    def __init__(self, epochs: Epochs | None) -> None:
        self.epochs = epochs
        self.committed: list[Callable[[], None]] = []
        self.invalidated: set[str] = set()

    def after_commit(self, fn: Callable[[], None]) -> None:
        self.committed.append(fn)

    def _mark_invalidated(self, name: str) -> None:
        self.invalidated.add(name)
        epochs = self.epochs
        if epochs is not None:
            self.after_commit(lambda: epochs.bump(name))


def channel(name: str) -> str:
    return f"stateset_{name}"


class NotifyEpochs:
    """Markers moved on by notifications, on one listening connection (after `listen()`; until it is
    connected nothing is cached)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._counts = dict.fromkeys(MARKERS, 0)
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def read(self, name: str) -> int | None:
        return None if self._conn is None else self._counts[name]

    def listen(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    def bump(self, name: str) -> None:
        self._counts[name] += 1

    def _bump_all(self) -> None:
        for name in MARKERS:
            self.bump(name)

    async def _listen(self) -> None:
        while not self._closed:
            lost, conn = asyncio.Event(), None
            try:
                conn = await asyncpg.connect(self._url)
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                for name in MARKERS:
                    await conn.add_listener(channel(name), self._notified)
                self._bump_all()  # whatever happened while nobody listened
                self._conn = conn
                await lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cache invalidation: cannot listen on PostgreSQL (%s); not caching, retrying", exc)
            finally:
                self._conn = None
                self._bump_all()
                if conn is not None:
                    conn.terminate()  # no await: this also runs when the task is cancelled
            if not self._closed:
                await asyncio.sleep(1.0)

    def _notified(self, _conn: object, _pid: int, channel_name: str, _payload: str) -> None:
        name = channel_name.removeprefix("stateset_")
        if name in self._counts:
            self.bump(name)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
