"""Webhook wire types: what clients send and get back (they also generate the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from stateset_server.core.clock import iso
from stateset_server.orders.schemas import Metadata
from stateset_server.storage import Row
from stateset_server.webhooks.model import MAX_PATTERNS, Endpoint

__all__ = [
    "AttemptOut",
    "CreateWebhookIn",
    "DeletedWebhookOut",
    "DeliveryOut",
    "ReplayIn",
    "ReplayOut",
    "RotateSecretIn",
    "SimulateIn",
    "SimulateOut",
    "UpdateWebhookIn",
    "WebhookOut",
    "attempt_out",
    "delivery_out",
    "webhook_out",
]

Url = Annotated[str, Meta(max_length=2048, description="Absolute http(s) URL the events are POSTed to")]
Patterns = Annotated[
    list[str],
    Meta(max_length=MAX_PATTERNS, description='Event types or patterns: "order.created", "order.*", "*"'),
]
Headers = Annotated[
    dict[str, str],
    Meta(description="Up to 20 extra request headers (not Content-Type, User-Agent, stateset-*, webhook-*)"),
]
Description = Annotated[str, Meta(max_length=500)]
Secret = Annotated[str, Meta(max_length=256, description="16-256 printable characters; default whsec_ + random")]
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
Overlap = Annotated[int, Meta(ge=0, le=MAX_OVERLAP_SECONDS)]


class CreateWebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Patterns | None = None  # default ["*"]
    secret: Secret | None = None
    headers: Headers | None = None
    enabled: bool = True
    description: Description | None = None
    metadata: Metadata | None = None


class UpdateWebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    """PATCH/PUT: only the fields given change. `headers` replaces the whole set (null empties it);
    `metadata` merges (a null or "" value removes the key); `enabled: true` re-enables a disabled
    endpoint and clears its failure record."""

    url: Url | UnsetType = UNSET
    events: Patterns | UnsetType = UNSET
    headers: Headers | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    metadata: Metadata | None = None


class RotateSecretIn(msgspec.Struct, forbid_unknown_fields=True):
    expires_in_seconds: Overlap = 86400  # how long the old secret still signs (0: at once)
    secret: Secret | None = None  # the new secret; default whsec_ + random


class ReplayIn(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one: `since_event_id` (the events after it) or `since` (events created at or after)."""

    since_event_id: str | None = None
    since: str | None = None


class SimulateIn(msgspec.Struct, forbid_unknown_fields=True):
    event_type: str
    endpoint_url: Url
    secret: Secret | None = None


class WebhookOut(msgspec.Struct):
    id: str
    url: str
    description: str | None
    events: list[str]
    headers: dict[str, str] | UnsetType  # left out of event snapshots: they may hold receivers' tokens
    enabled: bool
    status: str  # enabled | disabled
    disabled_reason: str | None
    disabled_at: str | None
    failure_streak: int
    previous_secret_expires_at: str | None  # while a rotated-out secret still signs
    metadata: dict[str, Any]
    livemode: bool
    created_at: str
    updated_at: str
    object: str = "webhook_endpoint"
    secret: str | UnsetType = UNSET  # only in the answers to create and rotate_secret


class DeletedWebhookOut(msgspec.Struct):
    id: str
    deleted: bool = True
    object: str = "webhook_endpoint"


class AttemptOut(msgspec.Struct):
    attempt: int
    started_at: str
    status_code: int | None
    latency_ms: int
    outcome: str  # succeeded | retry | failed | gone
    error: str | None
    response_body: str | None


class DeliveryOut(msgspec.Struct):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    origin: str  # event | replay
    status: str  # pending | succeeded | failed
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: str | None
    completed_at: str | None
    livemode: bool
    created_at: str
    updated_at: str
    object: str = "webhook_delivery"
    attempts: list[AttemptOut] | UnsetType = UNSET  # on retrieve


class ReplayOut(msgspec.Struct):
    endpoint_id: str
    enqueued: int  # deliveries created (events matching the endpoint's subscriptions)
    scanned: int  # events looked at
    first_event_id: str | None
    last_event_id: str | None
    has_more: bool  # more events than one replay takes: replay again from last_event_id
    object: str = "webhook_replay"


class SimulateOut(msgspec.Struct):
    event_id: str
    event_type: str
    endpoint_url: str
    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None
    signature_header: str
    secret_source: str  # request | endpoint | generated
    endpoint_id: str | None
    delivered: bool
    object: str = "webhook_simulation"
    secret_used: str | UnsetType = UNSET  # only when generated: the receiver needs it to verify


def _maybe_iso(micros: int | None) -> str | None:
    return None if micros is None else iso(micros)


def webhook_out(endpoint: Endpoint, *, now: int, secret: bool = False, headers: bool = True) -> WebhookOut:
    expires = endpoint.previous_secret_expires_at
    overlapping = endpoint.previous_secret is not None and expires is not None and now < expires
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        description=endpoint.description,
        events=endpoint.events,
        headers=endpoint.headers if headers else UNSET,
        enabled=endpoint.enabled,
        status="enabled" if endpoint.enabled else "disabled",
        disabled_reason=endpoint.disabled_reason,
        disabled_at=_maybe_iso(endpoint.disabled_at),
        failure_streak=endpoint.failure_streak,
        previous_secret_expires_at=iso(expires) if overlapping and expires is not None else None,
        metadata=endpoint.metadata,
        livemode=endpoint.mode == "live",
        created_at=iso(endpoint.created_at),
        updated_at=iso(endpoint.updated_at),
        secret=endpoint.secret if secret else UNSET,
    )


def attempt_out(row: Row) -> AttemptOut:
    return AttemptOut(
        attempt=int(row["attempt"]),
        started_at=iso(row["started_at"]),
        status_code=row["status_code"],
        latency_ms=int(row["latency_ms"]),
        outcome=row["outcome"],
        error=row["error"],
        response_body=row["response_body"],
    )


def delivery_out(row: Row, attempts: list[AttemptOut] | UnsetType = UNSET) -> DeliveryOut:
    return DeliveryOut(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        origin=row["origin"],
        status=row["status"],
        attempt_count=int(row["attempt_count"]),
        next_attempt_at=_maybe_iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        last_attempt_at=_maybe_iso(row["last_attempt_at"]),
        completed_at=_maybe_iso(row["completed_at"]),
        livemode=row["mode"] == "live",
        created_at=iso(row["created_at"]),
        updated_at=iso(row["updated_at"]),
        attempts=attempts,
    )
