"""The storage spine on a real SQLite file: group commit, savepoint isolation, migrations."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from stateset_server.storage import sqlite as sqlite_module
from stateset_server.storage.database import Stale, StorageUnavailable
from stateset_server.storage.migrate import MigrationError, _check, load_migrations, migrate
from stateset_server.storage.sqlite import MMAP_SIZE, SQLiteDatabase, connect, run_sync
from stateset_server.storage.wakeup import WriteWakeups


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


def _counted_insert(runs: dict[str, int], name: str, error: Callable[[int], Exception | None]):
    """A unit that counts its runs and inserts a workspace named after itself and the run, then
    raises `error(run)` if that is not None, else returns the run's number."""

    async def unit(tx):
        run = runs[name] = runs.get(name, 0) + 1
        await tx.execute("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, 0)", f"{name}_{run}", name)
        failure = error(run)
        if failure is not None:
            raise failure
        return run

    return unit


def _run_units(url: str, units: list) -> tuple[list[object], list[str], int, list[str]]:
    """The units written at once (one group), then a group of five that all succeed: outcomes, the
    workspaces' ids, the writer's retries, and the statements the second group ran."""
    statements: list[str] = []

    async def scenario() -> tuple[list[object], list[str], int, list[str]]:
        await migrate(url)
        db = SQLiteDatabase.open(url)
        try:
            outcomes = await asyncio.gather(*(db.write(unit) for unit in units), return_exceptions=True)
            retries = db._writer.retries
            db._writer._conn.set_trace_callback(statements.append)
            await asyncio.gather(*(db.write(_counted_insert({}, f"ok{i}", lambda _run: None)) for i in range(5)))
            rows = await db.read(lambda tx: tx.fetch("SELECT id FROM workspaces WHERE name NOT LIKE 'ok%' ORDER BY id"))
            return outcomes, [row[0] for row in rows], retries, statements
        finally:
            await db.close()

    return asyncio.run(scenario())


def test_a_failing_unit_rolls_its_group_back_once_and_only_its_writes_are_undone(tmp_path: Path) -> None:
    """Units run without savepoints; when one fails the group is rolled back and run again, the ones
    before it as before and it and the later ones each in a savepoint: one retry, its own writes
    undone, everyone else's kept. A group where nothing fails takes no savepoint at all."""
    runs: dict[str, int] = {}
    boom = ValueError("boom")
    units = [_counted_insert(runs, f"u{i}", lambda _run, i=i: boom if i == 4 else None) for i in range(10)]
    outcomes, ids, retries, statements = _run_units(f"sqlite:///{tmp_path}/s.db", units)
    assert [o if isinstance(o, int) else type(o) for o in outcomes] == [2, 2, 2, 2, ValueError, 1, 1, 1, 1, 1]
    assert [runs[f"u{i}"] for i in range(10)] == [2, 2, 2, 2, 2, 1, 1, 1, 1, 1] and retries == 1
    assert ids == ["u0_2", "u1_2", "u2_2", "u3_2", "u5_1", "u6_1", "u7_1", "u8_1", "u9_1"]
    assert not [s for s in statements if "SAVEPOINT" in s] and "COMMIT" in statements


def test_a_unit_that_raises_stale_has_its_writes_undone_and_runs_again(tmp_path: Path) -> None:
    """`Stale` out of a transaction function means "decided on a state that changed": SQLite undoes
    what the function wrote and runs it again, as PostgreSQL does; one that stays stale fails alone
    with StorageUnavailable after a few runs, and its neighbours commit."""
    runs: dict[str, int] = {}
    plan = {"a": 0, "b": 1, "c": 2, "d": 99, "e": 0}
    units = [_counted_insert(runs, name, lambda run, n=n: Stale() if run <= n else None) for name, n in plan.items()]
    outcomes, ids, retries, _statements = _run_units(f"sqlite:///{tmp_path}/s.db", units)
    assert outcomes[:3] == [2, 2, 3] and outcomes[4] == 1 and retries == 1, outcomes  # a: again after b's retry
    assert isinstance(outcomes[3], StorageUnavailable)
    assert ids == ["a_2", "b_2", "c_3", "e_1"]  # only each function's last, kept run is written


def test_sqlite_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    asyncio.run(migrate(url))
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    for readonly in (False, True):  # and the server's connections read the file through a memory map
        ours = connect(str(tmp_path / "s.db"), readonly=readonly)
        assert ours.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert ours.execute("PRAGMA mmap_size").fetchone()[0] == MMAP_SIZE > 0
        ours.close()


_ONE_WORKSPACE = "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_1', 'w', 0)"


def test_a_write_is_answered_only_after_the_wal_holding_it_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """COMMIT does not fsync; the writer fdatasyncs the WAL right after it (the lock released) and
    answers only then. Seen from inside that fdatasync: the row is committed (another connection
    reads it) while its writer is not answered yet."""
    url = f"sqlite:///{tmp_path}/s.db"
    writes: list[asyncio.Future[None]] = []
    seen: list[tuple[int, bool]] = []

    def observing_fdatasync(fd: int) -> None:
        if os.path.isdir("/proc/self/fd"):  # Linux: the WAL file is what is flushed
            assert os.readlink(f"/proc/self/fd/{fd}").endswith("s.db-wal")
        other = sqlite3.connect(tmp_path / "s.db")
        seen.append((other.execute("SELECT count(*) FROM workspaces").fetchone()[0], writes[0].done()))
        other.close()
        os.fsync(fd)

    monkeypatch.setattr(sqlite_module, "_fdatasync", observing_fdatasync)

    async def scenario() -> int:
        await migrate(url)
        db = SQLiteDatabase.open(url)
        try:
            writes.append(asyncio.ensure_future(db.write(lambda tx: tx.execute(_ONE_WORKSPACE))))
            await writes[0]
            return int(db._writer._conn.execute("PRAGMA synchronous").fetchone()[0])
        finally:
            await db.close()

    mode = asyncio.run(scenario())
    assert seen and seen[0] == (1, False)  # committed, not yet answered
    assert mode == 1  # NORMAL: the fsync is the writer's own, after COMMIT


def test_a_write_whose_flush_fails_is_not_answered_as_a_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/s.db"

    def failing_fdatasync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_module, "_fdatasync", failing_fdatasync)

    async def scenario() -> StorageUnavailable | None:
        await migrate(url)
        db = SQLiteDatabase.open(url)
        try:
            await db.write(lambda tx: tx.execute(_ONE_WORKSPACE))
        except StorageUnavailable as exc:
            return exc
        finally:
            await db.close()
        return None

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, StorageUnavailable) and "not flushed" in str(outcome)


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


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the server runs on uvloop
def test_a_wakeup_reaches_a_waiter_in_another_process(tmp_path: Path, loop: str) -> None:
    """The pipe beside the database wakes a waiting writer at once, not after its fallback."""
    path = str(tmp_path / "s.db")
    waiter = WriteWakeups.beside(path, fallback=30.0)
    assert stat.S_ISFIFO(os.stat(f"{path}-wake").st_mode)
    child = multiprocessing.get_context("spawn").Process(target=_notify_later, args=(path, 0.2))

    async def wait() -> float:
        started = time.monotonic()
        await waiter.wait()
        return time.monotonic() - started

    try:
        child.start()
        waited = (uvloop.run if loop == "uvloop" else asyncio.run)(wait())
    finally:
        child.join(10)
        waiter.close()
    assert 0.1 < waited < 10.0, waited


def _notify_later(path: str, delay: float) -> None:
    time.sleep(delay)
    WriteWakeups.beside(path).notify()


def _write_from_a_process(url: str, name: str, count: int) -> None:
    async def scenario() -> None:
        db = SQLiteDatabase.open(url)
        try:

            def take(i: int):
                async def unit(tx):
                    number = await tx.next_number("ws", "test", "n", 1)
                    await tx.execute(
                        "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)",
                        f"ws_{name}_{i}",
                        name,
                        number,
                    )

                return unit

            for batch in range(0, count, 50):  # many small groups: the processes keep taking turns
                await asyncio.gather(*(db.write(take(i)) for i in range(batch, batch + 50)))
        finally:
            await db.close()

    asyncio.run(scenario())


def test_writers_in_several_processes_take_turns_on_one_file(tmp_path: Path) -> None:
    """Three processes write at once. A process that finds the write lock taken waits on its event
    loop and goes on when woken; every unit lands once and the shared counter stays gapless."""
    url = f"sqlite:///{tmp_path}/s.db"
    asyncio.run(migrate(url))
    spawn = multiprocessing.get_context("spawn")
    children = [spawn.Process(target=_write_from_a_process, args=(url, f"p{i}", 1000)) for i in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0, 0]
    conn = sqlite3.connect(tmp_path / "s.db")
    numbers = [row[0] for row in conn.execute("SELECT created_at FROM workspaces ORDER BY created_at")]
    by_process = dict(conn.execute("SELECT name, count(*) FROM workspaces GROUP BY name").fetchall())
    conn.close()
    assert by_process == {"p0": 1000, "p1": 1000, "p2": 1000}
    assert numbers == list(range(1, 3001))


def test_a_writer_waits_out_another_programs_lock(tmp_path: Path) -> None:
    """A program that writes the file without the pipe (the sqlite3 shell, say) still holds SQLite's
    lock; the writer retries on its fallback timer and commits once it is released."""
    url = f"sqlite:///{tmp_path}/s.db"
    asyncio.run(migrate(url))
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_other', 'o', 0)")

    async def scenario() -> tuple[float, int]:
        db = SQLiteDatabase.open(url)
        try:
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, other.execute, "COMMIT")
            started = time.monotonic()
            await db.write(
                lambda tx: tx.execute("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_mine', 'm', 0)")
            )
            waited = time.monotonic() - started
            return waited, await db.read(lambda tx: tx.fetchval("SELECT count(*) FROM workspaces"))
        finally:
            await db.close()

    waited, count = asyncio.run(scenario())
    other.close()
    assert count == 2 and 0.25 < waited < 5.0, waited
