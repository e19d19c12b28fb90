"""The durable outbox: deliveries are queued in the very transaction that writes their event.

`events.log.append` calls `enqueue` for every event, so an event is committed together with one
pending delivery per enabled endpoint that subscribes to it, or not at all — a crash can never lose
a webhook nor send one for a change that was rolled back. Dispatchers (dispatcher.py) send them later.

Cost on the write path: one insert per matching endpoint, and the workspace's endpoint list: from
this process's cache while no endpoint changed anywhere (storage/epoch.py), else one indexed query
(the partial index `webhook_endpoints_active` holds only live, enabled endpoints). A transaction that
changed endpoints itself reads them from the database.

This module is imported by events/log.py, so it must not import the events package itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from stateset_server.core.ids import new_id
from stateset_server.storage import Tx
from stateset_server.storage.epoch import MarkedCache
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


# (workspace, mode) → [(endpoint id, its event patterns)] of its live, enabled endpoints.
_known: MarkedCache[tuple[str, str], list[tuple[str, list[str]]]] = MarkedCache("webhooks", 10_000)


async def _endpoints(tx: Tx, workspace_id: str, mode: str) -> list[tuple[str, list[str]]]:
    # A transaction that changed endpoints itself sees what the others cannot yet: no cache for it.
    marker = None if "webhooks" in tx.invalidated else _known.marker(tx.epochs)
    hit, cached = _known.get(tx.epochs, marker, (workspace_id, mode))
    if hit and cached is not None:
        return cached
    rows = await tx.fetch(
        "SELECT id, events FROM webhook_endpoints"
        " WHERE workspace_id = $1 AND mode = $2 AND enabled = 1 AND deleted_at IS NULL",
        workspace_id,
        mode,
    )
    endpoints = [(row["id"], msgspec.json.decode(row["events"])) for row in rows]
    _known.put(tx.epochs, marker, (workspace_id, mode), endpoints)
    return endpoints


async def enqueue(tx: Tx, *, workspace_id: str, mode: str, event_id: str, event_type: str, now: int) -> int:
    """One pending delivery per enabled endpoint of the workspace and mode whose patterns match."""
    endpoints = await _endpoints(tx, workspace_id, mode)
    if not endpoints:
        return 0
    targets = [(endpoint, event_id, event_type) for endpoint, patterns in endpoints if matches(patterns, event_type)]
    return await insert_deliveries(tx, workspace_id=workspace_id, mode=mode, targets=targets, now=now)
