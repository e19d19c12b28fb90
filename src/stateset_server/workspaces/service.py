"""Workspace and key operations (used by the CLI and at first start) and request authentication."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.storage import Database, Row, Tx
from stateset_server.storage.epoch import MarkedCache
from stateset_server.workspaces import repository
from stateset_server.workspaces.keys import (
    KINDS,
    MODES,
    Principal,
    generate_key,
    hash_key,
    parse_key,
    validate_scopes,
)
from stateset_server.workspaces.plans import Limits, default_plan, effective_limits, validate_plan

__all__ = [
    "NewKey",
    "authenticate",
    "bootstrap",
    "create_key",
    "create_workspace",
    "identify",
    "revoke_key",
    "set_plan",
]


@dataclass(frozen=True)
class NewKey:
    id: str
    workspace_id: str
    mode: str
    kind: str
    scopes: list[str]
    secret: str  # shown once, never stored


async def create_workspace(db: Database, name: str, plan: str | None = None, *, operator: bool = False) -> str:
    """A new workspace on `plan` (default: $STATESET_DEFAULT_PLAN, else Enterprise)."""
    plan, _ = validate_plan(plan or default_plan(), {})
    workspace_id = new_id("ws")

    async def write(tx: Tx) -> None:
        await repository.insert_workspace(tx, workspace_id, name, now_us(), plan, operator)

    await db.write(write)
    return workspace_id


async def set_plan(db: Database, workspace_id: str, plan: str, custom: dict[str, int | None] | None = None) -> Row:
    """Change a workspace's plan and replace its custom limits (Enterprise only; 0 = unlimited).
    Raises PlanError for an invalid plan or limit, ValueError for an unknown workspace."""
    plan, limits = validate_plan(plan, custom or {})

    async def write(tx: Tx) -> Row:
        row = await repository.set_plan(tx, workspace_id, plan, limits)
        if row is None:
            raise ValueError(f"no such workspace: {workspace_id}")
        return row

    return await db.write(write)


async def create_key(
    db: Database,
    *,
    workspace_id: str,
    mode: str = "test",
    kind: str = "secret",
    scopes: list[str] | None = None,
    name: str | None = None,
) -> NewKey:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if kind == "restricted":
        scopes = validate_scopes(scopes or [])
    elif scopes:
        raise ValueError("only restricted keys take scopes")
    else:
        scopes = []
    secret = generate_key(kind, mode)
    key_id = new_id("key")

    async def write(tx: Tx) -> None:
        if not await repository.workspace_exists(tx, workspace_id):
            raise ValueError(f"no such workspace: {workspace_id}")
        await repository.insert_key(
            tx,
            key_id=key_id,
            workspace_id=workspace_id,
            mode=mode,
            kind=kind,
            name=name,
            secret_hash=hash_key(secret),
            prefix=secret[: len(KINDS[kind]) + len(mode) + 2],
            last4=secret[-4:],
            scopes=" ".join(scopes),
            created_at=now_us(),
        )

    await db.write(write)
    return NewKey(key_id, workspace_id, mode, kind, scopes, secret)


async def revoke_key(db: Database, key_id: str) -> bool:
    async def write(tx: Tx) -> bool:
        return await repository.revoke_key(tx, key_id, now_us())

    return await db.write(write)


async def bootstrap(db: Database) -> NewKey | None:
    """On an empty database: create the owner's workspace and a sandbox secret key."""

    async def empty(tx: Tx) -> bool:
        return await repository.count_workspaces(tx) == 0

    if not await db.read(empty):
        return None
    # The owner's workspace is the operator (it may change plans over the API) and is never throttled.
    workspace_id = await create_workspace(db, "Default workspace", "enterprise", operator=True)
    return await create_key(db, workspace_id=workspace_id, mode="test", kind="secret", name="Sandbox key")


def bearer_token(authorization: str | None) -> str | None:
    """The key from `Bearer <key>` or from HTTP Basic with the key as user name (as curl -u sends)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[0]
    return ""


async def authenticate(db: Database, authorization: str | None) -> Principal:
    return (await identify(db, authorization))[0]


async def identify(db: Database, authorization: str | None) -> tuple[Principal, Limits]:
    """The caller and the rate limits of its key (its workspace's plan), from one query."""
    token = bearer_token(authorization)
    if token is None:
        raise ApiError(
            "MISSING_API_KEY",
            "No API key provided. Send it as 'Authorization: Bearer sk_test_...'.",
            headers={"WWW-Authenticate": 'Bearer realm="stateset"'},
        )
    if parse_key(token) is None:
        raise _invalid_key()
    secret_hash = hash_key(token)
    # A valid key seen before, if nothing about keys or plans changed since (in any process).
    marker = _known.marker(db.epochs)
    hit, known = _known.get(db.epochs, marker, secret_hash)
    if hit and known is not None:
        return known

    async def lookup(tx: Tx) -> tuple[Principal, Limits] | None:
        row = await repository.find_key_by_hash(tx, secret_hash)
        if row is None or row["revoked_at"] is not None:
            return None
        scopes = frozenset(row["scopes"].split()) if row["scopes"] else frozenset()
        limits = effective_limits(row["plan"], row["per_second"], row["per_minute"], row["per_day"], row["concurrent"])
        return Principal(row["id"], row["workspace_id"], row["mode"], row["kind"], scopes), limits

    found = await db.read(lookup, snapshot=False)
    if found is None:
        raise _invalid_key()  # unknown and revoked keys are never cached: a new key works at once
    _known.put(db.epochs, marker, secret_hash, found)
    return found


def _invalid_key() -> ApiError:
    return ApiError(
        "INVALID_API_KEY",
        "The API key provided is invalid, expired or revoked.",
        headers={"WWW-Authenticate": 'Bearer realm="stateset", error="invalid_token"'},
    )


# Valid keys by hash → what identify returns for them.
_known: MarkedCache[str, tuple[Principal, Limits]] = MarkedCache("access", 10_000)
