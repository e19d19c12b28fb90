"""Lists on a big table: 1,000,000 orders, then the latency of typical list pages over HTTP.

    .venv/bin/python bench/list_1m.py [--database-url postgresql://…] [--orders 1000000] [--runs 200]

The orders are written straight through the storage layer (the HTTP path would take minutes and is
measured by bench/run.py); then `stateset-server serve` starts as a user would and each query runs
`--runs` times, one at a time, over loopback. Reported: p50/p95/p99 latency per query. Target: under
50 ms for a filtered, sorted first page and for a deep cursor page, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from stateset_server.core.ids import new_id
from stateset_server.storage import open_database
from stateset_server.storage.migrate import migrate
from stateset_server.workspaces import service

STATUSES = ["CREATED"] * 3 + ["PAID"] * 3 + ["FULFILLED", "SHIPPED", "DELIVERED", "CANCELLED", "REFUNDED"]
YEAR_US = 365 * 24 * 3600 * 1_000_000
ORDER_COLUMNS = (
    "id, workspace_id, mode, order_number, status, currency, customer_id, customer_email, subtotal, tax, shipping,"
    " total, metadata, version, created_at, updated_at, amount_paid, amount_refunded"
)
ITEM_COLUMNS = "id, order_id, position, sku, description, quantity, unit_price, total, metadata"


def rows(workspace_id: str, count: int, start_us: int) -> tuple[list[tuple], list[tuple]]:
    rng = random.Random(7)
    orders, items = [], []
    for n in range(count):
        created = start_us + n * (YEAR_US // count)
        order_id = new_id("ord")
        cents = rng.randint(100, 500_000)
        total = cents * 10_000
        status = rng.choice(STATUSES)
        customer = rng.randint(1, 50_000)
        paid = total if status not in ("CREATED", "CANCELLED") else 0
        orders.append(
            (order_id, workspace_id, "test", 1001 + n, status, "USD", f"cus_{customer}", f"c{customer}@example.com",
             total, 0, 0, total, "{}", 1, created, created, paid, total if status == "REFUNDED" else 0)
        )  # fmt: skip
        items.append((new_id("li"), order_id, 0, f"SKU-{cents % 997}", None, 1, total, total, "{}"))
    return orders, items


async def fill(url: str, count: int) -> str:
    await migrate(url)
    db = await open_database(url)
    try:
        workspace_id = await service.create_workspace(db, "bench")
        key = await service.create_key(db, workspace_id=workspace_id, mode="test", kind="secret")
    finally:
        await db.close()
    start = time.time_ns() // 1000 - YEAR_US
    orders, items = rows(workspace_id, count, start)
    if url.startswith("postgres"):
        conn = await asyncpg.connect(url)
        try:
            await conn.copy_records_to_table(
                "orders", records=orders, columns=[c.strip() for c in ORDER_COLUMNS.split(",")]
            )
            await conn.copy_records_to_table(
                "order_items", records=items, columns=[c.strip() for c in ITEM_COLUMNS.split(",")]
            )
            await conn.execute("ANALYZE orders; ANALYZE order_items")
        finally:
            await conn.close()
    else:
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.executemany(f"INSERT INTO orders ({ORDER_COLUMNS}) VALUES ({', '.join('?' * 18)})", orders)
            conn.executemany(f"INSERT INTO order_items ({ITEM_COLUMNS}) VALUES ({', '.join('?' * 9)})", items)
        conn.execute("ANALYZE")
        conn.close()
    return key.secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(client: httpx.Client, params: dict, runs: int) -> tuple[float, float, float, int]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get("/v1/orders", params=params)
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return (
        statistics.median(timings),
        percentile(timings, 0.95),
        percentile(timings, 0.99),
        len(response.json()["data"]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="postgresql://… (default: a fresh SQLite file)")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="stateset-list-"))
    admin_url, database = None, None
    url = f"sqlite:///{folder}/list.db"
    if args.database_url:
        admin_url = args.database_url
        database = f"stateset_list_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg(admin_url, f'CREATE DATABASE "{database}"'))
        url = admin_url.rsplit("/", 1)[0] + f"/{database}"
    started = time.perf_counter()
    secret = asyncio.run(fill(url, args.orders))
    print(f"filled {args.orders:,} orders in {time.perf_counter() - started:.1f}s ({url.split(':')[0]})", flush=True)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "stateset_server", "serve", "--port", str(port), "--database-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}, timeout=30) as client:
            middle = client.get("/v1/orders", params={"limit": 1, "offset": 10_000}).json()
            half = client.get("/v1/orders", params={"limit": 1, "sort": "created_at", "order": "asc", "offset": 10_000})
            deep_time = half.json()["data"][0]["created_at"]
            # A cursor half-way down the table: position taken from a filtered page, then followed unfiltered.
            deep = client.get(
                "/v1/orders", params={"limit": 20, "created_before": _shift(deep_time, args.orders)}
            ).json()
            queries = {
                "first page, newest first": {"limit": 20},
                "status=paid, sort=total desc": {"status": "paid", "sort": "total", "order": "desc", "limit": 20},
                "status_in + amount range, newest first": {
                    "status_in": "shipped,delivered", "amount_min": "100", "amount_max": "2000", "limit": 20,
                },
                "customer_id (Orders API filter)": {"customer_id": "cus_4242", "limit": 50},
                "deep cursor page (~500,000 rows in)": {"limit": 20, "cursor": deep["pagination"]["next_cursor"]},
                "deep cursor, sort=total asc": {
                    "limit": 20, "sort": "total", "cursor": client.get(
                        "/v1/orders", params={"limit": 20, "sort": "total", "total_gte": "2500"}
                    ).json()["pagination"]["next_cursor"],
                },
                "offset 10,000 (the maximum)": {"limit": 20, "offset": 10_000},
            }  # fmt: skip
            del middle
            print(f"{'query':42} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'rows':>5}")
            for name, params in queries.items():
                measure(client, params, 10)  # warm caches
                p50, p95, p99, found = measure(client, params, args.runs)
                print(f"{name:42} {p50:8.2f} {p95:8.2f} {p99:8.2f} {found:5d}", flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if database:
            asyncio.run(_pg(admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    return 0


def _shift(iso_time: str, orders: int) -> str:
    """A time about half-way through the year of orders (the sample is 10,000 orders in)."""
    from datetime import datetime, timedelta

    moment = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    return (moment + timedelta(days=365 * (0.5 - 10_000 / orders))).isoformat().replace("+00:00", "Z")


async def _pg(admin_url: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
