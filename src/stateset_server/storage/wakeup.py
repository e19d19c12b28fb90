"""Wake-ups between the processes writing one SQLite file: "the write lock was just released".

SQLite has one writer at a time across all processes, and a process that finds the lock taken is
left to poll for it (SQLite's busy handler sleeps 1, 2, 5 … 100 ms). Each process instead waits on
its event loop for a byte in a named pipe beside the database (`<file>-wake`), which every writer
writes to after its COMMIT. No thread is involved: a thread that waited for the lock would then
wait for the GIL while holding the lock, which measured longer than the wait itself.

A byte is a hint, not a grant: whoever wakes tries `BEGIN IMMEDIATE` again, and a waiter also
tries again after `fallback` seconds, so a writer that died holding the lock, or another program
writing the file (which writes no byte), delays it at most that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat

from stateset_server.storage.epoch import sidecar_path

__all__ = ["WriteWakeups"]

_DRAIN = 65_536  # a pipe's whole buffer: stale bytes are read in one call


class WriteWakeups:
    def __init__(self, fd: int | None, fallback: float) -> None:
        self._fd = fd
        self.fallback = fallback

    @classmethod
    def beside(cls, database_path: str, *, fallback: float = 0.005) -> WriteWakeups:
        """The pipe of a database file; without one (in memory, or no FIFOs here) waiters poll."""
        path = sidecar_path(database_path, "wake")
        if path is None:
            return cls(None, fallback)
        try:
            with contextlib.suppress(FileExistsError):
                os.mkfifo(path, 0o600)
            # O_RDWR: opening never blocks for want of a reader or a writer, and the pipe never
            # reports end-of-file while this process has it open.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
                return cls(None, fallback)
        except OSError:
            return cls(None, fallback)
        return cls(fd, fallback)

    def notify(self) -> None:
        """The lock was released: wake whoever waits. A full pipe already holds a wake-up."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.write(self._fd, b"\x00")

    async def wait(self) -> None:
        """Until a writer may have released the lock, or `fallback` seconds at most."""
        loop = asyncio.get_running_loop()
        if self._fd is None:
            await asyncio.sleep(self.fallback)
            return
        woken = loop.create_future()
        loop.add_reader(self._fd, _wake, woken)
        handle = loop.call_later(self.fallback, _wake, woken)
        try:
            await woken
        finally:
            handle.cancel()
            loop.remove_reader(self._fd)
        with contextlib.suppress(BlockingIOError):  # stale wake-ups would make the next wait return at once
            os.read(self._fd, _DRAIN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
