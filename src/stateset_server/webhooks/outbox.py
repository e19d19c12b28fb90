"""The durable outbox: deliveries are queued in the very transaction that writes their event.

`events.log.append` calls `enqueue` for every event, so an event is committed together with one
pending delivery per enabled endpoint that subscribes to it, or not at all — a crash can never lose
a webhook nor send one for a change that was rolled back. Dispatchers (dispatcher.py) send them later.

Cost on the write path: one indexed query per event (the partial index `webhook_endpoints_active`
holds only live, enabled endpoints), plus one insert per matching endpoint. A per-workspace cache of
the endpoint list would save the query, but needs invalidation across processes; not done yet.

This module is imported by events/log.py, so it must not import the events package itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from stateset_server.core.ids import new_id
from stateset_server.storage import Tx
from stateset_server.webhooks.model import matches

__all__ = ["enqueue", "insert_deliveries"]


async def insert_deliveries(
    tx: Tx,
    *,
    workspace_id: str,
    mode: str,
    targets: Iterable[tuple[str, str, str]],
    now: int,
    origin: str = "event",
) -> int:
    """Queue (endpoint_id, event_id, event_type) deliveries, due now; returns how many."""
    rows = [
        (new_id("wdl"), workspace_id, mode, endpoint_id, event_id, event_type, origin, now, now, now)
        for endpoint_id, event_id, event_type in targets
    ]
    if rows:
        await tx.executemany(
            "INSERT INTO webhook_deliveries (id, workspace_id, mode, endpoint_id, event_id, event_type, origin,"
            " status, next_attempt_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10)",
            rows,
        )
    return len(rows)


async def enqueue(tx: Tx, *, workspace_id: str, mode: str, event_id: str, event_type: str, now: int) -> int:
    """One pending delivery per enabled endpoint of the workspace and mode whose patterns match."""
    endpoints = await tx.fetch(
        "SELECT id, events FROM webhook_endpoints"
        " WHERE workspace_id = $1 AND mode = $2 AND enabled = 1 AND deleted_at IS NULL",
        workspace_id,
        mode,
    )
    if not endpoints:
        return 0
    targets = [
        (row["id"], event_id, event_type)
        for row in endpoints
        if matches(msgspec.json.decode(row["events"]), event_type)
    ]
    return await insert_deliveries(tx, workspace_id=workspace_id, mode=mode, targets=targets, now=now)
