"""Versioned schema migrations: numbered SQL files per dialect, applied once, in order, under a lock.

`schema_migrations` records each applied version with a checksum; editing an applied migration is
refused rather than silently diverging. SQLite serialises migrators with BEGIN IMMEDIATE, PostgreSQL
with a transaction-scoped advisory lock, so several nodes starting together migrate exactly once.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from importlib import resources

import asyncpg

from stateset_server.core.clock import now_us
from stateset_server.storage.database import is_postgres, sqlite_path
from stateset_server.storage.sqlite import connect

__all__ = ["Migration", "MigrationError", "load_migrations", "migrate"]

_LOCK_ID = 0x57A7E5E7  # advisory lock key shared by every stateset-server node
_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(dialect: str) -> list[Migration]:
    folder = resources.files("stateset_server.storage") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"{dialect} migrations are not numbered 1..n without gaps")
    return found


def _check(applied: dict[int, str], migrations: list[Migration]) -> list[Migration]:
    known = {m.version: m for m in migrations}
    for version, checksum in applied.items():
        if version not in known:
            raise MigrationError(f"database has migration {version}, which this version does not know (downgrade?)")
        if known[version].checksum != checksum:
            raise MigrationError(f"migration {version} was changed after it was applied")
    return [m for m in migrations if m.version not in applied]


def _statements(script: str) -> list[str]:
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(ln.strip().startswith("--") for ln in buffer.strip().splitlines()):
        raise MigrationError("migration ends with an incomplete statement")
    return statements


def _migrate_sqlite(url: str) -> list[int]:
    migrations = load_migrations("sqlite")
    conn = connect(sqlite_path(url))
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_TABLE)
        applied = {r[0]: r[1] for r in conn.execute("SELECT version, checksum FROM schema_migrations")}
        pending = _check(applied, migrations)
        for migration in pending:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
                (migration.version, migration.name, migration.checksum, now_us()),
            )
        conn.execute("COMMIT")
        return [m.version for m in pending]
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


async def _migrate_postgres(url: str) -> list[int]:
    migrations = load_migrations("postgres")
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
            await conn.execute(_TABLE)
            applied = {r[0]: r[1] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")}
            pending = _check(applied, migrations)
            for migration in pending:
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                    now_us(),
                )
        return [m.version for m in pending]
    finally:
        await conn.close()


async def migrate(url: str) -> list[int]:
    """Apply every pending migration; returns the versions applied now."""
    if is_postgres(url):
        return await _migrate_postgres(url)
    return _migrate_sqlite(url)
