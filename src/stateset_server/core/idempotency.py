"""Idempotency keys (Stripe's semantics), stored atomically with the change they protect.

A write request with an `Idempotency-Key` header runs under a `Scope`. Every write endpoint does its
work in exactly one transaction; inside it, the key is claimed first (on PostgreSQL a concurrent
claim waits for the first to commit), the work runs, and the response is stored before the commit.
A crash can therefore never leave a key recorded without its effect, or an effect without its key.
An error raised after the work began, such as a declined payment, rolls the work back and is then
stored under the key in a second, small transaction.

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
from typing import Any, TypeVar

import msgspec

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.storage import Database, Tx
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


def bind(render: Callable[[Any], tuple[int, Any]]) -> None:
    """Say how this request's write result becomes its response, so the response can be stored
    inside the transaction. Every write endpoint calls it before its write."""
    scope = _current.get()
    if scope is not None:
        scope.render = render


async def _claim(tx: Tx, scope: Scope, fingerprint: str, now: int) -> None:
    """Take the key for this request, or raise Replay / 422 for the request that already has it."""
    p = scope.principal
    inserted = await tx.fetchval(
        "INSERT INTO idempotency_keys"
        " (workspace_id, mode, key, fingerprint, method, path, status_code, response, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, 0, '', $7) ON CONFLICT (workspace_id, mode, key) DO NOTHING RETURNING 1",
        p.workspace_id,
        p.mode,
        scope.key,
        fingerprint,
        scope.method,
        scope.path,
        now,
    )
    if inserted is not None:
        return
    reclaimed = await tx.fetchval(
        "UPDATE idempotency_keys SET fingerprint = $4, method = $5, path = $6, status_code = 0, response = '',"
        " created_at = $7 WHERE workspace_id = $1 AND mode = $2 AND key = $3 AND created_at < $8 RETURNING 1",
        p.workspace_id,
        p.mode,
        scope.key,
        fingerprint,
        scope.method,
        scope.path,
        now,
        now - TTL_US,
    )
    if reclaimed is not None:
        return
    row = await tx.fetchrow(
        "SELECT fingerprint, method, path, status_code, response FROM idempotency_keys"
        " WHERE workspace_id = $1 AND mode = $2 AND key = $3",
        p.workspace_id,
        p.mode,
        scope.key,
    )
    assert row is not None
    if row["fingerprint"] != fingerprint:
        raise ApiError(
            "IDEMPOTENCY_KEY_REUSED",
            "This Idempotency-Key was already used with a different request.",
            {"idempotency_key": scope.key, "original_request": f"{row['method']} {row['path']}"},
        )
    if row["status_code"] == 0:  # only visible if a claim survived without its response: never expected
        raise ApiError("IDEMPOTENCY_IN_PROGRESS", "A request with this Idempotency-Key is still running.")
    raise Replay(int(row["status_code"]), row["response"].encode())


async def _store(tx: Tx, scope: Scope, status: int, body: bytes) -> None:
    p = scope.principal
    await tx.execute(
        "UPDATE idempotency_keys SET status_code = $4, response = $5"
        " WHERE workspace_id = $1 AND mode = $2 AND key = $3",
        p.workspace_id,
        p.mode,
        scope.key,
        status,
        body.decode(),
    )


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
            await _claim(tx, scope, fingerprint, now_us())
            try:
                result = await fn(tx)
            except ApiError as error:
                raise _WorkFailed(error) from error  # rolls back the work and the claim alike
            status, content = render(result)
            await _store(tx, scope, status, _encode(content))
            return result

        try:
            return await self._db.write(guarded)
        except _WorkFailed as failed:
            error = failed.error
        if error.status >= 500:
            raise error
        body = scope.error_body(error)

        async def record(tx: Tx) -> None:
            # The work's 4xx, stored under the key right after its transaction rolled back (a
            # savepoint would cost two round trips on every write). A request that took the key
            # in between is what a retry replays instead.
            await _claim(tx, scope, fingerprint, now_us())
            await _store(tx, scope, error.status, body)

        await self._db.write(record)
        raise Replay(error.status, body, replayed=False)  # sent as stored: a retry gets the same bytes


async def purge_expired(db: Database) -> int:
    """Forget keys older than 24 hours (run periodically by the server)."""
    cutoff = now_us() - TTL_US

    async def delete(tx: Tx) -> int:
        rows = await tx.fetch("DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING key", cutoff)
        return len(rows)

    return await db.write(delete)
