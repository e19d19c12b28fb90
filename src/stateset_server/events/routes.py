"""`GET /v1/events` and `GET /v1/events/{id}`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, json_response
from stateset_server.core.listing import list_parameters, parse_list_query, read_page
from stateset_server.core.pagination import list_envelope
from stateset_server.events import log
from stateset_server.events.listing import EVENT_LIST
from stateset_server.storage import Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]


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
    query = parse_list_query(request.query_params, EVENT_LIST)

    events, pagination = await read_page(request.app.state.db, EVENT_LIST, query, principal, log.COLUMNS, log.event_out)
    return json_response(list_envelope(request, events, pagination))


ROUTES = [
    ApiRoute(
        "GET",
        "/v1/events",
        list_events,
        scope="events:read",
        summary="List events, newest first",
        tag="Events",
        errors=("VALIDATION_ERROR",),
        query=list_parameters(EVENT_LIST),
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
