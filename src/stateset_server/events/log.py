"""Appending to and reading the event log."""

from __future__ import annotations

import msgspec

from stateset_server import API_VERSION
from stateset_server.core.clock import iso
from stateset_server.core.ids import new_id
from stateset_server.storage import IN_WORKSPACE, Row, Tx
from stateset_server.storage.packing import pack, unpack
from stateset_server.webhooks import outbox
from stateset_server.workspaces.keys import Principal

__all__ = ["COLUMNS", "EventOut", "append", "append_each", "event_out", "get_event", "object_events"]

COLUMNS = (
    "seq, id, workspace_id, mode, type, object_type, object_id, data, previous_attributes,"
    " request_id, api_key_id, created_at, object_status"
)


_INSERT = (
    f"INSERT INTO events ({COLUMNS.removeprefix('seq, ')}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)


async def append(
    tx: Tx,
    *,
    principal: Principal,
    type: str,
    object_type: str,
    object_id: str,
    data: bytes,
    created_at: int,
    request_id: str | None,
    previous_attributes: bytes | None = None,
    object_status: str | None = None,
    event_id: str | None = None,
) -> str:
    """Write one event; `data` is the object's JSON snapshot after the change, `object_status` its
    status after the change (the timeline lists the events where it changed). `event_id` when the
    caller needed it before writing (default: a new one)."""
    event_id = event_id or new_id("evt")
    await append_each(
        tx, principal=principal, types=[type], event_ids=[event_id], object_type=object_type, object_id=object_id,
        data=data, created_at=created_at, request_id=request_id, previous_attributes=previous_attributes,
        object_status=object_status,
    )  # fmt: skip
    return event_id


async def append_each(
    tx: Tx,
    *,
    principal: Principal,
    types: list[str],
    event_ids: list[str],
    object_type: str,
    object_id: str,
    data: bytes,
    created_at: int,
    request_id: str | None,
    previous_attributes: bytes | None = None,
    object_status: str | None = None,
) -> None:
    """Write the events of one change (one per type, with the same snapshot) in one statement, and
    their webhook deliveries, which commit (or roll back) with them: the outbox."""
    # One packed snapshot for all the change's events (storage/packing.py).
    stored, previous = pack(data), previous_attributes.decode() if previous_attributes is not None else None
    rows = [
        (
            event_id, principal.workspace_id, principal.mode, type, object_type, object_id, stored, previous,
            request_id, principal.key_id, created_at, object_status,
        )
        for type, event_id in zip(types, event_ids, strict=True)
    ]  # fmt: skip
    if len(rows) == 1:
        await tx.execute(_INSERT, *rows[0])
    else:
        await tx.executemany(_INSERT, rows)
    for type, event_id in zip(types, event_ids, strict=True):
        await outbox.enqueue(
            tx, workspace_id=principal.workspace_id, mode=principal.mode, event_id=event_id, event_type=type,
            now=created_at,
        )  # fmt: skip


class EventData(msgspec.Struct):
    object: msgspec.Raw


class EventMetadata(msgspec.Struct):
    workspace_id: str
    api_version: str
    request_id: str | None
    api_key_id: str | None


class EventOut(msgspec.Struct):
    """An event as the API (and, later, webhooks) shows it — the spec's webhook payload structure."""

    id: str
    type: str
    created: str
    livemode: bool
    data: EventData
    previous_attributes: msgspec.Raw | None
    metadata: EventMetadata
    object: str = "event"


def event_out(row: Row) -> EventOut:
    previous = row["previous_attributes"]
    return EventOut(
        id=row["id"],
        type=row["type"],
        created=iso(row["created_at"]),
        livemode=row["mode"] == "live",
        data=EventData(msgspec.Raw(unpack(row["data"]))),
        previous_attributes=msgspec.Raw(previous.encode()) if previous is not None else None,
        metadata=EventMetadata(row["workspace_id"], API_VERSION, row["request_id"], row["api_key_id"]),
    )


async def get_event(tx: Tx, principal: Principal, event_id: str) -> Row | None:
    return await tx.fetchrow(
        f"SELECT {COLUMNS} FROM events WHERE id = $1 AND {IN_WORKSPACE}",
        event_id,
        principal.workspace_id,
        principal.mode,
    )


async def object_events(tx: Tx, principal: Principal, object_id: str) -> list[Row]:
    """One object's events in commit order (its timeline)."""
    return await tx.fetch(
        f"SELECT id, type, created_at, object_status FROM events WHERE object_id = $1 AND {IN_WORKSPACE} ORDER BY seq",
        object_id,
        principal.workspace_id,
        principal.mode,
    )
