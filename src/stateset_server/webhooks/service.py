"""Webhook commands and queries: endpoints, their delivery log, retry, replay, and the simulator.

Every command is one transaction. Anything that needs the network (resolving a URL for the SSRF check,
the simulator's request) happens outside it: a SQLite transaction function may only await its Tx.
Endpoint changes emit no events except `webhook_endpoint.disabled` (an endpoint's configuration may
hold receivers' tokens, and other endpoints subscribed to `*` would receive it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from msgspec import UNSET

from stateset_server import API_VERSION
from stateset_server.core.clock import iso, now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.listing import Field, ListQuery, ListSpec, fetch_page, read_page
from stateset_server.core.metadata import check_metadata, merge_metadata
from stateset_server.events import log
from stateset_server.storage import IN_WORKSPACE, Database, Row, Tx
from stateset_server.webhooks import dispatcher, outbox, repository, samples, ssrf
from stateset_server.webhooks.model import (
    EVENT_TYPES,
    Endpoint,
    check_headers,
    check_patterns,
    check_secret,
    check_url_shape,
    matches,
    new_secret,
)
from stateset_server.webhooks.schemas import (
    CreateWebhookIn,
    DeletedWebhookOut,
    DeliveryOut,
    ReplayIn,
    ReplayOut,
    RotateSecretIn,
    SimulateIn,
    SimulateOut,
    UpdateWebhookIn,
    WebhookOut,
    delivery_out,
    webhook_out,
)
from stateset_server.workspaces.keys import Principal

__all__ = [
    "DELIVERY_LIST",
    "MAX_ENDPOINTS",
    "REPLAY_LIMIT",
    "WEBHOOK_LIST",
    "check_update",
    "create_endpoint",
    "delete_endpoint",
    "draft_endpoint",
    "edit_endpoint",
    "get_delivery",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "replay",
    "retry_delivery",
    "rotate_secret",
    "simulate",
    "update_endpoint",
]

MAX_ENDPOINTS = 50  # per workspace and mode: every event is matched against all of them
REPLAY_LIMIT = 10_000  # events looked at per replay request
_MANUAL = "disabled by an API request"
_encode = msgspec.json.encode


def _enabled(raw: str) -> int | None:
    return {"true": 1, "false": 0, "enabled": 1, "disabled": 0}.get(raw.strip().lower())


_CREATED = Field("created_at", "datetime", sortable=True)
WEBHOOK_LIST = ListSpec(
    table="(SELECT * FROM webhook_endpoints WHERE deleted_at IS NULL) AS webhook_endpoints",
    fields={
        "id": Field("id", "string"),
        "url": Field("url", "string"),
        "enabled": Field("enabled", "enum", parse=_enabled, choices=("true", "false")),
        "created_at": _CREATED,
        "created": _CREATED,
        "updated_at": Field("updated_at", "datetime", sortable=True),
    },
    aliases={
        "status": ("enabled", "eq"),
        "created_after": ("created_at", "gt"),
        "created_before": ("created_at", "lt"),
    },
    search=("url", "description"),
)
DELIVERY_LIST = ListSpec(
    table="webhook_deliveries",
    fields={
        "id": Field("id", "string"),
        "endpoint_id": Field("endpoint_id", "string"),
        "event_id": Field("event_id", "string"),
        "event_type": Field("event_type", "string", wildcard=True),
        "status": Field(
            "status",
            "enum",
            parse=lambda raw: raw if raw in ("pending", "succeeded", "failed") else None,
            choices=("pending", "succeeded", "failed"),
        ),
        "origin": Field("origin", "string"),
        "created_at": _CREATED,
        "created": _CREATED,
    },
    aliases={
        "type": ("event_type", "eq"),
        "created_after": ("created_at", "gt"),
        "created_before": ("created_at", "lt"),
    },
    search=("event_type", "event_id"),
)


def _text(value: str | None) -> str | None:
    return None if value is None else value.strip() or None


def draft_endpoint(body: CreateWebhookIn, principal: Principal, *, now: int) -> Endpoint:
    """A new endpoint from a validated request: every check that needs neither network nor database."""
    return Endpoint(
        id=new_id("we"),
        workspace_id=principal.workspace_id,
        mode=principal.mode,
        url=check_url_shape(body.url),
        description=_text(body.description),
        events=check_patterns(body.events if body.events is not None else ["*"]),
        secret=check_secret(body.secret) if body.secret is not None else new_secret(),
        previous_secret=None,
        previous_secret_expires_at=None,
        headers=check_headers(body.headers),
        metadata=check_metadata(body.metadata),
        enabled=body.enabled,
        disabled_reason=None if body.enabled else _MANUAL,
        disabled_at=None if body.enabled else now,
        failure_streak=0,
        failing_since=None,
        created_at=now,
        updated_at=now,
    )


async def _current(tx: Tx, principal: Principal, endpoint_id: str, *, for_update: bool = False) -> Endpoint:
    endpoint = await repository.get_endpoint(
        tx, principal.workspace_id, principal.mode, endpoint_id, for_update=for_update
    )
    if endpoint is None:
        raise ApiError.not_found("webhook_endpoint", endpoint_id)
    return endpoint


async def create_endpoint(db: Database, principal: Principal, draft: Endpoint) -> WebhookOut:
    async def write(tx: Tx) -> WebhookOut:
        count = await tx.fetchval(
            "SELECT count(*) FROM webhook_endpoints WHERE workspace_id = $1 AND mode = $2 AND deleted_at IS NULL",
            principal.workspace_id,
            principal.mode,
        )
        if int(count) >= MAX_ENDPOINTS:
            raise ApiError.field(
                "url",
                f"at most {MAX_ENDPOINTS} webhook endpoints per workspace and mode",
                expected="delete an endpoint first",
                received=draft.url,
                code="VALIDATION_ERROR",
            )
        await repository.insert_endpoint(tx, draft)
        return webhook_out(draft, now=draft.created_at, secret=True)

    return await db.write(write)


async def list_endpoints(db: Database, principal: Principal, query: ListQuery) -> dict[str, Any]:
    now = now_us()
    data, pagination = await read_page(
        db, WEBHOOK_LIST, query, principal, repository.ENDPOINT_COLUMNS,
        lambda row: webhook_out(repository.endpoint_from_row(row), now=now),
    )  # fmt: skip
    return {"data": data, "pagination": pagination}


async def get_endpoint(db: Database, principal: Principal, endpoint_id: str) -> WebhookOut:
    async def read(tx: Tx) -> WebhookOut:
        return webhook_out(await _current(tx, principal, endpoint_id), now=now_us())

    return await db.read(read)


def check_update(body: UpdateWebhookIn) -> None:
    """The checks an update's fields need on their own, before any transaction."""
    if body.url is not UNSET:
        check_url_shape(body.url)
    if body.events is not UNSET:
        check_patterns(body.events)
    if body.headers is not UNSET:
        check_headers(body.headers)


def edit_endpoint(before: Endpoint, body: UpdateWebhookIn, *, now: int) -> Endpoint:
    """The endpoint after an update (the same object when nothing changes)."""
    changes: dict[str, Any] = {}
    if body.url is not UNSET:
        changes["url"] = check_url_shape(body.url)
    if body.events is not UNSET:
        changes["events"] = check_patterns(body.events)
    if body.headers is not UNSET:
        changes["headers"] = check_headers(body.headers)
    if body.description is not UNSET:
        changes["description"] = _text(body.description)
    if body.metadata is not None:
        changes["metadata"] = merge_metadata(before.metadata, body.metadata)
    if body.enabled is not UNSET and body.enabled != before.enabled:
        if body.enabled:  # a fresh start: the failure record that disabled it is forgotten
            changes |= {"enabled": True, "disabled_reason": None, "disabled_at": None}
            changes |= {"failure_streak": 0, "failing_since": None}
        else:
            changes |= {"enabled": False, "disabled_reason": _MANUAL, "disabled_at": now}
    changes = {name: value for name, value in changes.items() if getattr(before, name) != value}
    if not changes:
        return before
    return msgspec.structs.replace(before, **changes, updated_at=now)


async def update_endpoint(
    db: Database, principal: Principal, endpoint_id: str, body: UpdateWebhookIn, *, request_id: str | None
) -> WebhookOut:
    async def write(tx: Tx) -> WebhookOut:
        before = await _current(tx, principal, endpoint_id, for_update=True)
        now = now_us()
        after = edit_endpoint(before, body, now=now)
        if after is not before:
            await repository.update_endpoint(tx, before, after)
            if before.enabled and not after.enabled:
                await repository.record_disabled(tx, principal, before, after, now=now, request_id=request_id)
        return webhook_out(after, now=now)

    return await db.write(write)


async def delete_endpoint(db: Database, principal: Principal, endpoint_id: str) -> DeletedWebhookOut:
    """Soft delete: the delivery log stays readable in the database; queued deliveries fail."""

    async def write(tx: Tx) -> DeletedWebhookOut:
        before = await _current(tx, principal, endpoint_id, for_update=True)
        now = now_us()
        after = msgspec.structs.replace(before, enabled=False, deleted_at=now, updated_at=now)
        await repository.update_endpoint(tx, before, after)
        await repository.cancel_pending(tx, after, now, "endpoint deleted")
        return DeletedWebhookOut(id=endpoint_id)

    return await db.write(write)


async def rotate_secret(db: Database, principal: Principal, endpoint_id: str, body: RotateSecretIn) -> WebhookOut:
    """A new secret; the old one keeps signing (as the second `v1`) for `expires_in_seconds`. A rotation
    during an overlap replaces the older secret: only the two newest ever sign."""
    secret = check_secret(body.secret) if body.secret is not None else new_secret()

    async def write(tx: Tx) -> WebhookOut:
        before = await _current(tx, principal, endpoint_id, for_update=True)
        now = now_us()
        overlap = body.expires_in_seconds > 0
        after = msgspec.structs.replace(
            before,
            secret=secret,
            previous_secret=before.secret if overlap else None,
            previous_secret_expires_at=now + body.expires_in_seconds * 1_000_000 if overlap else None,
            updated_at=now,
        )
        await repository.update_endpoint(tx, before, after)
        return webhook_out(after, now=now, secret=True)

    return await db.write(write)


async def list_deliveries(db: Database, principal: Principal, endpoint_id: str, query: ListQuery) -> dict[str, Any]:
    async def read(tx: Tx) -> dict[str, Any]:
        await _current(tx, principal, endpoint_id)
        page = await fetch_page(tx, DELIVERY_LIST, query, principal, repository.DELIVERY_COLUMNS)
        return {"data": [delivery_out(row) for row in page.rows], "pagination": page.pagination()}

    return await db.read(read)


async def _delivery(tx: Tx, principal: Principal, endpoint_id: str, delivery_id: str) -> Row:
    row = await repository.get_delivery(tx, principal, endpoint_id, delivery_id)
    if row is None:
        raise ApiError.not_found("webhook_delivery", delivery_id)
    return row


async def get_delivery(db: Database, principal: Principal, endpoint_id: str, delivery_id: str) -> DeliveryOut:
    async def read(tx: Tx) -> DeliveryOut:
        await _current(tx, principal, endpoint_id)
        row = await _delivery(tx, principal, endpoint_id, delivery_id)
        return delivery_out(row, await repository.attempts_of(tx, delivery_id))

    return await db.read(read)


def _require_enabled(endpoint: Endpoint) -> None:
    if not endpoint.enabled:
        raise ApiError(
            "RESOURCE_CONFLICT",
            "The webhook endpoint is disabled; enable it first (PATCH enabled=true).",
            {"id": endpoint.id, "disabled_reason": endpoint.disabled_reason},
        )


async def retry_delivery(db: Database, principal: Principal, endpoint_id: str, delivery_id: str) -> DeliveryOut:
    """Queue the delivery again, due now, with a fresh retry schedule."""

    async def write(tx: Tx) -> DeliveryOut:
        endpoint = await _current(tx, principal, endpoint_id, for_update=True)
        _require_enabled(endpoint)
        row = await _delivery(tx, principal, endpoint_id, delivery_id)
        now = now_us()
        if row["locked_until"] is not None and row["locked_until"] > now and row["status"] == "pending":
            raise ApiError(
                "RESOURCE_CONFLICT",
                "This delivery is being attempted right now; retry after the attempt is recorded.",
                {"id": delivery_id, "status": "in_flight"},
            )
        updated = await tx.fetchrow(
            "UPDATE webhook_deliveries SET status = 'pending', failures = 0, next_attempt_at = $2,"
            " locked_until = NULL, locked_by = NULL, completed_at = NULL, updated_at = $2"
            f" WHERE id = $1 RETURNING {repository.DELIVERY_COLUMNS}",
            delivery_id,
            now,
        )
        return delivery_out(updated, await repository.attempts_of(tx, delivery_id))

    return await db.write(write)


def _since(raw: str) -> int:
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError.field(
            "since", "not an ISO 8601 time", expected="e.g. 2024-01-15T10:30:00Z", received=raw
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


async def replay(db: Database, principal: Principal, endpoint_id: str, body: ReplayIn) -> ReplayOut:
    """Queue every stored event after `since_event_id` (or created at or after `since`) that the
    endpoint subscribes to, up to REPLAY_LIMIT events per request."""
    if (body.since_event_id is None) == (body.since is None):
        raise ApiError.field(
            "since_event_id",
            "give exactly one of since_event_id and since",
            expected="since_event_id: evt_… or since: an ISO 8601 time",
            received=None,
            code="MISSING_REQUIRED_FIELD" if body.since is None else "VALIDATION_ERROR",
        )
    since = _since(body.since) if body.since is not None else None

    async def write(tx: Tx) -> ReplayOut:
        endpoint = await _current(tx, principal, endpoint_id, for_update=True)
        _require_enabled(endpoint)
        scope = (principal.workspace_id, principal.mode)
        if body.since_event_id is not None:
            seq = await tx.fetchval(
                f"SELECT seq FROM events WHERE id = $1 AND {IN_WORKSPACE}",
                body.since_event_id,
                *scope,
            )
            if seq is None:
                raise ApiError.field(
                    "since_event_id", "no such event", expected="the id of a stored event", received=body.since_event_id
                )
            rows = await tx.fetch(
                "SELECT id, type FROM events WHERE workspace_id = $1 AND mode = $2 AND seq > $3"
                f" ORDER BY seq LIMIT {REPLAY_LIMIT + 1}",
                *scope,
                seq,
            )
        else:
            rows = await tx.fetch(
                "SELECT id, type FROM events WHERE workspace_id = $1 AND mode = $2 AND created_at >= $3"
                f" ORDER BY created_at, id LIMIT {REPLAY_LIMIT + 1}",
                *scope,
                since,
            )
        has_more = len(rows) > REPLAY_LIMIT
        rows = rows[:REPLAY_LIMIT]
        targets = [(endpoint.id, row["id"], row["type"]) for row in rows if matches(endpoint.events, row["type"])]
        enqueued = await outbox.insert_deliveries(
            tx, workspace_id=principal.workspace_id, mode=principal.mode, targets=targets, now=now_us(), origin="replay"
        )
        return ReplayOut(
            endpoint_id=endpoint.id,
            enqueued=enqueued,
            scanned=len(rows),
            first_event_id=rows[0]["id"] if rows else None,
            last_event_id=rows[-1]["id"] if rows else None,
            has_more=has_more,
        )

    return await db.write(write)


def _sample_event(principal: Principal, event_type: str, *, now: int, request_id: str | None) -> log.EventOut:
    """A made-up event, shaped exactly like a real delivery's payload (it is never stored)."""
    livemode = principal.mode == "live"
    previous = samples.sample_previous_attributes(event_type)
    return log.EventOut(
        id=new_id("evt"),
        type=event_type,
        created=iso(now),
        livemode=livemode,
        data=log.EventData(msgspec.Raw(_encode(samples.sample_object(event_type, livemode=livemode)))),
        previous_attributes=None if previous is None else msgspec.Raw(_encode(previous)),
        metadata=log.EventMetadata(principal.workspace_id, API_VERSION, request_id, principal.key_id),
    )


async def simulate(
    db: Database, principal: Principal, body: SimulateIn, policy: ssrf.UrlPolicy, *, request_id: str | None
) -> SimulateOut:
    """Send one signed sample event to `endpoint_url` now and report the answer. Nothing is stored.

    Signed with `secret` if given, else with the secret(s) of this workspace's endpoint with exactly that
    URL, else with a new secret, returned as `secret_used` so the receiver can be configured with it."""
    event_type = body.event_type.strip()
    if event_type not in EVENT_TYPES:
        raise ApiError.field(
            "event_type", "unknown event type", expected="e.g. order.created", received=body.event_type
        )
    url = check_url_shape(body.endpoint_url, "endpoint_url")
    await ssrf.check_url(url, policy, field="endpoint_url")
    now = now_us()
    endpoint = None
    if body.secret is None:
        endpoint = await db.read(
            lambda tx: repository.find_endpoint_by_url(tx, principal.workspace_id, principal.mode, url)
        )
    if body.secret is not None:
        secrets, source = [check_secret(body.secret)], "request"
    elif endpoint is not None:
        secrets, source = endpoint.signing_secrets(now), "endpoint"
    else:
        secrets, source = [new_secret()], "generated"
    event = _sample_event(principal, event_type, now=now, request_id=request_id)
    payload = _encode(event)
    headers = dispatcher.delivery_headers(endpoint.headers if endpoint else {}, secrets, event.id, payload)
    async with dispatcher.new_client(1) as client:
        result = await dispatcher.send(client, url, payload, headers, policy=policy)
    return SimulateOut(
        event_id=event.id,
        event_type=event_type,
        endpoint_url=url,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        response_body=result.response_body,
        error=result.error,
        signature_header=headers["stateset-signature"],
        secret_source=source,
        endpoint_id=endpoint.id if endpoint else None,
        delivered=result.status_code is not None and 200 <= result.status_code < 300,
        secret_used=secrets[0] if source == "generated" else UNSET,
    )
