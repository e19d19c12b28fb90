"""Load-test stateset-server over loopback with wrk and compare it with the same stack's hello-JSON ceiling.

    .venv/bin/python bench/run.py [--connections 64] [--duration 10] [--warmup 3] [--workers 1]
                                  [--orders 2000] [--database-url postgresql://...] [--json-out PATH]

Phases, in this order, each a wrk warm-up run (discarded) followed by a measured run:
  hello   GET / on bench/hello_app.py: one Starlette route under granian, configured as the real server
  get     GET /v1/orders/{id} for a random one of the --orders pre-created orders per request
  create  POST /v1/orders
The API server is `stateset-server serve` on a fresh database (a temporary SQLite file, or a new
PostgreSQL database created next to --database-url and dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from dataclasses import asdict, dataclass
from datetime import datetime
from http.client import HTTPConnection
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
WRK_DIR = BENCH_DIR / "wrk"
ORDER_BODY = (WRK_DIR / "order.json").read_bytes().strip()
WRK_INSTALL = "apt-get update && apt-get install -y wrk"
WRK_TIMEOUT = "10s"  # well above any expected latency, so slow requests are measured, not dropped
HOST = "127.0.0.1"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOG_ERROR = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception")


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
        )


@dataclass(frozen=True)
class Phase:
    """A warm-up run (kept only for the durability arithmetic) and the measured run."""

    warmup: Result | None
    measured: Result


@dataclass(frozen=True)
class ApiRun:
    create: Phase
    get: Phase
    precreated: int
    orders_in_db: int
    log_errors: list[str]
    log_text: str


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


def run_wrk(script: str, url: str, *, connections: int, seconds: int, headers: list[str], args: list[str]) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT}", "-s", str(WRK_DIR / script)]
    for header in headers:
        cmd += ["-H", header]
    cmd += [url, "--", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return Result.from_wrk(json.loads(line.removeprefix("BENCH_JSON ")))
    raise RuntimeError(f"wrk printed no result (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def measure(
    label: str,
    script: str,
    url: str,
    opts: argparse.Namespace,
    headers: Sequence[str] = (),
    args: Sequence[str] = (),
) -> Phase:
    run = {"connections": opts.connections, "headers": list(headers), "args": list(args)}
    warmup = None
    if opts.warmup > 0:
        print(f"  {label}: warm-up {opts.warmup} s", flush=True)
        warmup = run_wrk(script, url, seconds=opts.warmup, **run)
    print(f"  {label}: measuring {opts.duration} s", flush=True)
    return Phase(warmup, run_wrk(script, url, seconds=opts.duration, **run))


# --- databases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchDatabase:
    url: str  # what the server is given
    engine: str
    count_orders: Callable[[], int]


def _sqlite_count(path: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])
    finally:
        conn.close()


async def _pg(url: str, sql: str) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@contextmanager
def bench_database(url: str | None, tmp: Path) -> Iterator[BenchDatabase]:
    if url is None or url.startswith("sqlite:"):
        path = tmp / "bench.db"  # always fresh, whatever path a sqlite: URL named
        yield BenchDatabase(f"sqlite:///{path}", "sqlite", lambda: _sqlite_count(path))
        return
    if not url.startswith(("postgresql://", "postgres://")):
        sys.exit(f"bench: unsupported --database-url {url!r}")
    name = f"stateset_bench_{secrets.token_hex(4)}"
    db_url = urlsplit(url)._replace(path=f"/{name}").geturl()
    asyncio.run(_pg(url, f'CREATE DATABASE "{name}"'))
    try:
        yield BenchDatabase(db_url, "postgresql", lambda: int(asyncio.run(_pg(db_url, "SELECT count(*) FROM orders"))))
    finally:
        asyncio.run(_pg(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- phases ---------------------------------------------------------------------------------------------


def create_orders(port: int, key: str, count: int, threads: int = 8) -> list[str]:
    """Pre-create `count` orders for the GET phase over a few keep-alive connections."""
    local = threading.local()
    conns: list[HTTPConnection] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def create(_: int) -> str:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = HTTPConnection(HOST, port, timeout=30)
            conns.append(conn)
        conn.request("POST", "/v1/orders", body=ORDER_BODY, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 201:
            raise RuntimeError(f"pre-creating an order returned {response.status}: {body[:500]!r}")
        return str(json.loads(body)["id"])

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(create, range(count)))
    finally:
        for conn in conns:
            conn.close()


def bench_hello(opts: argparse.Namespace, tmp: Path) -> Phase:
    port = free_port()
    cmd = [sys.executable, str(BENCH_DIR / "hello_app.py"), "--port", str(port), "--workers", str(opts.workers)]
    log_path = tmp / "hello.log"
    print(f"hello-JSON ceiling: bench/hello_app.py on port {port}", flush=True)
    with process_group(cmd, log_path, clean_env(PYTHONPATH=str(BENCH_DIR))) as proc:
        wait_healthy(proc, f"http://{HOST}:{port}/", log_path)
        return measure("hello", "hello.lua", f"http://{HOST}:{port}/", opts)


def bench_api(opts: argparse.Namespace, tmp: Path, db: BenchDatabase) -> ApiRun:
    port = free_port()
    cmd = [*server_command(), "serve", "--database-url", db.url, "--port", str(port), "--workers", str(opts.workers)]
    log_path = tmp / "server.log"
    print(f"stateset-server on port {port} ({db.engine}, {opts.workers} worker(s))", flush=True)
    with process_group(cmd, log_path, clean_env()) as proc:
        try:
            key = wait_for_log_line(proc, log_path, r"^sk_test_\S+$")
            wait_healthy(proc, f"http://{HOST}:{port}/health", log_path)
            print(f"  pre-creating {opts.orders} orders", flush=True)
            ids = create_orders(port, key, opts.orders)
            ids_path = tmp / "order_ids.txt"
            ids_path.write_text("\n".join(ids) + "\n")
            auth = [f"Authorization: Bearer {key}"]
            base = f"http://{HOST}:{port}"
            # get first, so it reads a table of exactly --orders orders whatever create's throughput
            get = measure("get", "get.lua", base, opts, auth, [str(ids_path)])
            create = measure("create", "create.lua", f"{base}/v1/orders", opts, auth)
        finally:
            # kill -9, on purpose: the order count below then checks that every acknowledged create
            # was committed before its 201 went out, not merely flushed at a graceful shutdown.
            stop_group(proc, signal.SIGKILL)
    log_text = log_path.read_text(errors="replace")
    errors = [line for line in log_text.splitlines() if LOG_ERROR.search(line)]
    return ApiRun(create, get, len(ids), db.count_orders(), errors, log_text)


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


def durability(api: ApiRun, connections: int) -> dict[str, Any]:
    """Every acknowledged create must be in the database; a few more may have committed after wrk's cutoff."""
    runs = [r for r in (api.create.warmup, api.create.measured) if r is not None]
    acknowledged = api.precreated + sum(r.acknowledged for r in runs)
    # Requests still in flight when a wrk run stopped (at most one per connection) or that timed out
    # may have committed without wrk seeing the 201.
    slack = connections * len(runs) + sum(r.socket_errors for r in runs)
    ok = acknowledged <= api.orders_in_db <= acknowledged + slack
    return {"orders_in_db": api.orders_in_db, "acknowledged_201": acknowledged, "in_flight_slack": slack, "ok": ok}


def ratio_row(result: Result, ceiling: Result) -> dict[str, float]:
    return {
        "rps": round(result.rps / ceiling.rps, 4),
        "p50": round(result.p50_ms / ceiling.p50_ms, 2),
        "p95": round(result.p95_ms / ceiling.p95_ms, 2),
        "p99": round(result.p99_ms / ceiling.p99_ms, 2),
    }


def print_table(rows: dict[str, Result], ceiling: Result) -> None:
    print(
        f"\n{'phase':<22}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'sock err':>9}"
        f"   {'req/s ÷ hello':>13}{'p50 × hello':>12}{'p95 × hello':>12}{'p99 × hello':>12}"
    )
    for name, r in rows.items():
        q = ratio_row(r, ceiling)
        print(
            f"{name:<22}{r.rps:>10,.0f}{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}{r.non_2xx:>9}"
            f"{r.socket_errors:>9}   {q['rps']:>13.1%}{q['p50']:>11.1f}×{q['p95']:>11.1f}×{q['p99']:>11.1f}×"
        )


def report(opts: argparse.Namespace, engine: str, hello: Phase, api: ApiRun) -> dict[str, Any]:
    rows = {
        "hello-JSON ceiling": hello.measured,
        "POST /v1/orders": api.create.measured,
        "GET /v1/orders/{id}": api.get.measured,
    }
    print_table(rows, hello.measured)
    check = durability(api, opts.connections)
    verdict = "OK" if check["ok"] else "MISMATCH"
    print(
        f"\ndurability: {check['orders_in_db']} orders in the database after kill -9, "
        f"{check['acknowledged_201']} creates acknowledged with 201 "
        f"(up to {check['in_flight_slack']} more may have committed unseen at wrk's cutoff): {verdict}"
    )
    print(f"server log: {len(api.log_errors)} error line(s)" + "".join(f"\n  {e}" for e in api.log_errors[:10]))
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "options": {k: v for k, v in vars(opts).items() if k != "json_out"},
        "engine": engine,
        "source": source_version(),
        "machine": machine(),
        "load_generator": f"wrk -t1 -c{opts.connections} -d{opts.duration}s --timeout={WRK_TIMEOUT}",
        "hello": asdict(hello.measured),
        "create": asdict(api.create.measured),
        "get": asdict(api.get.measured),
        "ratio_to_hello": {
            "create": ratio_row(api.create.measured, hello.measured),
            "get": ratio_row(api.get.measured, hello.measured),
        },
        "warmup": {
            name: asdict(phase.warmup) if phase.warmup else None
            for name, phase in (("hello", hello), ("create", api.create), ("get", api.get))
        },
        "durability": check,
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark stateset-server against its hello-JSON ceiling.")
    parser.add_argument("--connections", type=positive, default=64, help="open connections (default 64)")
    parser.add_argument("--duration", type=positive, default=10, help="seconds measured per phase (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of discarded warm-up per phase (default 3)")
    parser.add_argument("--workers", type=positive, default=1, help="granian workers for both servers (default 1)")
    parser.add_argument("--orders", type=positive, default=2000, help="orders pre-created for GET (default 2000)")
    parser.add_argument(
        "--database-url",
        help="default: a temporary SQLite file. With postgresql://…, a fresh database is created on that"
        f" server (e.g. {PG_ADMIN_URL}) and dropped afterwards",
    )
    parser.add_argument("--json-out", type=Path, help="default: bench/results/<timestamp>.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    ensure_wrk()
    load_before = warn_if_busy()
    out = opts.json_out or BENCH_DIR / "results" / f"{datetime.now():%Y-%m-%dT%H-%M-%S}.json"
    print(
        f"stateset-server benchmark: {opts.connections} connections, {opts.duration} s measured"
        f" (+{opts.warmup} s warm-up) per phase, {opts.workers} worker(s), wrk -t1, {os.cpu_count()} CPUs,"
        f" source {source_version()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="stateset-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with bench_database(opts.database_url, tmp) as db:
            hello = bench_hello(opts, tmp)
            api = bench_api(opts, tmp, db)
        results = report(opts, db.engine, hello, api)
        results["load_average_before"] = load_before
        write_json(results, out, api.log_text)
    failed = api.create.measured.non_2xx + api.get.measured.non_2xx
    return 0 if results["durability"]["ok"] and not api.log_errors and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
