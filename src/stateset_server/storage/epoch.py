"""A change marker shared by every process on one SQLite database, read without a system call.

Per-process caches of rarely changing rows (API keys and plans) tag each entry with the marker they
read before querying; a process that changes such rows writes a new marker *after* its commit, so
every other process's next lookup misses and reads the database again. The marker is 8 bytes in a
memory-mapped file beside the database (`<database>-epoch`): reading it is a memory load.
A new random value, not a count, so writers need no lock.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["FileEpoch"]

_SIZE = 8


class FileEpoch:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.pwrite(fd, os.urandom(_SIZE), 0)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    @classmethod
    def beside(cls, database_path: str) -> FileEpoch | None:
        """The marker for a database file; None (no caching) where it cannot be kept, e.g. in memory."""
        if not database_path or database_path == ":memory:" or database_path.startswith("file:"):
            return None
        try:
            return cls(database_path + "-epoch")
        except OSError:
            return None

    def read(self) -> bytes:
        return self._map[:_SIZE]

    def bump(self) -> None:
        self._map[:_SIZE] = os.urandom(_SIZE)

    def close(self) -> None:
        self._map.close()
