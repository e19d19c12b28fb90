"""Test support: real server processes, real databases, and workspaces with keys of every kind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
import httpx

from stateset_server.storage import with_database
from stateset_server.workspaces import service

PG_ADMIN_URL = os.environ.get("STATESET_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`stateset-server serve` in its own process group, exactly as a user starts it."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.workers = workers
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stateset_server",
                "serve",
                "--port",
                str(self.port),
                "--database-url",
                self.database_url,
                "--workers",
                str(self.workers),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            start_new_session=True,
        )
        self._drainer = threading.Thread(target=self._drain, args=(self.proc,), daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.signal(signal.SIGKILL)
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{''.join(self.output)}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{''.join(self.output)}")

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)
        self._drainer.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    @property
    def first_key(self) -> str | None:
        keys = [line.strip() for line in self.output if line.startswith("sk_test_")]
        return keys[0] if keys else None


def from_base62(digits: str) -> int:
    """The number that base62 digits (ids, tokens: `core.ids`' alphabet) stand for."""
    value = 0
    for char in digits:
        value = value * 62 + "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".index(char)
    return value


def run(coro):
    return asyncio.run(coro)


async def _pg_reachable() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def postgres_reachable() -> bool:
    return run(_pg_reachable())


def create_pg_database() -> str:
    name = f"stateset_test_{uuid.uuid4().hex[:12]}"

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run(go())
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run(go())


@dataclass
class Workspace:
    """A fresh workspace on a running server, with helpers to mint keys and clients."""

    server: ServerProcess
    id: str
    secret: str
    clients: list[httpx.Client] = field(default_factory=list)

    def key(self, kind: str = "secret", mode: str = "test", scopes: list[str] | None = None) -> str:
        return run(_new_key(self.server.database_url, self.id, kind, mode, scopes)).secret

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {key or self.secret}"} if key != "" else {}
        client = httpx.Client(base_url=self.server.base_url, headers={**auth, **headers}, timeout=30.0)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


async def _new_key(url: str, workspace_id: str, kind: str, mode: str, scopes: list[str] | None) -> service.NewKey:
    return await with_database(
        url, lambda db: service.create_key(db, workspace_id=workspace_id, mode=mode, kind=kind, scopes=scopes)
    )


def new_workspace(server: ServerProcess) -> Workspace:
    async def action(db):
        workspace_id = await service.create_workspace(db, "test workspace")
        key = await service.create_key(db, workspace_id=workspace_id, mode="test", kind="secret")
        return workspace_id, key.secret

    workspace_id, secret = run(with_database(server.database_url, action))
    return Workspace(server, workspace_id, secret)


ORDER = {
    "customer_id": "cust_123",
    "items": [{"sku": "LAPTOP-001", "quantity": 1, "unit_price": "999.99", "description": "MacBook Pro 16-inch"}],
    "shipping_address": {
        "name": "John Doe",
        "address_line_1": "123 Main St",
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94105",
        "country": "US",
    },
    "metadata": {"channel": "web", "campaign_id": "summer_sale_2024"},
}
