"""Look-ups of one row by key (`Database.lookup`, as GET /v1/orders/{id} reads its document): the same
answers on both engines, PostgreSQL's concurrent look-ups sent together, and never a row older than
a write acknowledged before the look-up was asked for."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stateset_server.storage import open_database
from stateset_server.storage.database import Lookup, StorageUnavailable
from tests.conftest import dispose_database_url, make_database_url

THING = Lookup(
    one="SELECT id, label FROM things WHERE id = $1",
    many="SELECT id, label FROM things WHERE id = ANY($1::text[])",
)


async def _with_things(url: str, count: int, scenario: Any) -> Any:
    db = await open_database(url)
    try:

        async def setup(tx: Any) -> None:
            await tx.execute("CREATE TABLE things (id TEXT PRIMARY KEY, label TEXT NOT NULL)")
            await tx.executemany(
                "INSERT INTO things (id, label) VALUES ($1, $2)", [(f"t{n}", f"label {n}") for n in range(count)]
            )

        await db.write(setup)
        return await scenario(db)
    finally:
        await db.close()


def _run(engine: str, tmp_path: Path, count: int, scenario: Any) -> Any:
    url = make_database_url(engine, str(tmp_path))
    try:
        return asyncio.run(_with_things(url, count, scenario))
    finally:
        dispose_database_url(url)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_concurrent_lookups_each_get_their_own_row(engine: str, tmp_path: Path) -> None:
    keys = [f"t{random.randrange(120)}" for _ in range(400)]  # ids 100-119 do not exist; many repeat

    async def scenario(db: Any) -> tuple[list[Any], int | None]:
        rows = await asyncio.gather(*(db.lookup(THING, key) for key in keys))
        lookups = getattr(db, "_lookups", {}).get(THING)
        return [None if row is None else (row[0], row[1]) for row in rows], lookups and lookups.statements

    found, statements = _run(engine, tmp_path, 100, scenario)
    assert found == [(key, f"label {key[1:]}") if int(key[1:]) < 100 else None for key in keys]
    if engine == "postgres":  # 400 look-ups asked for at once went as a few statements
        assert statements is not None and 1 <= statements <= 10


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_key_no_row_can_have_finds_nothing_and_hurts_no_other_lookup(engine: str, tmp_path: Path) -> None:
    """A NUL (a path id can carry one, as %00) cannot be in PostgreSQL text: sent, it would fail the
    statement and every look-up sent with it."""
    keys = ["t1", "t\x002", "t3"] * 20

    async def scenario(db: Any) -> list[Any]:
        rows = await asyncio.gather(*(db.lookup(THING, key) for key in keys))
        return [None if row is None else row[0] for row in rows]

    assert _run(engine, tmp_path, 10, scenario) == ["t1", None, "t3"] * 20


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_lookup_sees_every_write_acknowledged_before_it(engine: str, tmp_path: Path) -> None:
    async def scenario(db: Any) -> list[str]:
        stop = asyncio.Event()
        missed: list[str] = []

        async def flood() -> None:  # keeps statements on their way, so look-ups wait for the next
            while not stop.is_set():
                await asyncio.gather(*(db.lookup(THING, f"t{n}") for n in range(20)))

        async def write_then_read(n: int) -> None:
            key = f"new{n}"

            async def insert(tx: Any) -> None:
                await tx.execute("INSERT INTO things (id, label) VALUES ($1, $2)", key, "fresh")

            await db.write(insert)
            row = await db.lookup(THING, key)
            if row is None or row[1] != "fresh":
                missed.append(key)

        floods = [asyncio.create_task(flood()) for _ in range(4)]
        try:
            await asyncio.gather(*(write_then_read(n) for n in range(200)))
        finally:
            stop.set()
            await asyncio.gather(*floods)
        return missed

    assert _run(engine, tmp_path, 20, scenario) == []


def test_a_failed_statement_fails_each_of_its_lookups_and_the_next_ones_go_on(tmp_path: Path) -> None:
    broken = Lookup(one="SELECT id FROM nowhere WHERE id = $1", many="SELECT id FROM nowhere WHERE id = ANY($1)")

    async def scenario(db: Any) -> tuple[list[Any], Any]:
        failed = await asyncio.gather(*(db.lookup(broken, f"t{n}") for n in range(30)), return_exceptions=True)
        return failed, await db.lookup(THING, "t3")

    failed, row = _run("postgres", tmp_path, 10, scenario)
    assert all(isinstance(result, asyncpg.UndefinedTableError) for result in failed)
    assert (row[0], row[1]) == ("t3", "label 3")


def test_an_unreachable_database_is_unavailable_to_every_lookup(tmp_path: Path) -> None:
    async def scenario(db: Any) -> list[Any]:
        await db._pool.close()  # its connections are gone, and no new one can be opened:
        db._pool._url = "postgresql://postgres@127.0.0.1:1/nowhere"
        return await asyncio.gather(*(db.lookup(THING, f"t{n}") for n in range(10)), return_exceptions=True)

    results = _run("postgres", tmp_path, 10, scenario)
    assert results and all(isinstance(result, StorageUnavailable) for result in results)
