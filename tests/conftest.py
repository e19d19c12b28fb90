"""Fixtures: every end-to-end test runs once against SQLite and once against PostgreSQL, each through
real HTTP to a real `stateset-server serve` process.

Without a reachable PostgreSQL the PostgreSQL half is skipped with a message, except under CI=true,
where it fails: CI must exercise both engines.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support import (
    PG_ADMIN_URL,
    ServerProcess,
    Workspace,
    create_pg_database,
    drop_pg_database,
    new_workspace,
    postgres_reachable,
)

# The pricing every test server uses: the Orders API example's 8.75 % tax and 9.99 flat shipping,
# free from 1,500.00 upwards.
PRICING_ENV = {
    "STATESET_TAX_RATE": "0.0875",
    "STATESET_SHIPPING_RATE": "9.99",
    "STATESET_FREE_SHIPPING_OVER": "1500",
}


def _require_postgres() -> None:
    if postgres_reachable():
        return
    message = f"PostgreSQL is not reachable at {PG_ADMIN_URL} (set STATESET_TEST_PG_URL to point elsewhere)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true requires the PostgreSQL tests to run", pytrace=False)
    pytest.skip(f"{message}; skipping the PostgreSQL half of the suite")


def make_database_url(engine: str, folder: str) -> str:
    if engine == "sqlite":
        return f"sqlite:///{folder}/stateset.db"
    _require_postgres()
    return create_pg_database()


def dispose_database_url(url: str) -> None:
    if url.startswith("postgresql://"):
        drop_pg_database(url)


@contextmanager
def servers_on_new_database(
    engine: str, folder: str, env: dict[str, str], count: int = 1
) -> Iterator[list[ServerProcess]]:
    """`count` server processes sharing one new database of `engine`; all stopped and the database
    dropped afterwards."""
    url = make_database_url(engine, folder)
    started: list[ServerProcess] = []
    try:
        for _ in range(count):
            started.append(ServerProcess(url, env=env).start())
        yield started
    finally:
        for process in reversed(started):
            process.stop()
        dispose_database_url(url)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with servers_on_new_database(engine, str(tmp_path_factory.mktemp(f"server-{engine}")), PRICING_ENV) as (one,):
        yield one


@pytest.fixture
def fresh_database(engine: str, tmp_path: object) -> Iterator[str]:
    """An empty database of the current engine, for tests that start their own server."""
    url = make_database_url(engine, str(tmp_path))
    try:
        yield url
    finally:
        dispose_database_url(url)


@pytest.fixture
def ws(server: ServerProcess) -> Iterator[Workspace]:
    workspace = new_workspace(server)
    try:
        yield workspace
    finally:
        workspace.close()


@pytest.fixture
def other_ws(server: ServerProcess) -> Iterator[Workspace]:
    workspace = new_workspace(server)
    try:
        yield workspace
    finally:
        workspace.close()
