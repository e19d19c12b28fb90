"""SQL for workspaces and API keys."""

from __future__ import annotations

from stateset_server.storage import Row, Tx

__all__ = [
    "count_workspaces",
    "find_key_by_hash",
    "insert_key",
    "insert_workspace",
    "list_keys",
    "list_workspaces",
    "revoke_key",
    "workspace_exists",
]

_KEY_COLUMNS = "id, workspace_id, mode, kind, name, prefix, last4, scopes, created_at, revoked_at"


async def insert_workspace(tx: Tx, workspace_id: str, name: str, created_at: int) -> None:
    await tx.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)", workspace_id, name, created_at
    )


async def count_workspaces(tx: Tx) -> int:
    return int(await tx.fetchval("SELECT count(*) FROM workspaces"))


async def workspace_exists(tx: Tx, workspace_id: str) -> bool:
    return await tx.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id) is not None


async def list_workspaces(tx: Tx) -> list[Row]:
    return await tx.fetch("SELECT id, name, created_at FROM workspaces ORDER BY created_at, id")


async def insert_key(
    tx: Tx,
    *,
    key_id: str,
    workspace_id: str,
    mode: str,
    kind: str,
    name: str | None,
    secret_hash: str,
    prefix: str,
    last4: str,
    scopes: str,
    created_at: int,
) -> None:
    await tx.execute(
        "INSERT INTO api_keys (id, workspace_id, mode, kind, name, secret_hash, prefix, last4, scopes, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        key_id,
        workspace_id,
        mode,
        kind,
        name,
        secret_hash,
        prefix,
        last4,
        scopes,
        created_at,
    )


async def find_key_by_hash(tx: Tx, secret_hash: str) -> Row | None:
    return await tx.fetchrow(
        "SELECT id, workspace_id, mode, kind, scopes, revoked_at FROM api_keys WHERE secret_hash = $1", secret_hash
    )


async def list_keys(tx: Tx, workspace_id: str | None) -> list[Row]:
    if workspace_id is None:
        return await tx.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
    return await tx.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE workspace_id = $1 ORDER BY created_at, id", workspace_id
    )


async def revoke_key(tx: Tx, key_id: str, revoked_at: int) -> bool:
    row = await tx.fetchrow(
        "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING id", key_id, revoked_at
    )
    return row is not None
