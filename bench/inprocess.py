"""CPU per API operation with HTTP taken out: the app called in this process, N requests in flight.

    .venv/bin/python bench/inprocess.py                       # SQLite in a temporary folder
    .venv/bin/python bench/inprocess.py --ops create --profile /tmp/create.prof
    .venv/bin/python bench/inprocess.py --database-url "postgresql://postgres@/postgres?host=/var/run/postgresql"
    .venv/bin/python bench/inprocess.py --database-url sqlite:////tmp/one.db --api-key sk_test_…  # twice at
        once, on a file migrated and keyed beforehand: what a second process on the same file costs each

Each request goes through the ASGI app exactly as granian would hand it over (same scope, one body
message), so auth, rate limits, idempotency, group commit and the response encoding are all on; only
the socket and the HTTP parser are not. It prints requests/s and the process's CPU µs per request
(with PostgreSQL, the database server's CPU is not in that figure). `--profile` writes a cProfile
file for the measured part of the first operation asked for.

Instructions per request, which do not move with the machine's load as CPU time does (figures here
moved ±10-15 % between identical runs):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cg.out \
        .venv/bin/python bench/inprocess.py --ops create --requests 1000 --callgrind create
    callgrind_annotate /tmp/cg.out | head     # PROGRAM TOTALS / 1000 = instructions per create
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

ORDER = (Path(__file__).parent / "wrk" / "order.json").read_bytes().strip()


class _Created(msgspec.Struct):
    id: str


class Client:
    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.auth = f"Bearer {key}".encode()
        self.counter = 0

    async def call(self, method: str, path: str, body: bytes = b"", keyed: bool = False) -> tuple[int, bytes]:
        query = b""
        if "?" in path:
            path, q = path.split("?", 1)
            query = q.encode()
        headers = [(b"host", b"127.0.0.1"), (b"authorization", self.auth)]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if keyed:
            self.counter += 1
            headers.append((b"idempotency-key", f"inproc-{os.getpid()}-{self.counter}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 0
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    message = await outbox.get()
    assert message["type"] == "lifespan.startup.complete", message
    return task, inbox


async def run(opts: argparse.Namespace) -> None:
    from stateset_server.app import create_app
    from stateset_server.settings import Settings
    from stateset_server.storage import with_database
    from stateset_server.storage.database import sqlite_path
    from stateset_server.storage.migrate import migrate
    from stateset_server.workspaces import service

    url = opts.database_url
    await migrate(url)
    key = await with_database(url, service.bootstrap)
    secret = key.secret if key is not None else opts.api_key
    assert secret is not None, "the database must be new, or --api-key given"
    os.environ["STATESET_DATABASE_URL"] = url
    app = create_app(Settings.from_env())
    task, inbox = await lifespan(app)
    client = Client(app, secret)

    async def many(n: int, make: Any) -> list[tuple[int, bytes]]:
        results: list[tuple[int, bytes]] = []
        queue = list(range(n))

        async def worker() -> None:
            while queue:
                i = queue.pop()
                results.append(await make(i))

        await asyncio.gather(*(worker() for _ in range(opts.concurrency)))
        return results

    created: list[str] = []
    paid: list[str] = []
    n = opts.requests

    async def create(_i: int) -> tuple[int, bytes]:
        status, body = await client.call("POST", "/v1/orders", ORDER, keyed=True)
        if status == 201:
            created.append(msgspec.json.decode(body, type=_Created).id)
        return status, body

    async def get(i: int) -> tuple[int, bytes]:
        return await client.call("GET", f"/v1/orders/{created[i % len(created)]}")

    async def lst(_i: int) -> tuple[int, bytes]:
        return await client.call("GET", "/v1/orders?status=pending&limit=20")

    wallet = "0x" + "ab" * 20
    pay_body = json.dumps({"payment_method": {"type": "usdc", "wallet_address": wallet}}).encode()

    async def pay(i: int) -> tuple[int, bytes]:
        order = created[i]
        status, body = await client.call("POST", f"/v1/orders/{order}/pay", pay_body, keyed=True)
        if status == 200:
            paid.append(order)
        return status, body

    async def fulfil(i: int) -> tuple[int, bytes]:
        return await client.call("POST", f"/v1/orders/{paid[i]}/fulfill", b"{}", keyed=True)

    ops = {"create": create, "get": get, "list": lst, "pay": pay, "fulfil": fulfil}
    wanted = opts.ops.split(",")
    # Enough orders for every phase: creates first (also the warm-up), a faucet for the pays.
    await many(max(n, 200), create)
    if "pay" in wanted or "fulfil" in wanted:
        for _ in range(1 + 3 * n // 10_000):  # ~70 USDC an order; the faucet gives at most 1,000,000
            status, body = await client.call(
                "POST", "/v1/sandbox/faucet", json.dumps({"wallet_address": wallet, "amount": "1000000"}).encode()
            )
            assert status in (200, 201), body
    profiled = False
    wal: WalPages | None = None
    for op in wanted:
        if op in ("pay", "fulfil") and len(created) < 2 * n:
            await many(2 * n - len(created) + n, create)
        if op == "fulfil" and len(paid) < n:
            await many(n, pay)
            created[:] = created[n:]
        if op == "pay":
            offset = len(paid)
            source = created[:]
            created[:] = source[offset:]
        profiler = cProfile.Profile() if opts.profile and not profiled else None
        writer = getattr(app.state.db._db, "_writer", None)  # SQLite's group-commit writer
        if writer is not None and wal is None:
            wal = WalPages(writer, sqlite_path(url))
        locked = (writer.run_seconds, writer.units, writer.groups, writer.commit_seconds, wal.pages) if wal else None
        started_cpu, started = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        if opts.callgrind:
            _instrument(op == opts.callgrind)
        results = await many(n, ops[op])
        if opts.callgrind:
            _instrument(False)
        if profiler:
            profiler.disable()
            profiler.dump_stats(opts.profile)
            profiled = True
        cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
        bad = [r for r in results if r[0] >= 400]
        held = ""
        if locked and writer.units > locked[1]:
            units, groups = writer.units - locked[1], writer.groups - locked[2]
            held = (
                f"  units ran {(writer.run_seconds - locked[0]) / units * 1e6:5.0f} µs each under the write lock"
                f" ({units / max(groups, 1):.1f} a group), COMMIT"
                f" {(writer.commit_seconds - locked[3]) / units * 1e6:.0f} µs a unit,"
                f" {(wal.pages - locked[4]) / units:.2f} WAL pages a unit"
            )
        print(
            f"{op:8s} {n / wall:8,.0f} req/s  {cpu / n * 1e6:6.0f} µs CPU/req{held}  errors {len(bad)}"
            + (f"  e.g. {bad[0]}" if bad else ""),
            flush=True,
        )
        if op == "pay":
            created[:] = created[n:]
    await inbox.put({"type": "lifespan.shutdown"})
    await task


class WalPages:
    """Pages the writer's COMMITs append to the WAL, read from the WAL-index header in the -shm file
    (mxFrame at byte 16, the salts at 32-39: https://www.sqlite.org/walformat.html). A write's pages
    are most of what committing it costs (copying, checksums, the fsync after COMMIT) and what checkpoints copy again;
    unlike seconds, they do not move with the machine's load."""

    def __init__(self, writer: Any, database: str) -> None:
        self.pages = 0
        fd = os.open(database + "-shm", os.O_RDONLY)
        commit_group = writer._commit_group

        def counted(group: Any) -> None:
            before = os.pread(fd, 24, 16)
            commit_group(group)
            after = os.pread(fd, 24, 16)
            frames = int.from_bytes(after[:4], "little")
            if after[16:24] == before[16:24]:  # same salts: the WAL did not start over
                frames -= int.from_bytes(before[:4], "little")
            self.pages += frames

        writer._commit_group = counted


def _instrument(on: bool) -> None:
    """Under `valgrind --tool=callgrind --instr-atstart=no`: count instructions from here (or stop)."""
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True, capture_output=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url")
    parser.add_argument("--ops", default="create,get,list,pay,fulfil")
    parser.add_argument(
        "--api-key", help="a secret key of an existing database (e.g. a second process on the same SQLite file)"
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", help="cProfile output of the first operation")
    parser.add_argument(
        "--callgrind",
        metavar="OP",
        help="count instructions of OP only: run under valgrind --tool=callgrind --instr-atstart=no"
        " (see the docstring); Ir / --requests is the operation's instructions per request",
    )
    opts = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        if not opts.database_url:
            opts.database_url = f"sqlite:///{tmp}/bench.db"
        asyncio.run(run(opts))


if __name__ == "__main__":
    sys.exit(main())
