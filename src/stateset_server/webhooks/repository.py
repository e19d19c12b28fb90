"""SQL for webhook endpoints, deliveries and attempts. Endpoint reads are scoped to a workspace and
mode; a deleted endpoint (soft deleted: `deleted_at` set) reads as absent everywhere."""

from __future__ import annotations

from typing import Any

import msgspec

from stateset_server.events import log
from stateset_server.storage import IN_WORKSPACE, Row, Tx
from stateset_server.webhooks.model import Endpoint
from stateset_server.webhooks.schemas import AttemptOut, attempt_out, webhook_out
from stateset_server.workspaces.keys import Principal

__all__ = [
    "DELIVERY_COLUMNS",
    "ENDPOINT_COLUMNS",
    "attempts_of",
    "cancel_pending",
    "disable_endpoint",
    "endpoint_from_row",
    "find_endpoint_by_url",
    "get_delivery",
    "get_endpoint",
    "insert_endpoint",
    "record_disabled",
    "system_principal",
    "update_endpoint",
]

_encode = msgspec.json.encode
ENDPOINT_COLUMNS = (
    "id, workspace_id, mode, url, description, events, secret, previous_secret, previous_secret_expires_at,"
    " headers, metadata, enabled, disabled_reason, disabled_at, failure_streak, failing_since, created_at,"
    " updated_at, deleted_at"
)
_MUTABLE = (
    "url",
    "description",
    "events",
    "secret",
    "previous_secret",
    "previous_secret_expires_at",
    "headers",
    "metadata",
    "enabled",
    "disabled_reason",
    "disabled_at",
    "failure_streak",
    "failing_since",
    "updated_at",
    "deleted_at",
)
_JSON_FIELDS = {"events", "headers", "metadata"}
DELIVERY_COLUMNS = (
    "id, workspace_id, mode, endpoint_id, event_id, event_type, origin, status, attempt_count, failures,"
    " next_attempt_at, locked_until, locked_by, last_status_code, last_error, last_attempt_at, completed_at,"
    " created_at, updated_at"
)


def endpoint_from_row(row: Row) -> Endpoint:
    return Endpoint(
        id=row["id"],
        workspace_id=row["workspace_id"],
        mode=row["mode"],
        url=row["url"],
        description=row["description"],
        events=msgspec.json.decode(row["events"]),
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        headers=msgspec.json.decode(row["headers"]),
        metadata=msgspec.json.decode(row["metadata"]),
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        failure_streak=int(row["failure_streak"]),
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deleted_at=row["deleted_at"],
    )


def _column_value(endpoint: Endpoint, name: str) -> Any:
    value = getattr(endpoint, name)
    if name in _JSON_FIELDS:
        return _encode(value).decode()
    if name == "enabled":
        return int(value)
    return value


async def get_endpoint(
    tx: Tx, workspace_id: str | None, mode: str | None, endpoint_id: str, *, for_update: bool = False
) -> Endpoint | None:
    """The live endpoint with this id; `workspace_id=None` (the dispatcher) skips the tenant check."""
    lock = " FOR UPDATE" if for_update else ""
    if workspace_id is None:
        row = await tx.fetchrow(
            f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL{lock}",
            endpoint_id,
        )
    else:
        row = await tx.fetchrow(
            f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
            f" WHERE id = $1 AND {IN_WORKSPACE} AND deleted_at IS NULL{lock}",
            endpoint_id,
            workspace_id,
            mode,
        )
    return None if row is None else endpoint_from_row(row)


async def find_endpoint_by_url(tx: Tx, workspace_id: str, mode: str, url: str) -> Endpoint | None:
    """The newest live endpoint with exactly this URL (the simulator signs with its secret)."""
    row = await tx.fetchrow(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
        " WHERE workspace_id = $1 AND mode = $2 AND url = $3 AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 1",
        workspace_id,
        mode,
        url,
    )
    return None if row is None else endpoint_from_row(row)


async def insert_endpoint(tx: Tx, endpoint: Endpoint) -> None:
    await tx.invalidate("webhooks")  # outbox.enqueue's cache of endpoints, in every process
    await tx.execute(
        f"INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        endpoint.id,
        endpoint.workspace_id,
        endpoint.mode,
        *(_column_value(endpoint, name) for name in _MUTABLE[:13]),
        endpoint.created_at,
        endpoint.updated_at,
        endpoint.deleted_at,
    )


async def update_endpoint(tx: Tx, before: Endpoint, after: Endpoint) -> None:
    """Write the columns that differ (callers hold the row: read FOR UPDATE in this transaction)."""
    changed = [name for name in _MUTABLE if getattr(before, name) != getattr(after, name)]
    if not changed:
        return
    await tx.invalidate("webhooks")
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changed, start=2))
    await tx.execute(
        f"UPDATE webhook_endpoints SET {assignments} WHERE id = $1",
        before.id,
        *(_column_value(after, name) for name in changed),
    )


def system_principal(workspace_id: str, mode: str) -> Principal:
    """Who events written by the server itself (not an API request) are attributed to."""
    return Principal("system", workspace_id, mode, "secret", frozenset())


async def cancel_pending(tx: Tx, endpoint: Endpoint, now: int, reason: str) -> None:
    """Fail the endpoint's queued deliveries (not those in flight: their attempt settles them).
    They can be sent again with retry or replay once the endpoint is enabled."""
    await tx.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = $4,"
        " completed_at = $5, updated_at = $5"
        " WHERE workspace_id = $1 AND mode = $2 AND endpoint_id = $3 AND status = 'pending'"
        " AND (locked_until IS NULL OR locked_until < $5)",
        endpoint.workspace_id,
        endpoint.mode,
        endpoint.id,
        reason,
        now,
    )


async def record_disabled(
    tx: Tx, principal: Principal, before: Endpoint, after: Endpoint, *, now: int, request_id: str | None
) -> None:
    """After an endpoint went from enabled to disabled (already written): drop its queue and emit
    `webhook_endpoint.disabled`. The snapshot leaves out secrets and custom headers: other endpoints
    subscribed to `*` receive this event."""
    await cancel_pending(tx, after, now, f"endpoint disabled: {after.disabled_reason}")
    await log.append(
        tx,
        principal=principal,
        type="webhook_endpoint.disabled",
        object_type="webhook_endpoint",
        object_id=after.id,
        data=_encode(webhook_out(after, now=now, headers=False)),
        previous_attributes=_encode(
            {"enabled": before.enabled, "status": "enabled", "disabled_reason": before.disabled_reason}
        ),
        created_at=now,
        request_id=request_id,
        object_status="disabled",
    )


async def disable_endpoint(tx: Tx, endpoint_id: str, reason: str, now: int) -> Endpoint | None:
    """The server disables an endpoint (410 Gone, a failure streak); None if it already was."""
    before = await get_endpoint(tx, None, None, endpoint_id, for_update=True)
    if before is None or not before.enabled:
        return None
    after = msgspec.structs.replace(before, enabled=False, disabled_reason=reason, disabled_at=now, updated_at=now)
    await update_endpoint(tx, before, after)
    principal = system_principal(before.workspace_id, before.mode)
    await record_disabled(tx, principal, before, after, now=now, request_id=None)
    return after


async def get_delivery(tx: Tx, principal: Principal, endpoint_id: str, delivery_id: str) -> Row | None:
    return await tx.fetchrow(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND {IN_WORKSPACE} AND endpoint_id = $4",
        delivery_id,
        principal.workspace_id,
        principal.mode,
        endpoint_id,
    )


async def attempts_of(tx: Tx, delivery_id: str) -> list[AttemptOut]:
    rows = await tx.fetch(
        "SELECT attempt, started_at, status_code, latency_ms, outcome, error, response_body FROM webhook_attempts"
        " WHERE delivery_id = $1 ORDER BY attempt",
        delivery_id,
    )
    return [attempt_out(row) for row in rows]
