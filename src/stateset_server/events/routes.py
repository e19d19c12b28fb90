"""`GET /v1/events` and `GET /v1/events/{id}`."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, json_response
from stateset_server.core.pagination import decode_cursor, encode_cursor, list_envelope, parse_limit
from stateset_server.events import log
from stateset_server.storage import Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

_TYPE = re.compile(r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$|^\*$")


async def retrieve_event(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    event_id = request.path_params["event_id"]

    async def read(tx: Tx) -> log.EventOut | None:
        row = await log.get_event(tx, principal, event_id)
        return None if row is None else log.event_out(row)

    event = await request.app.state.db.read(read)
    if event is None:
        raise ApiError.not_found("event", event_id)
    return json_response(event)


async def list_events(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    params = request.query_params
    limit = parse_limit(params.get("limit"))
    before_seq = None
    if cursor := params.get("cursor"):
        before_seq = decode_cursor(cursor, {"seq": int})["seq"]
    type_exact = type_prefix = None
    if (event_type := params.get("type")) is not None:
        if not _TYPE.match(event_type):
            raise ApiError(
                "VALIDATION_ERROR",
                "type must be an event type such as order.created, or a wildcard such as order.*",
                {
                    "field": "type",
                    "issue": "malformed event type",
                    "expected": "order.created or order.*",
                    "received": event_type,
                },
                status=400,
            )
        if event_type == "*":
            pass
        elif event_type.endswith(".*"):
            type_prefix = event_type[:-1]
        else:
            type_exact = event_type

    async def read(tx: Tx) -> tuple[list[log.EventOut], int | None]:
        rows = await log.list_events(
            tx,
            principal,
            limit=limit + 1,
            before_seq=before_seq,
            type_exact=type_exact,
            type_prefix=type_prefix,
            object_id=params.get("object_id"),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return [log.event_out(r) for r in rows], (rows[-1]["seq"] if more else None)

    events, last_seq = await request.app.state.db.read(read)
    next_cursor = encode_cursor({"seq": last_seq}) if last_seq is not None else None
    return json_response(
        list_envelope(
            events, has_more=last_seq is not None, next_cursor=next_cursor, request_id=request.scope.get("request_id")
        )
    )


ROUTES = [
    ApiRoute(
        "GET",
        "/v1/events",
        list_events,
        scope="events:read",
        summary="List events, newest first",
        tag="Events",
        errors=("VALIDATION_ERROR",),
        query=(
            ("limit", "integer", "1 to 100, default 10"),
            ("cursor", "string", "the next_cursor of the previous page"),
            ("type", "string", "an event type (order.created) or a wildcard (order.*)"),
            ("object_id", "string", "only events about this object"),
        ),
    ),
    ApiRoute(
        "GET",
        "/v1/events/{event_id}",
        retrieve_event,
        scope="events:read",
        summary="Retrieve an event",
        tag="Events",
        response=log.EventOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
]
