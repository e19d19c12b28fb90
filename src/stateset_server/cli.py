"""The `stateset-server` command: serve, worker, migrate, keys, workspaces."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

from stateset_server import __version__, affinity
from stateset_server.core.clock import iso
from stateset_server.settings import DEFAULT_DATABASE_URL, Settings
from stateset_server.storage import Database, open_database, with_database
from stateset_server.storage.database import StorageUnavailable
from stateset_server.storage.migrate import MigrationError, migrate
from stateset_server.workspaces import repository, service
from stateset_server.workspaces.plans import LIMIT_FIELDS, PLANS, effective_limits, parse_limit

__all__ = ["main"]

T = TypeVar("T")


# How granian serves the API; bench/hello_app.py serves its hello-JSON ceiling with the same settings.
# Two I/O threads per worker instead of one: with one, every connection's reads and writes wait while
# it hands a request to Python. Gets went from 18,800-19,600/s to 22,800-23,300/s (paired runs), the
# hello ceiling -3 %, lists and writes unchanged (docs/benchmarks.md).
# A worker that has not exited 10 s after SIGTERM is killed: granian can deadlock while it tears its
# I/O threads down after the app's own shutdown has finished (emmett-framework/granian#875; seen
# here about once in ten stops under load). Everything acknowledged is on disk by then.
GRANIAN_SETTINGS: dict[str, Any] = {
    "log_access": False,
    "backlog": 2048,
    "runtime_threads": 2,
    "workers_kill_timeout": 10,
}


def _database_url(args: argparse.Namespace) -> str:
    return args.database_url or os.environ.get("STATESET_DATABASE_URL") or DEFAULT_DATABASE_URL


async def _default_workspace(db: Database) -> str:
    workspaces = await db.read(repository.list_workspaces)
    if len(workspaces) != 1:
        raise ValueError(f"there are {len(workspaces)} workspaces; choose one with --workspace")
    return str(workspaces[0]["id"])


def cmd_serve(args: argparse.Namespace) -> int:
    url = _database_url(args)
    settings = Settings(database_url=url)
    applied = asyncio.run(migrate(url))
    if applied:
        print(f"stateset-server: applied migrations {applied} to {url}", flush=True)
    first_key = asyncio.run(with_database(url, service.bootstrap))
    if first_key is not None:
        print(
            f"stateset-server: new database; created workspace {first_key.workspace_id} and a sandbox secret key"
            " (shown once, store it now):",
            flush=True,
        )
        print(first_key.secret, flush=True)
    os.environ["STATESET_DATABASE_URL"] = settings.database_url
    configured = Settings.from_env()
    configured.pricing(), configured.fees()  # refuse to start with malformed money settings
    affinity.tell_workers(args.workers, settings.database_url)  # a malformed value stops the server here

    from granian import Granian
    from granian.constants import Interfaces

    print(f"stateset-server {__version__}: serving on http://{args.host}:{args.port} ({url})", flush=True)
    Granian(
        "stateset_server.app:app_from_environment",
        factory=True,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        **GRANIAN_SETTINGS,
    ).serve()
    return 0


async def _run_worker(url: str, concurrency: int | None) -> None:
    from stateset_server.webhooks.dispatcher import Dispatcher, DispatchSettings
    from stateset_server.webhooks.ssrf import UrlPolicy

    settings, policy = DispatchSettings.from_env(concurrency), UrlPolicy.from_env()
    db = await open_database(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dispatcher = Dispatcher(db, settings, policy)
    print(
        f"stateset-server {__version__}: webhook worker {dispatcher.worker} on {url}"
        f" (concurrency {settings.concurrency})",
        flush=True,
    )
    dispatcher.start()
    try:
        await stop.wait()
    finally:
        await dispatcher.stop()  # in-flight deliveries finish or are released for other workers
        await db.close()


def cmd_worker(args: argparse.Namespace) -> int:
    """Only the webhook dispatcher, no API: run any number of these (with STATESET_WEBHOOK_WORKER=external
    on the servers, or alongside their own dispatchers); leases keep them from sending anything twice."""
    if args.concurrency is not None and args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = _database_url(args)
    applied = asyncio.run(migrate(url))
    if applied:
        print(f"stateset-server: applied migrations {applied} to {url}", flush=True)
    asyncio.run(_run_worker(url, args.concurrency))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    url = _database_url(args)
    applied = asyncio.run(migrate(url))
    print(f"applied migrations {applied}" if applied else "database is up to date")
    return 0


def cmd_workspaces_create(args: argparse.Namespace) -> int:
    workspace_id = asyncio.run(
        with_database(_database_url(args), lambda db: service.create_workspace(db, args.name, args.plan))
    )
    print(workspace_id)
    return 0


def cmd_workspaces_list(args: argparse.Namespace) -> int:
    rows = asyncio.run(with_database(_database_url(args), lambda db: db.read(repository.list_workspaces)))
    for row in rows:
        plan = row["plan"] + (" (operator)" if row["operator"] else "")
        print(f"{row['id']}\t{iso(row['created_at'])}\t{plan}\t{row['name']}")
    return 0


def cmd_workspaces_set_plan(args: argparse.Namespace) -> int:
    custom = {name: parse_limit(getattr(args, name), "--" + name.replace("_", "-")) for name in LIMIT_FIELDS}
    row = asyncio.run(
        with_database(_database_url(args), lambda db: service.set_plan(db, args.workspace_id, args.plan, custom))
    )
    limits = effective_limits(row["plan"], *(row[name] for name in LIMIT_FIELDS)).as_dict()
    shown = " ".join(f"{name}={'unlimited' if value is None else value}" for name, value in limits.items())
    print(f"{row['id']} plan={row['plan']} {shown}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    async def action(db: Database) -> service.NewKey:
        workspace_id = args.workspace or await _default_workspace(db)
        scopes = [s for chunk in args.scope for s in chunk.split(",")]
        return await service.create_key(
            db, workspace_id=workspace_id, mode=args.mode, kind=args.kind, scopes=scopes, name=args.name
        )

    key = asyncio.run(with_database(_database_url(args), action))
    scopes = f" scopes={','.join(key.scopes)}" if key.scopes else ""
    print(f"created {key.kind} {key.mode} key {key.id} in workspace {key.workspace_id}{scopes} (shown once):")
    print(key.secret)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    async def action(db: Database) -> list[Any]:
        return await db.read(lambda tx: repository.list_keys(tx, args.workspace))

    for row in asyncio.run(with_database(_database_url(args), action)):
        state = f"revoked {iso(row['revoked_at'])}" if row["revoked_at"] else "active"
        print(
            f"{row['id']}\t{row['workspace_id']}\t{row['prefix']}…{row['last4']}\t{row['kind']}\t{row['mode']}"
            f"\t{row['scopes'] or '-'}\t{state}\t{row['name'] or ''}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    revoked = asyncio.run(with_database(_database_url(args), lambda db: service.revoke_key(db, args.key_id)))
    if not revoked:
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stateset-server", description="Self-hosted StateSet API server")
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--database-url",
            help=f"sqlite:///path.db or postgresql://… (default: $STATESET_DATABASE_URL or {DEFAULT_DATABASE_URL})",
        )
        return p

    serve = with_db(commands.add_parser("serve", help="migrate if needed, then serve the API"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes (default: one per CPU; SQLite writers take turns, reads run in parallel)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = with_db(commands.add_parser("worker", help="send webhook deliveries (no API); run as many as needed"))
    worker.add_argument(
        "--concurrency", type=int, help="deliveries in flight at once (default: $STATESET_WEBHOOK_CONCURRENCY or 16)"
    )
    worker.set_defaults(func=cmd_worker)

    with_db(commands.add_parser("migrate", help="apply pending schema migrations")).set_defaults(func=cmd_migrate)

    workspaces = commands.add_parser("workspaces", help="manage workspaces").add_subparsers(
        dest="action", required=True
    )
    ws_create = with_db(workspaces.add_parser("create", help="create a workspace; prints its id"))
    ws_create.add_argument("--name", default="Workspace")
    ws_create.add_argument("--plan", choices=list(PLANS), help="default: $STATESET_DEFAULT_PLAN or enterprise")
    ws_create.set_defaults(func=cmd_workspaces_create)
    with_db(workspaces.add_parser("list")).set_defaults(func=cmd_workspaces_list)
    set_plan = with_db(
        workspaces.add_parser(
            "set-plan",
            help="change a workspace's plan; custom limits (enterprise only) replace the plan's, 0 = unlimited",
        )
    )
    set_plan.add_argument("workspace_id")
    set_plan.add_argument("--plan", choices=list(PLANS), required=True)
    for name in LIMIT_FIELDS:
        set_plan.add_argument("--" + name.replace("_", "-"), metavar="N|unlimited", dest=name)
    set_plan.set_defaults(func=cmd_workspaces_set_plan)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create = with_db(keys.add_parser("create", help="create a key; prints it (once) as the last line"))
    create.add_argument("--workspace", help="workspace id (default: the only workspace)")
    create.add_argument("--mode", choices=["test", "live"], default="test")
    create.add_argument("--kind", choices=["secret", "restricted", "publishable"], default="secret")
    create.add_argument(
        "--scope", action="append", default=[], help="for restricted keys, e.g. orders:read (repeatable)"
    )
    create.add_argument("--name")
    create.set_defaults(func=cmd_keys_create)
    listing = with_db(keys.add_parser("list"))
    listing.add_argument("--workspace")
    listing.set_defaults(func=cmd_keys_list)
    revoke = with_db(keys.add_parser("revoke"))
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, MigrationError, StorageUnavailable, OSError) as exc:
        print(f"stateset-server: {exc}", file=sys.stderr)
        return 2
