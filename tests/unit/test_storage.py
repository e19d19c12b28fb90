"""The storage spine on a real SQLite file: group commit, savepoint isolation, migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from stateset_server.storage.migrate import MigrationError, _check, load_migrations, migrate
from stateset_server.storage.sqlite import SQLiteDatabase, run_sync


def test_run_sync_refuses_a_coroutine_that_really_awaits() -> None:
    async def sleeps() -> None:
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited real I/O"):
        run_sync(sleeps())


def test_one_failing_unit_does_not_fail_its_group(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"

    async def scenario() -> tuple[list[object], int, int]:
        await migrate(url)
        db = SQLiteDatabase.open(url)
        try:

            def insert(workspace_id: str, fail: bool):
                async def unit(tx):
                    await tx.execute("INSERT INTO workspaces (id, name, created_at) VALUES ($1, 'w', 0)", workspace_id)
                    if fail:
                        raise ValueError("boom")
                    return workspace_id

                return unit

            outcomes = await asyncio.gather(
                *(db.write(insert(f"ws_{i}", fail=i % 3 == 0)) for i in range(60)), return_exceptions=True
            )
            count = await db.read(lambda tx: tx.fetchval("SELECT count(*) FROM workspaces"))
            return outcomes, count, db._writer.groups
        finally:
            await db.close()

    outcomes, count, groups = asyncio.run(scenario())
    failed = [o for o in outcomes if isinstance(o, ValueError)]
    assert len(failed) == 20 and count == 40
    assert groups < 60  # concurrent writes were committed together


def test_sqlite_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    asyncio.run(migrate(url))
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_an_edited_migration_is_refused() -> None:
    migrations = load_migrations("sqlite")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        _check({1: "not-the-checksum"}, migrations)
    with pytest.raises(MigrationError, match="does not know"):
        _check({1: migrations[0].checksum, 99: "x"}, migrations)
    assert _check({}, migrations) == migrations


def test_both_dialects_have_the_same_migrations() -> None:
    sqlite, postgres = load_migrations("sqlite"), load_migrations("postgres")
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]


def test_numbers_taken_in_a_group_stay_gapless_when_units_fail(tmp_path: Path) -> None:
    """A group takes counter numbers in memory after its first unit and writes the counter back once;
    a failing unit (or a rolled-back savepoint) gives its number back, as its rolled-back row would."""
    url = f"sqlite:///{tmp_path}/s.db"

    async def scenario() -> tuple[list[object], list[object], int]:
        await migrate(url)
        db = SQLiteDatabase.open(url)
        try:

            def take(fail: bool, nested_fail: bool = False):
                async def unit(tx):
                    if nested_fail:
                        try:
                            async with tx.savepoint():
                                await tx.next_number("ws_1", "test", "n", 1001)
                                raise ValueError("nested")
                        except ValueError:
                            pass
                    number = await tx.next_number("ws_1", "test", "n", 1001)
                    if fail:
                        raise ValueError("boom")
                    return number

                return unit

            first = await asyncio.gather(
                *(db.write(take(fail=i % 4 == 1, nested_fail=i % 5 == 2)) for i in range(40)), return_exceptions=True
            )
            second = await asyncio.gather(*(db.write(take(fail=False)) for _ in range(5)))
            stored = await db.read(lambda tx: tx.fetchval("SELECT value FROM counters WHERE name = 'n'"))
            return first, list(second), stored
        finally:
            await db.close()

    first, second, stored = asyncio.run(scenario())
    taken = [n for n in first if isinstance(n, int)]
    assert len(taken) == 30 and sorted(taken) == list(range(1001, 1031))
    assert second == list(range(1031, 1036)) and stored == 1035


def test_checkpoints_after_commit_keep_the_wal_bounded_under_two_writers(tmp_path: Path) -> None:
    """Checkpoints run after COMMIT released the writers' lock (PASSIVE); two writers taking turns
    may keep one from ever copying the whole WAL, so past a bound it is checkpointed holding the lock
    and the WAL starts over. Everything written is still there."""
    url = f"sqlite:///{tmp_path}/s.db"
    pages = 200  # the bound, in WAL frames (4 KiB pages)

    async def scenario() -> tuple[int, int, list[int]]:
        await migrate(url)
        dbs = [SQLiteDatabase.open(url) for _ in range(2)]
        for db in dbs:  # checkpoint after every commit, and hold the lock past `pages`
            db._writer._checkpoint_every = 0.0
            db._writer._checkpoint_locked_pages = pages
        frames_seen: list[int] = []
        try:

            def insert(n: int):
                async def unit(tx):
                    await tx.execute(
                        "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, 0)", f"ws_{n}", "w" * 2000
                    )

                return unit

            for batch in range(60):
                await asyncio.gather(*(dbs[i % 2].write(insert(batch * 40 + i)) for i in range(40)))
                wal = Path(f"{tmp_path}/s.db-wal").stat().st_size
                frames_seen.append(wal // 4120)
            count = await dbs[0].read(lambda tx: tx.fetchval("SELECT count(*) FROM workspaces"))
            # A checkpoint that copied the whole WAL: nothing is left only in the WAL.
            conn = sqlite3.connect(f"{tmp_path}/s.db")
            _busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            conn.close()
            return count, frames - copied, frames_seen
        finally:
            for db in dbs:
                await db.close()

    count, left, frames_seen = asyncio.run(scenario())
    assert count == 2400 and left == 0
    # ~4.8 MB of rows: without checkpoints the WAL grows to ~1,700 frames; it is reused from its start.
    assert max(frames_seen) < 2 * pages, frames_seen
