"""SQL for workspaces and API keys."""

from __future__ import annotations

from stateset_server.storage import Row, Tx

__all__ = [
    "count_workspaces",
    "find_key_by_hash",
    "get_workspace",
    "insert_key",
    "insert_workspace",
    "list_keys",
    "list_workspaces",
    "revoke_key",
    "set_plan",
    "workspace_exists",
]

_KEY_COLUMNS = "id, workspace_id, mode, kind, name, prefix, last4, scopes, created_at, revoked_at"
_WORKSPACE_COLUMNS = "id, name, created_at, plan, per_second, per_minute, per_day, concurrent, operator"


async def insert_workspace(
    tx: Tx, workspace_id: str, name: str, created_at: int, plan: str = "enterprise", operator: bool = False
) -> None:
    await tx.execute(
        "INSERT INTO workspaces (id, name, created_at, plan, operator) VALUES ($1, $2, $3, $4, $5)",
        workspace_id,
        name,
        created_at,
        plan,
        int(operator),
    )


async def get_workspace(tx: Tx, workspace_id: str) -> Row | None:
    return await tx.fetchrow(f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1", workspace_id)


async def set_plan(tx: Tx, workspace_id: str, plan: str, limits: dict[str, int | None]) -> Row | None:
    """Replace the plan and every custom limit (None = the plan's value); the updated row, or None."""
    await tx.invalidate("access")  # cached keys and plans (service.identify)
    return await tx.fetchrow(
        "UPDATE workspaces SET plan = $2, per_second = $3, per_minute = $4, per_day = $5, concurrent = $6"
        f" WHERE id = $1 RETURNING {_WORKSPACE_COLUMNS}",
        workspace_id,
        plan,
        limits.get("per_second"),
        limits.get("per_minute"),
        limits.get("per_day"),
        limits.get("concurrent"),
    )


async def count_workspaces(tx: Tx) -> int:
    return int(await tx.fetchval("SELECT count(*) FROM workspaces"))


async def workspace_exists(tx: Tx, workspace_id: str) -> bool:
    return await tx.fetchval("SELECT 1 FROM workspaces WHERE id = $1", workspace_id) is not None


async def list_workspaces(tx: Tx) -> list[Row]:
    return await tx.fetch(f"SELECT {_WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at, id")


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
    """The key and its workspace's plan columns: one indexed query per request serves both
    authentication and rate limiting, and a plan change applies to the very next request."""
    return await tx.fetchrow(
        "SELECT k.id, k.workspace_id, k.mode, k.kind, k.scopes, k.revoked_at,"
        " w.plan, w.per_second, w.per_minute, w.per_day, w.concurrent"
        " FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id WHERE k.secret_hash = $1",
        secret_hash,
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
    await tx.invalidate("access")  # cached keys and plans (service.identify)
    return row is not None
