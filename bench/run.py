"""Load-test stateset-server over loopback with wrk and compare it with the same stack's hello-JSON ceiling.

    .venv/bin/python bench/run.py [--phases hello,get,list,create,pay,fulfil,sigkill] [--connections 64]
                                  [--duration 10] [--warmup 3] [--half-duration 5] [--workers 1]
                                  [--orders 2000] [--pay-orders N] [--max-rate 8000] [--wallets 64]
                                  [--kill-after 2] [--database-url postgresql://...]
                                  [--compare-json SQLITE.json] [--json-out PATH]

Phases, in this order (see bench/README.md):
  hello    GET / on bench/hello_app.py: one Starlette route under granian, configured as the real server
  get      GET /v1/orders/{id} for a random one of the --orders pre-created (paid) orders per request
  list     GET /v1/orders?status=paid&limit=20 (matches every one of those orders)
  create   POST /v1/orders, each with its own Idempotency-Key
  pay      POST /v1/orders/{id}/pay with a USDC wallet payment, each request a different unpaid order
  fulfil   POST /v1/orders/{id}/fulfill, each request a different paid order
  sigkill  POST /v1/orders under load, the server killed with kill -9 in the middle of it
Each API operation: a warm-up run (discarded), the measured closed-loop peak, then a shorter
rate-limited run at half the measured peak whose p95 is compared with the spec's limit.
Afterwards (always by kill -9) every acknowledged create, pay and fulfil must be in the database.
The API server is `stateset-server serve` on a fresh database (a temporary SQLite file, or a new
PostgreSQL database created next to --database-url and dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from http.client import HTTPConnection
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
WRK_DIR = BENCH_DIR / "wrk"
ORDER = json.loads((WRK_DIR / "order.json").read_bytes())
WRK_INSTALL = "apt-get update && apt-get install -y wrk"
WRK_TIMEOUT = "10s"  # well above any expected latency, so slow requests are measured, not dropped
HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOG_ERROR = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception")

OPS = ("get", "list", "create", "pay", "fulfil")
PHASES = ("hello", *OPS, "sigkill")
LIST_PATH = "/v1/orders?status=paid&limit=20"
LABELS = {
    "hello": "hello-JSON ceiling",
    "get": "GET /v1/orders/{id}",
    "list": "GET /v1/orders?status=paid",
    "create": "POST /v1/orders",
    "pay": "POST …/{id}/pay",
    "fulfil": "POST …/{id}/fulfill",
    "sigkill": "create + kill -9",
}
BATCH = 1000  # the bulk endpoints' maximum
FAUCET_MAX = Decimal(1_000_000)  # the faucet's maximum per call
PROBE_SECONDS = 1  # the half-rate runs' calibration run
FULFIL_BODY = json.dumps({"tracking_number": "1ZBENCH0000000000", "carrier": "UPS"}, separators=(",", ":"))


@dataclass(frozen=True)
class Spec:
    """The spec's figures for SQLite: a throughput floor (None: no target) and a p95 ceiling at moderate load."""

    rps: int | None
    p95_ms: float
    name: str


SPEC = {
    "get": Spec(20_000, 5, "query"),
    "list": Spec(None, 5, "query"),
    "create": Spec(8_000, 45, "create"),
    "pay": Spec(6_000, 65, "pay"),
    "fulfil": Spec(8_000, 25, "status update"),
}


# --- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One measured wrk run. Latencies in milliseconds."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int  # wrk counts responses with status >= 400; the API sends no 3xx
    socket_errors: int  # connect, read, write errors and timeouts
    sent: int = 0  # requests the Lua script built (0 for static scripts): an upper bound of what the server saw
    wrapped: int = 0  # id-walking scripts: requests past the end of their id list (repeats, answered 409)
    server_cpu_us: float | None = None  # the server's CPU time a request: all its processes (not PostgreSQL's)
    server_switches: float | None = None  # context switches a request, all the server's threads (same scope)

    @property
    def acknowledged(self) -> int:
        return self.requests - self.non_2xx

    @classmethod
    def from_wrk(cls, raw: dict[str, Any]) -> Result:
        seconds = raw["duration_us"] / 1e6
        lat = raw["latency_us"]
        errors = raw["errors"]
        return cls(
            requests=raw["requests"],
            seconds=round(seconds, 3),
            rps=round(raw["requests"] / seconds, 1),
            p50_ms=lat["p50"] / 1000,
            p95_ms=lat["p95"] / 1000,
            p99_ms=lat["p99"] / 1000,
            mean_ms=round(lat["mean"] / 1000, 3),
            max_ms=lat["max"] / 1000,
            non_2xx=errors["status"],
            socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
            sent=raw.get("sent", 0),
            wrapped=raw.get("wrapped", 0),
        )


@dataclass(frozen=True)
class HalfRate:
    """The rate-limited run at half the measured peak, after a short probe that calibrates wrk's delay."""

    target_rps: float
    delay_ms: float
    probe: Result
    result: Result


@dataclass(frozen=True)
class OpRun:
    warmup: Result | None
    peak: Result
    half: HalfRate | None

    def runs(self) -> list[Result]:
        runs = [self.warmup, self.peak, *((self.half.probe, self.half.result) if self.half else ())]
        return [r for r in runs if r is not None]


@dataclass
class ApiRun:
    ops: dict[str, OpRun] = field(default_factory=dict)
    sigkill: Result | None = None
    precreated: int = 0  # orders created outside the measured runs (bulk, for get/list and the pools)
    prepaid: int = 0  # of which paid outside the measured runs (bulk create-and-pay, bulk pay)
    counts: dict[str, int] = field(default_factory=dict)  # read from the database after the kill -9
    log_errors: list[str] = field(default_factory=list)
    log_text: str = ""
    notes: list[str] = field(default_factory=list)


# --- processes ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus STATESET_* settings, so a stray tax rate cannot skew a run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESET_")}
    env.update(extra)
    return env


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal the whole process group (granian's main process and its workers), then make sure it is gone."""
    with suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, sig)
        proc.wait(timeout=grace)
    with suppress(ProcessLookupError):  # workers that outlived their parent, or a parent that ignored SIGTERM
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def process_group(cmd: list[str], log_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` in its own session with output to `log_path`; the group is always killed on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def wait_for_log_line(proc: subprocess.Popen[bytes], log_path: Path, pattern: str, timeout: float = 60.0) -> str:
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = regex.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(0)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server did not print /{pattern}/; its output:\n{log_path.read_text(errors='replace')}")


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never returned 200; server output:\n{log_path.read_text(errors='replace')}")


def server_command() -> list[str]:
    """`stateset-server` from this interpreter's environment, as a user would run it."""
    script = Path(sys.executable).with_name("stateset-server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "stateset_server"]


# --- wrk ------------------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"bench: wrk is not installed. Install it with:\n  sudo sh -c '{WRK_INSTALL}'")
    print(f"bench: wrk is not installed; running as root, so installing it: {WRK_INSTALL}", flush=True)
    subprocess.run(["sh", "-c", WRK_INSTALL], check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("bench: installing wrk did not put it on PATH")
    return found


@dataclass(frozen=True)
class GroupUsage:
    """What the processes of one process group have used so far (their threads included), from /proc."""

    cpu_seconds: float  # user + system time
    switches: int  # context switches, voluntary (waiting: a lock, I/O, a wake-up) and involuntary (preempted)


def group_usage(pgid: int) -> GroupUsage:
    """The CPU time and context switches of every process in the process group `pgid`. A thread that
    ended meanwhile takes its switches with it; the server's threads live as long as it does."""
    ticks = switches = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()  # from the state (field 3) on; the name may hold spaces
            if int(fields[2]) != pgid:  # field 5, pgrp
                continue
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15, utime and stime
            # A process's own status counts its first thread's switches only: each thread's, then.
            for task in os.scandir(Path(entry.path, "task")):
                switches += _task_switches(Path(task.path, "status").read_text())
        except OSError:  # gone meanwhile
            continue
    return GroupUsage(ticks / os.sysconf("SC_CLK_TCK"), switches)


def _task_switches(status: str) -> int:
    total = 0
    for line in status.splitlines():
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
            total += int(line.split()[1])
    return total


@dataclass(frozen=True)
class WrkJob:
    """What one wrk invocation runs; `seconds` and the delay are given per run. With `pgid` (the server's
    process group), the result also carries the server's CPU time and context switches a request over
    the run."""

    script: str
    url: str
    connections: int
    headers: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    pgid: int | None = None

    def start(self, seconds: int, delay_ms: float | None = None) -> subprocess.Popen[str]:
        cmd = ["wrk", "-t1", f"-c{self.connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}"]
        cmd += ["-s", str(WRK_DIR / self.script)]
        for header in self.headers:
            cmd += ["-H", header]
        cmd += [self.url, "--", *self.args]
        env = dict(os.environ)
        env.pop("BENCH_DELAY_MS", None)
        if delay_ms is not None:
            env["BENCH_DELAY_MS"] = f"{delay_ms:.3f}"
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def run(self, seconds: int, delay_ms: float | None = None) -> Result:
        if self.pgid is None:
            return wrk_result(self.start(seconds, delay_ms), seconds)
        before = group_usage(self.pgid)
        result = wrk_result(self.start(seconds, delay_ms), seconds)
        if not result.requests:
            return result
        after = group_usage(self.pgid)
        return replace(
            result,
            server_cpu_us=round((after.cpu_seconds - before.cpu_seconds) * 1e6 / result.requests, 1),
            server_switches=round((after.switches - before.switches) / result.requests, 2),
        )


def wrk_result(proc: subprocess.Popen[str], seconds: int) -> Result:
    stdout, stderr = proc.communicate(timeout=seconds + 60)
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return Result.from_wrk(json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(f"wrk printed no result (exit {proc.returncode}):\n{stdout}\n{stderr}")


def half_rate(
    label: str, run: Callable[[int, float | None], Result], peak: Result, opts: argparse.Namespace
) -> HalfRate:
    """A rate-limited run at half `peak`'s rate. wrk has no fixed-rate mode; its delay() hook holds a
    connection for some milliseconds before each request, so a connection's cycle is the delay plus the
    response time. A short probe with delay = C/R measures the response time at about that load, and
    the real run's delay is C/R minus it, so the achieved rate comes out close to the target."""
    target = peak.rps / 2
    cycle_ms = 1000 * opts.connections / target
    print(f"  {label}: half rate, {target:,.0f} req/s: probe {PROBE_SECONDS} s", flush=True)
    probe = run(PROBE_SECONDS, cycle_ms)
    delay_ms = max(0.0, cycle_ms - probe.mean_ms)
    print(f"  {label}: half rate, {target:,.0f} req/s (delay {delay_ms:.2f} ms): {opts.half_duration} s", flush=True)
    return HalfRate(round(target, 1), round(delay_ms, 3), probe, run(opts.half_duration, delay_ms))


def measure_op(label: str, run: Callable[[int, float | None], Result], opts: argparse.Namespace) -> OpRun:
    warmup = None
    if opts.warmup > 0:
        print(f"  {label}: warm-up {opts.warmup} s", flush=True)
        warmup = run(opts.warmup, None)
    print(f"  {label}: measuring {opts.duration} s", flush=True)
    peak = run(opts.duration, None)
    half = half_rate(label, run, peak, opts) if opts.half_duration > 0 and peak.rps > 0 else None
    return OpRun(warmup, peak, half)


# --- databases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchDatabase:
    url: str  # what the server is given
    engine: str
    query: Callable[[str], list[tuple[Any, ...]]]

    def scalar(self, sql: str) -> int:
        return int(self.query(sql)[0][0])

    def settle(self) -> None:
        """After a bulk load, on PostgreSQL: VACUUM (ANALYZE), as pgbench does before its runs, so each
        run starts from tables with statistics and no dead rows left by the load (what autovacuum
        gives a production server within a minute or so; these machines run PostgreSQL with it off),
        then CHECKPOINT, so the load's dirty pages are not written out during the measured run."""
        if self.engine == "postgresql":
            import asyncpg

            self.query("VACUUM (ANALYZE)")
            try:
                self.query("CHECKPOINT")
            except asyncpg.InsufficientPrivilegeError:  # a superuser's (or pg_checkpoint's) right
                print("  (no CHECKPOINT after the load: this role may not run one)", flush=True)


def _sqlite_query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(path, timeout=30)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


async def _pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


@contextmanager
def bench_database(url: str | None, tmp: Path) -> Iterator[BenchDatabase]:
    if url is None or url.startswith("sqlite:"):
        path = tmp / "bench.db"  # always fresh, whatever path a sqlite: URL named
        yield BenchDatabase(f"sqlite:///{path}", "sqlite", lambda sql: _sqlite_query(path, sql))
        return
    if not url.startswith(("postgresql://", "postgres://")):
        sys.exit(f"bench: unsupported --database-url {url!r}")
    name = f"stateset_bench_{secrets.token_hex(4)}"
    db_url = urlsplit(url)._replace(path=f"/{name}").geturl()
    asyncio.run(_pg(url, f'CREATE DATABASE "{name}"'))
    try:
        yield BenchDatabase(db_url, "postgresql", lambda sql: asyncio.run(_pg(db_url, sql)))
    finally:
        asyncio.run(_pg(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- setup requests -------------------------------------------------------------------------------------


class Client:
    """Setup requests (not measured) over a few keep-alive connections. They carry no Idempotency-Key:
    a bulk response is a megabyte that the server would otherwise store with the key."""

    def __init__(self, port: int, key: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def post(self, conn: HTTPConnection, path: str, body: Any, expect: int) -> Any:
        conn.request("POST", path, body=json.dumps(body, separators=(",", ":")), headers=self.headers)
        response = conn.getresponse()
        raw = response.read()
        if response.status != expect:
            raise RuntimeError(f"setup: POST {path} returned {response.status}: {raw[:800]!r}")
        return json.loads(raw)

    def batches(self, path: str, batches: list[Any], expect: int, threads: int = 4) -> list[Any]:
        local = threading.local()
        conns: list[HTTPConnection] = []

        def send(body: Any) -> Any:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = HTTPConnection(HOST, self.port, timeout=120)
                conns.append(conn)
            return self.post(conn, path, body, expect)

        try:
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(send, batches))
        finally:
            for conn in conns:
                conn.close()

    def create_orders(self, count: int, *, paid: bool) -> list[tuple[str, Decimal]]:
        """Bulk-create `count` orders (the body of wrk/order.json), optionally paid in the same transaction
        from the sandbox wallet; returns (id, total) in creation order."""
        item = {**ORDER, "payment": {"method": "usdc"}} if paid else ORDER
        sizes = [min(BATCH, count - start) for start in range(0, count, BATCH)]
        out: list[tuple[str, Decimal]] = []
        for answer in self.batches("/v1/orders/bulk", [[item] * n for n in sizes], 201):
            out += [(o["id"], Decimal(o["total"])) for o in answer["data"]]
        return out

    def fund(self, wallets: dict[str, Decimal]) -> None:
        calls = []
        for wallet, amount in wallets.items():
            left = amount.quantize(Decimal(1)) + 1
            while left > 0:
                part = min(left, FAUCET_MAX)
                calls.append({"wallet_address": wallet, "amount": str(part)})
                left -= part
        conn = HTTPConnection(HOST, self.port, timeout=60)
        try:
            for call in calls:
                self.post(conn, "/v1/sandbox/faucet", call, 201)
        finally:
            conn.close()

    def pay_orders(self, payments: list[dict[str, Any]]) -> int:
        batches = [payments[i : i + BATCH] for i in range(0, len(payments), BATCH)]
        succeeded = 0
        for answer in self.batches("/v1/orders/pay_bulk", batches, 200):
            if answer["failed"]:
                failed = [r for r in answer["data"] if r["status"] != "succeeded"]
                raise RuntimeError(f"setup: bulk pay failed for {answer['failed']} orders, e.g. {failed[:2]}")
            succeeded += answer["succeeded"]
        return succeeded


class OrderPools:
    """The orders the pay and fulfil runs walk through, each order used once.

    Pay pool: unpaid orders, created in bulk ahead of time (--pay-orders) and topped up whenever the
    next run might need more than are left; order i is paid from wallet i mod --wallets, and each
    wallet is funded with the faucet for exactly its orders (plus 1 USDC) when the orders are created.
    Fulfil pool: the pay pool orders the pay runs paid (read from the database), topped up when short
    by paying further pay-pool orders with the bulk pay endpoint."""

    def __init__(self, client: Client, db: BenchDatabase, opts: argparse.Namespace, tmp: Path, run: ApiRun) -> None:
        self.client, self.db, self.opts, self.tmp, self.run = client, db, opts, tmp, run
        self.wallets = ["0x" + secrets.token_hex(20) for _ in range(opts.wallets)]
        self.pay_ids: list[str] = []
        self.pay_next = 0  # the first pay-pool order no run has used
        self.fulfil_ids: list[str] = []
        self.fulfil_next = 0
        self.bodies = tmp / "pay_bodies.txt"
        self.bodies.write_text(
            "".join(
                json.dumps({"payment_method": {"type": "usdc", "wallet_address": w}}, separators=(",", ":")) + "\n"
                for w in self.wallets
            )
        )
        self.fulfil_bodies = tmp / "fulfil_bodies.txt"
        self.fulfil_bodies.write_text(FULFIL_BODY + "\n")

    def grow_pay_pool(self, count: int) -> None:
        print(
            f"  pre-creating {count:,} unpaid orders for pay (bulk) and funding {len(self.wallets)} wallets", flush=True
        )
        started = time.monotonic()
        created = self.client.create_orders(count, paid=False)
        funding = dict.fromkeys(self.wallets, Decimal(0))
        for i, (_, total) in enumerate(created, start=len(self.pay_ids)):
            funding[self.wallets[i % len(self.wallets)]] += total
        self.client.fund(funding)
        self.pay_ids += [order_id for order_id, _ in created]
        self.run.precreated += len(created)
        self.db.settle()
        print(f"  ({len(created):,} orders in {time.monotonic() - started:.1f} s)", flush=True)

    def _take_pay(self, need: int) -> tuple[int, list[str]]:
        if len(self.pay_ids) - self.pay_next < need:
            self.grow_pay_pool(max(need - (len(self.pay_ids) - self.pay_next), BATCH))
        return self.pay_next, self.pay_ids[self.pay_next :]

    def pay_job(self, need: int, headers: tuple[str, ...], base: str) -> tuple[WrkJob, int]:
        offset, ids = self._take_pay(need)
        path = self.tmp / "pay_ids.txt"
        path.write_text("\n".join(ids) + "\n")
        prefix = f"bench-pay-{secrets.token_hex(4)}-"
        job = WrkJob(
            "walk.lua", base, self.opts.connections, headers, (str(path), "pay", prefix, str(self.bodies), str(offset))
        )
        return job, offset

    def pay_used(self, result: Result) -> None:
        self.pay_next += result.sent

    def load_paid(self) -> None:
        """The pay runs' orders that are now PAID, in pool order, become the fulfil pool."""
        used = self.pay_ids[: self.pay_next]
        if not used:
            return
        paid = {row[0] for row in self.db.query("SELECT id FROM orders WHERE status = 'PAID'")}
        self.fulfil_ids += [order_id for order_id in used if order_id in paid]

    def fulfil_job(self, need: int, headers: tuple[str, ...], base: str) -> WrkJob:
        short = need - (len(self.fulfil_ids) - self.fulfil_next)
        if short > 0:
            short = max(short, BATCH)
            offset, ids = self._take_pay(short)
            ids = ids[:short]
            print(f"  paying {len(ids):,} more orders for fulfil (bulk pay)", flush=True)
            payments = [
                {
                    "order_id": order_id,
                    "payment_method": {"type": "usdc", "wallet_address": self.wallets[i % len(self.wallets)]},
                }
                for i, order_id in enumerate(ids, start=offset)
            ]
            self.run.prepaid += self.client.pay_orders(payments)
            self.pay_next += len(ids)
            self.fulfil_ids += ids
            self.db.settle()
        path = self.tmp / "fulfil_ids.txt"
        path.write_text("\n".join(self.fulfil_ids[self.fulfil_next :]) + "\n")
        prefix = f"bench-fulfil-{secrets.token_hex(4)}-"
        args = (str(path), "fulfill", prefix, str(self.fulfil_bodies), "0")
        return WrkJob("walk.lua", base, self.opts.connections, headers, args)

    def fulfil_used(self, result: Result) -> None:
        self.fulfil_next += result.sent


def need_for(seconds: int, before: Sequence[Result], opts: argparse.Namespace) -> int:
    """Orders a pay/fulfil run may use: the fastest rate seen so far with a margin (before anything was
    measured: --max-rate) × seconds."""
    rate = max(r.rps for r in before) * 1.3 + 100 if before else opts.max_rate
    return math.ceil(rate * seconds) + opts.connections


def default_pay_orders(opts: argparse.Namespace) -> int:
    """Enough for warm-up and measured seconds at --max-rate, and the half-rate probe and run at half that."""
    seconds = opts.warmup + opts.duration + (PROBE_SECONDS + opts.half_duration) / 2
    return min(250_000, math.ceil(opts.max_rate * seconds / BATCH) * BATCH)


# --- phases ---------------------------------------------------------------------------------------------


def bench_hello(opts: argparse.Namespace, tmp: Path) -> Result:
    port = free_port()
    cmd = [sys.executable, str(BENCH_DIR / "hello_app.py"), "--port", str(port), "--workers", str(opts.workers)]
    log_path = tmp / "hello.log"
    print(f"hello-JSON ceiling: bench/hello_app.py on port {port}", flush=True)
    with process_group(cmd, log_path, clean_env(PYTHONPATH=str(BENCH_DIR))) as proc:
        wait_healthy(proc, f"http://{HOST}:{port}/", log_path)
        job = WrkJob("hello.lua", f"http://{HOST}:{port}/", opts.connections, pgid=proc.pid)
        if opts.warmup > 0:
            print(f"  hello: warm-up {opts.warmup} s", flush=True)
            job.run(opts.warmup)
        print(f"  hello: measuring {opts.duration} s", flush=True)
        return job.run(opts.duration)


def bench_api(opts: argparse.Namespace, tmp: Path, db: BenchDatabase) -> ApiRun:
    port = free_port()
    # The database URL goes in the environment, not argv, so a password in it stays out of `ps`.
    cmd = [*server_command(), "serve", "--port", str(port), "--workers", str(opts.workers)]
    log_path = tmp / "server.log"
    print(f"stateset-server on port {port} ({db.engine}, {opts.workers} worker(s))", flush=True)
    api = ApiRun()
    phases = opts.phases
    killed = False  # by the sigkill phase
    with process_group(cmd, log_path, clean_env(STATESET_DATABASE_URL=db.url)) as proc:
        try:
            key = wait_for_log_line(proc, log_path, r"^sk_test_\S+$")
            wait_healthy(proc, f"http://{HOST}:{port}/health", log_path)
            client = Client(port, key)
            auth = (f"Authorization: Bearer {key}",)
            base = f"http://{HOST}:{port}"
            c = opts.connections
            if "get" in phases or "list" in phases:
                print(f"  pre-creating {opts.orders:,} paid orders for get and list (bulk create-and-pay)", flush=True)
                ids = [order_id for order_id, _ in client.create_orders(opts.orders, paid=True)]
                api.precreated += len(ids)
                api.prepaid += len(ids)
                db.settle()
                ids_path = tmp / "order_ids.txt"
                ids_path.write_text("\n".join(ids) + "\n")
                # get and list first, so they read a table of exactly --orders orders whatever the writes' throughput
                if "get" in phases:
                    job = WrkJob("get.lua", base, c, auth, (str(ids_path),), pgid=proc.pid)
                    api.ops["get"] = measure_op("get", job.run, opts)
                if "list" in phases:
                    job = WrkJob("list.lua", base + LIST_PATH, c, auth, pgid=proc.pid)
                    api.ops["list"] = measure_op("list", job.run, opts)
            if "create" in phases:

                def create(seconds: int, delay_ms: float | None) -> Result:
                    prefix = f"bench-create-{secrets.token_hex(4)}-"
                    job = WrkJob("create.lua", f"{base}/v1/orders", c, auth, (prefix,), pgid=proc.pid)
                    return job.run(seconds, delay_ms)

                api.ops["create"] = measure_op("create", create, opts)
            pools = OrderPools(client, db, opts, tmp, api)
            if "pay" in phases:
                pools.grow_pay_pool(opts.pay_orders)
                last: list[Result] = []

                def pay(seconds: int, delay_ms: float | None) -> Result:
                    need = need_for(seconds, last, opts)
                    job, _ = pools.pay_job(need, auth, base)
                    result = replace(job, pgid=proc.pid).run(seconds, delay_ms)
                    pools.pay_used(result)
                    last.append(result)
                    return result

                api.ops["pay"] = measure_op("pay", pay, opts)
                pools.load_paid()
            if "fulfil" in phases:
                # A first guess of the rate, for sizing the pool: the faster of the measured writes (a
                # status change can outrun a pay by 2x; sized on the pay alone, the warm-up ran out).
                done: list[Result] = [api.ops[op].peak for op in ("create", "pay") if op in api.ops]

                def fulfil(seconds: int, delay_ms: float | None) -> Result:
                    need = need_for(seconds, done, opts)
                    result = replace(pools.fulfil_job(need, auth, base), pgid=proc.pid).run(seconds, delay_ms)
                    pools.fulfil_used(result)
                    done.append(result)
                    return result

                api.ops["fulfil"] = measure_op("fulfil", fulfil, opts)
            if "sigkill" in phases:
                prefix = f"bench-sigkill-{secrets.token_hex(4)}-"
                job = WrkJob("create.lua", f"{base}/v1/orders", c, auth, (prefix,))
                print(f"  sigkill: POST /v1/orders under load, kill -9 after {opts.kill_after} s", flush=True)
                wrk = job.start(opts.kill_after + 30)
                time.sleep(opts.kill_after)
                killed = True
                stop_group(proc, signal.SIGKILL)
                wrk.send_signal(signal.SIGINT)  # wrk stops on SIGINT and still reports what it saw
                api.sigkill = wrk_result(wrk, opts.kill_after + 30)
        except BaseException:
            tail = log_path.read_text(errors="replace").splitlines()[-40:]
            print("bench: failed; the server's last output:\n  " + "\n  ".join(tail), file=sys.stderr, flush=True)
            status = proc.poll()
            if status is not None and status < 0 and not killed:
                why = f"killed by signal {-status} ({signal.Signals(-status).name}), not by this harness"
                print(f"bench: the server had stopped: {why}", file=sys.stderr, flush=True)
            elif any("Shutting down granian" in line for line in tail):
                print(
                    "bench: the server had shut down gracefully: something else sent it SIGTERM or SIGINT",
                    file=sys.stderr,
                    flush=True,
                )
            raise
        finally:
            # kill -9, on purpose: the counts below then check that every acknowledged write was
            # committed before its response went out, not merely flushed at a graceful shutdown.
            stop_group(proc, signal.SIGKILL)
    api.log_text = log_path.read_text(errors="replace")
    api.log_errors = [line for line in api.log_text.splitlines() if LOG_ERROR.search(line)]
    statuses = dict(db.query("SELECT status, count(*) FROM orders GROUP BY status"))
    api.counts = {
        "orders": sum(int(n) for n in statuses.values()),
        "paid_or_fulfilled": int(statuses.get("PAID", 0)) + int(statuses.get("FULFILLED", 0)),
        "fulfilled": int(statuses.get("FULFILLED", 0)),
        "by_status": {str(k): int(v) for k, v in sorted(statuses.items())},
    }
    return api


# --- report ---------------------------------------------------------------------------------------------


def source_version() -> str:
    """The commit measured, marked dirty when the working tree has changes (figures belong to a version)."""
    done = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), "describe", "--always", "--dirty", "--exclude=*"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "granian": metadata.version("granian"),
        "starlette": metadata.version("starlette"),
        "stateset_server": metadata.version("stateset-server"),
        "wrk": wrk_version[0] if wrk_version else "unknown",
    }


def _bounds(runs: Sequence[Result]) -> tuple[int, int]:
    """(acknowledged with a 2xx, requests sent): the least and the most that may have been written."""
    return sum(r.acknowledged for r in runs), sum(max(r.sent, r.requests) for r in runs)


def durability(api: ApiRun) -> dict[str, Any]:
    """Every acknowledged write must be in the database after kill -9. Requests that were sent but not
    answered (in flight when a wrk run stopped or the server was killed) may or may not have committed,
    so each count must lie between the acknowledged and the sent."""

    def runs(op: str) -> list[Result]:
        return api.ops[op].runs() if op in api.ops else []

    creates = runs("create") + ([api.sigkill] if api.sigkill else [])
    checks = {}
    for name, base, op_runs, count in (
        ("orders", api.precreated, creates, api.counts["orders"]),
        ("paid_or_fulfilled", api.prepaid, runs("pay"), api.counts["paid_or_fulfilled"]),
        ("fulfilled", 0, runs("fulfil"), api.counts["fulfilled"]),
    ):
        acked, sent = _bounds(op_runs)
        low, high = base + acked, base + sent
        checks[name] = {"in_db": count, "acknowledged": low, "at_most": high, "ok": low <= count <= high}
    return {**checks, "by_status": api.counts["by_status"], "ok": all(c["ok"] for c in checks.values())}


def ratio_row(result: Result, ceiling: Result | None) -> dict[str, float] | None:
    if ceiling is None:
        return None
    return {
        "rps": round(result.rps / ceiling.rps, 4),
        "p50": round(result.p50_ms / ceiling.p50_ms, 2),
        "p95": round(result.p95_ms / ceiling.p95_ms, 2),
        "p99": round(result.p99_ms / ceiling.p99_ms, 2),
    }


def print_table(rows: dict[str, Result], ceiling: Result | None) -> None:
    print(
        f"\n{'phase':<28}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}"
        f"{'CPU µs':>8}{'cs':>6}   {'req/s ÷ hello':>13}{'p50 × hello':>12}{'p95 × hello':>12}{'p99 × hello':>12}"
    )
    for name, r in rows.items():
        cpu = "" if r.server_cpu_us is None else f"{r.server_cpu_us:,.0f}"
        switches = "" if r.server_switches is None else f"{r.server_switches:.1f}"
        line = (
            f"{name:<28}{r.rps:>10,.0f}{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}{r.non_2xx:>9}"
            f"{r.socket_errors:>9}{cpu:>8}{switches:>6}"
        )
        q = ratio_row(r, ceiling)
        if q is not None:
            line += f"   {q['rps']:>13.1%}{q['p50']:>11.1f}×{q['p95']:>11.1f}×{q['p99']:>11.1f}×"
        print(line)


def spec_checks(api: ApiRun, engine: str, compare: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per operation: throughput against the target (SQLite: the spec's figure; PostgreSQL: half the
    SQLite run given with --compare-json, else not judged) and the half-rate p95 against the limit."""
    out = {}
    for op, run in api.ops.items():
        spec = SPEC[op]
        target: float | None = spec.rps
        basis = "spec (SQLite)"
        if engine != "sqlite":
            sqlite_rps = ((compare or {}).get("ops", {}).get(op) or {}).get("peak", {}).get("rps")
            target = round(sqlite_rps / 2, 1) if sqlite_rps else None
            basis = "50% of --compare-json SQLite run" if sqlite_rps else "needs --compare-json"
        rps_ok = None if target is None else run.peak.rps >= target
        p95 = run.half.result.p95_ms if run.half else None
        p95_ok = None if p95 is None else p95 <= spec.p95_ms
        judged = [v for v in (rps_ok, p95_ok) if v is not None]
        out[op] = {
            "spec": spec.name,
            "target_rps": target,
            "target_basis": basis,
            "sqlite_spec_rps": spec.rps,
            "peak_rps": run.peak.rps,
            "rps_ok": rps_ok,
            "p95_limit_ms": spec.p95_ms,
            "half_rate_rps": run.half.result.rps if run.half else None,
            "half_rate_p95_ms": p95,
            "p95_ok": p95_ok,
            "verdict": "n/a" if not judged else ("PASS" if all(judged) else "FAIL"),
        }
    return out


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def print_spec(checks: dict[str, dict[str, Any]], engine: str) -> None:
    print(
        f"\nspec ({engine}): throughput = closed-loop peak; p95 = at half the peak rate"
        + ("" if engine == "sqlite" else "; throughput target for PostgreSQL = 50% of SQLite's (--compare-json)")
    )
    print(
        f"{'operation':<28}{'target':>10}{'peak':>10}{'':>6}{'p95 limit':>11}{'at req/s':>10}{'p95 ms':>9}{'':>6}"
        f"{'verdict':>9}"
    )
    for op, c in checks.items():
        target = "-" if c["target_rps"] is None else f"≥{c['target_rps']:,.0f}"
        if engine != "sqlite" and c["target_rps"] is None and c["sqlite_spec_rps"]:
            target = f"({c['sqlite_spec_rps']:,})"
        half_rps = "-" if c["half_rate_rps"] is None else f"{c['half_rate_rps']:,.0f}"
        p95 = "-" if c["half_rate_p95_ms"] is None else f"{c['half_rate_p95_ms']:.2f}"
        print(
            f"{LABELS[op]:<28}{target:>10}{c['peak_rps']:>10,.0f}{_mark(c['rps_ok']):>6}"
            f"{'≤' + format(c['p95_limit_ms'], 'g') + ' ms':>11}{half_rps:>10}{p95:>9}{_mark(c['p95_ok']):>6}"
            f"{c['verdict']:>9}"
        )


def unexpected(api: ApiRun) -> list[str]:
    """Problems that fail the run: non-2xx responses, ids that ran out (repeats), server log errors."""
    problems = []
    runs = [(op, r) for op, run in api.ops.items() for r in run.runs()]
    if api.sigkill is not None:
        runs.append(("sigkill", api.sigkill))
    for op, r in runs:
        if r.non_2xx:
            problems.append(f"{op}: {r.non_2xx} non-2xx response(s)")
        if r.wrapped:
            problems.append(f"{op}: ran out of orders, {r.wrapped} request(s) repeated an order (raise --pay-orders)")
    if api.log_errors:
        problems.append(f"server log: {len(api.log_errors)} error line(s)")
    return problems


def report(
    opts: argparse.Namespace, engine: str, hello: Result | None, api: ApiRun, compare: dict[str, Any] | None
) -> dict[str, Any]:
    rows: dict[str, Result] = {}
    if hello is not None:
        rows[LABELS["hello"]] = hello
    for op, run in api.ops.items():
        rows[LABELS[op]] = run.peak
        if run.half:
            rows[f"  at 50% ({run.half.target_rps:,.0f} target)"] = run.half.result
    if api.sigkill is not None:
        rows[LABELS["sigkill"]] = api.sigkill
    print_table(rows, hello)
    checks = spec_checks(api, engine, compare)
    if checks:
        print_spec(checks, engine)
    check = durability(api)
    verdict = "OK" if check["ok"] else "MISMATCH"
    print(f"\ndurability after kill -9{' under create load' if api.sigkill else ''}: {verdict}")
    for name, what in (
        ("orders", "orders"),
        ("paid_or_fulfilled", "orders paid (PAID or FULFILLED)"),
        ("fulfilled", "orders FULFILLED"),
    ):
        c = check[name]
        print(
            f"  {what}: {c['in_db']:,} in the database; {c['acknowledged']:,} acknowledged"
            f" (up to {c['at_most']:,} sent): {'OK' if c['ok'] else 'MISMATCH'}"
        )
    problems = unexpected(api)
    print(f"server log: {len(api.log_errors)} error line(s)" + "".join(f"\n  {e}" for e in api.log_errors[:10]))
    for problem in problems:
        print(f"problem: {problem}")
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items() if k != "json_out"},
        "engine": engine,
        "source": source_version(),
        "machine": machine(),
        "load_generator": f"wrk -t1 -c{opts.connections} -d{opts.duration}s --timeout={WRK_TIMEOUT}",
        "hello": asdict(hello) if hello else None,
        "ops": {
            op: {
                "peak": asdict(run.peak),
                "warmup": asdict(run.warmup) if run.warmup else None,
                "half_rate": asdict(run.half) if run.half else None,
                "ratio_to_hello": ratio_row(run.peak, hello),
            }
            for op, run in api.ops.items()
        },
        "spec": checks,
        "sigkill": asdict(api.sigkill) if api.sigkill else None,
        "durability": check,
        "problems": problems,
        "server_log_errors": api.log_errors,
    }


def write_json(results: dict[str, Any], path: Path, log_text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    if results["server_log_errors"]:  # keep the evidence; the temporary directory is about to go
        log_copy = path.with_suffix(".server.log")
        log_copy.write_text(log_text)
        print(f"server log: {log_copy}")


def warn_if_busy(threshold: float = 0.5) -> float:
    """The load generator and server already share the cores; anything else running skews the figures."""
    load = os.getloadavg()[0]
    if load > threshold:
        print(f"bench: warning: 1-minute load average is {load:.2f} before the run; figures will be low", flush=True)
    return load


# --- entry point ----------------------------------------------------------------------------------------


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def phase_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in PHASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown phase(s) {unknown}; choose from {','.join(PHASES)}")
    return [name for name in PHASES if name in names]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark stateset-server against its hello-JSON ceiling.")
    parser.add_argument("--connections", type=positive, default=64, help="open connections (default 64)")
    parser.add_argument("--duration", type=positive, default=10, help="seconds measured per phase (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of discarded warm-up per phase (default 3)")
    parser.add_argument(
        "--half-duration",
        type=int,
        help="seconds of the run at half the peak rate, per operation (default: duration/2, at least 2; 0 skips)",
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=os.cpu_count() or 1,
        help="granian workers for both servers (default: one per CPU, as stateset-server serve)",
    )
    parser.add_argument(
        "--phases",
        type=phase_list,
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument("--orders", type=positive, default=2000, help="paid orders pre-created for get and list")
    parser.add_argument(
        "--pay-orders",
        type=positive,
        help="unpaid orders pre-created for pay (default: enough at --max-rate, at most 250,000);"
        " topped up before a run that might need more",
    )
    parser.add_argument(
        "--max-rate",
        type=positive,
        default=8000,
        help="pay/fulfil rate assumed when sizing order pools before anything is measured (default 8000/s)",
    )
    parser.add_argument("--wallets", type=positive, default=64, help="USDC wallets the pay runs pay from (default 64)")
    parser.add_argument(
        "--kill-after", type=positive, default=2, help="sigkill: seconds of create load before kill -9 (default 2)"
    )
    parser.add_argument(
        "--database-url",
        help="default: a temporary SQLite file. With postgresql://…, a fresh database is created on that"
        f" server (e.g. {PG_ADMIN_URL}) and dropped afterwards",
    )
    parser.add_argument(
        "--compare-json",
        type=Path,
        help="a SQLite run's JSON results: a PostgreSQL run then checks each throughput against 50%% of it",
    )
    parser.add_argument("--json-out", type=Path, help="default: bench/results/<timestamp>.json")
    opts = parser.parse_args(argv)
    if opts.half_duration is None:
        opts.half_duration = max(2, opts.duration // 2)
    if opts.pay_orders is None:
        opts.pay_orders = default_pay_orders(opts)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    ensure_wrk()
    compare = json.loads(opts.compare_json.read_text()) if opts.compare_json else None
    load_before = warn_if_busy()
    out = opts.json_out or BENCH_DIR / "results" / f"{datetime.now():%Y-%m-%dT%H-%M-%S}.json"
    print(
        f"stateset-server benchmark: {opts.connections} connections, {opts.duration} s measured"
        f" (+{opts.warmup} s warm-up, +{opts.half_duration} s at half rate) per phase, {opts.workers} worker(s),"
        f" wrk -t1, {os.cpu_count()} CPUs, source {source_version()}; phases {','.join(opts.phases)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="stateset-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with bench_database(opts.database_url, tmp) as db:
            hello = bench_hello(opts, tmp) if "hello" in opts.phases else None
            api = bench_api(opts, tmp, db)
        results = report(opts, db.engine, hello, api, compare)
        results["load_average_before"] = load_before
        write_json(results, out, api.log_text)
    return 0 if results["durability"]["ok"] and not results["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
