"""Idempotency keys (Stripe's semantics), stored atomically with the change they protect.

A write request with an `Idempotency-Key` header runs under a `Scope`. Every write endpoint does its
work in exactly one transaction, and the key is recorded with the response at the end of it, in
one statement: a crash can never leave a key recorded without its effect, or an effect without its
key. When another request already holds the key (on PostgreSQL a concurrent one is waited for), the
work is rolled back and that request's stored response is replayed. An error raised after the work
began, such as a declined payment, rolls the work back and is stored under the key in a second,
small transaction.

- same key, same request → the stored status and body, with `Idempotent-Replayed: true`;
- same key, different request → 422 IDEMPOTENCY_KEY_REUSED;
- same key while the first request is still running in this process → 409 IDEMPOTENCY_IN_PROGRESS
  (across processes the second waits for the first, then replays it);
- keys expire after 24 hours and are then free for a new request.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import msgspec

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.storage import Database, Tx
from stateset_server.storage.database import Lookup, RequiredRowMissing, Row
from stateset_server.storage.packing import Packed, pack, unpack
from stateset_server.workspaces.keys import Principal

__all__ = ["TTL_US", "IdempotentDatabase", "Replay", "Scope", "bind", "enter", "purge_expired"]

T = TypeVar("T")
TTL_US = 24 * 3600 * 1_000_000
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_encode = msgspec.json.encode


@dataclass
class Scope:
    principal: Principal
    key: str
    method: str
    path: str
    body: Callable[[], bytes]  # the request body as read by the handler
    error_body: Callable[[ApiError], bytes]  # the error envelope for this request
    render: Callable[[Any], tuple[int, Any]] | None = None
    used: bool = False
    stored: tuple[Any, int, bytes] | None = None  # (result, status, body) recorded with the write

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.method} {self.path}\n".encode())
        digest.update(self.body())
        return digest.hexdigest()


_current: ContextVar[Scope | None] = ContextVar("idempotency_scope", default=None)


class Replay(Exception):
    """A stored response: an earlier request's (`replayed`), or this request's own stored error."""

    def __init__(self, status: int, body: bytes, *, replayed: bool = True) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.replayed = replayed


def check_key(key: str) -> None:
    if not _KEY.match(key):
        raise ApiError(
            "VALIDATION_ERROR",
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.",
            {
                "field": "Idempotency-Key",
                "issue": "malformed key",
                "expected": "e.g. order-550e8400",
                "received": key[:300],
            },
            status=400,
        )


def enter(scope: Scope) -> Any:
    return _current.set(scope)


def leave(token: Any) -> None:
    _current.reset(token)


def stored_response(result: Any) -> tuple[int, bytes] | None:
    """The response recorded under this request's key for `result` (so it is not encoded twice)."""
    scope = _current.get()
    if scope is None or scope.stored is None or scope.stored[0] is not result:
        return None
    return scope.stored[1], scope.stored[2]


def bind(render: Callable[[Any], tuple[int, Any]]) -> None:
    """Say how this request's write result becomes its response, so the response can be stored
    inside the transaction. Every write endpoint calls it before its write."""
    scope = _current.get()
    if scope is not None:
        scope.render = render


async def _take(tx: Tx, scope: Scope, fingerprint: str, status: int, stored: bytes) -> bool:
    """Record the request's response (`stored`: packed) under its key, in its work's transaction; False when
    another request holds the key (on PostgreSQL this waits for that request's transaction to end).
    A key older than 24 hours is free again and is taken over. The transaction's last statement
    (`Tx.require`): on PostgreSQL, when the work wrote nothing yet, it goes with the work as one
    statement without BEGIN/COMMIT, and a key held by another request then fails the whole write
    with RequiredRowMissing."""
    p, now = scope.principal, now_us()
    return await tx.require(
        "INSERT INTO idempotency_keys"
        " (workspace_id, mode, key, fingerprint, method, path, status_code, response, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (workspace_id, mode, key) DO UPDATE SET"
        " fingerprint = excluded.fingerprint, method = excluded.method, path = excluded.path,"
        " status_code = excluded.status_code, response = excluded.response, created_at = excluded.created_at"
        " WHERE idempotency_keys.created_at < $10 RETURNING 1",
        p.workspace_id,
        p.mode,
        scope.key,
        fingerprint,
        scope.method,
        scope.path,
        status,
        stored,
        now,
        now - TTL_US,
    )


async def _held(tx: Tx, scope: Scope, fingerprint: str) -> None:
    """Raise what a request gets whose key another request holds: its stored response, or 422."""
    p = scope.principal
    row = await tx.fetchrow(
        "SELECT fingerprint, method, path, status_code, response FROM idempotency_keys"
        " WHERE workspace_id = $1 AND mode = $2 AND key = $3",
        p.workspace_id,
        p.mode,
        scope.key,
    )
    if row is not None and row["fingerprint"] != fingerprint:
        raise ApiError(
            "IDEMPOTENCY_KEY_REUSED",
            "This Idempotency-Key was already used with a different request.",
            {"idempotency_key": scope.key, "original_request": f"{row['method']} {row['path']}"},
        )
    if row is None or row["status_code"] == 0:  # gone meanwhile, or a claim from an older version
        raise ApiError("IDEMPOTENCY_IN_PROGRESS", "A request with this Idempotency-Key is still running.")
    raise Replay(int(row["status_code"]), unpack(row["response"]))


class _KeyTaken(Exception):
    """Another request holds the key: this transaction must not commit."""


class _WorkFailed(Exception):
    def __init__(self, error: ApiError) -> None:
        super().__init__(error.code)
        self.error = error


class IdempotentDatabase:
    """The database as request handlers see it: writes made under an idempotency scope are guarded."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.dialect = db.dialect
        self.url = db.url
        self.epochs = db.epochs

    async def read(self, fn: Callable[[Tx], Awaitable[T]], *, snapshot: bool = True) -> T:
        return await self._db.read(fn, snapshot=snapshot)

    async def lookup(self, query: Lookup, key: str) -> Row | None:
        return await self._db.lookup(query, key)

    async def flush(self) -> None:
        await self._db.flush()

    async def ping(self) -> None:
        await self._db.ping()

    async def close(self) -> None:
        await self._db.close()

    async def write(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        scope = _current.get()
        if scope is None or scope.used:
            return await self._db.write(fn)
        scope.used = True
        if scope.render is None:
            raise RuntimeError("a write endpoint did not bind its response renderer")
        render = scope.render
        fingerprint = scope.fingerprint()

        async def guarded(tx: Tx) -> T:
            try:
                result = await fn(tx)
            except ApiError as error:
                raise _WorkFailed(error) from error  # rolls the work back
            status, content = render(result)
            if type(content) is Packed:  # the body came with its stored form: no second compression
                body, stored = content
            else:
                body = _encode(content)
                stored = pack(body)
            if not await _take(tx, scope, fingerprint, status, stored):
                raise _KeyTaken  # rolls the work back: the key's first request answers for it
            scope.stored = (result, status, body)
            return result

        try:
            return await self._db.write(guarded)
        except (_KeyTaken, RequiredRowMissing):
            scope.stored = None  # (RequiredRowMissing: `guarded` returned, but nothing was kept)
            await self._replay(scope, fingerprint)
        except _WorkFailed as failed:
            error = failed.error
        if error.status >= 500:
            raise error
        body = scope.error_body(error)

        async def record(tx: Tx) -> None:
            # The work's 4xx, stored under the key right after its transaction rolled back.
            if not await _take(tx, scope, fingerprint, error.status, pack(body)):
                raise _KeyTaken

        try:
            await self._db.write(record)
        except (_KeyTaken, RequiredRowMissing):
            await self._replay(scope, fingerprint)
        raise Replay(error.status, body, replayed=False)  # sent as stored: a retry gets the same bytes

    async def _replay(self, scope: Scope, fingerprint: str) -> NoReturn:
        """Raise what the key's holder answered (`_held`), once what it wrote is on disk: the first
        request may not be answered yet itself (`Database.flush`)."""
        try:
            await self._db.read(lambda tx: _held(tx, scope, fingerprint))
        except Replay:
            await self._db.flush()
            raise
        raise AssertionError("_held always raises")


async def purge_expired(db: Database) -> int:
    """Forget keys older than 24 hours (run periodically by the server)."""
    cutoff = now_us() - TTL_US

    async def delete(tx: Tx) -> int:
        rows = await tx.fetch("DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING key", cutoff)
        return len(rows)

    return await db.write(delete)
