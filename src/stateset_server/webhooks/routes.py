"""Webhook endpoints: `/v1/webhooks` (create, list, retrieve, edit, delete, rotate_secret), the
delivery log with retry and replay, and the simulator.

Every write reads its body, binds its renderer for the idempotency layer, then runs one transaction.
URL checks that resolve names (ssrf) run before it.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.clock import now_us
from stateset_server.core.http import ApiRoute, json_response, read_json, rendered
from stateset_server.core.listing import list_parameters, parse_list_query
from stateset_server.core.pagination import list_envelope
from stateset_server.webhooks import service, ssrf
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
)
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

_WRITE_ERRORS = ("VALIDATION_ERROR", "MISSING_REQUIRED_FIELD", "INVALID_FIELD_FORMAT")


def _created(result: Any) -> tuple[int, Any]:
    return 201, result


def _ok(result: Any) -> tuple[int, Any]:
    return 200, result


def _policy(request: Request) -> ssrf.UrlPolicy:
    policy = getattr(request.app.state, "webhook_url_policy", None)
    return policy if policy is not None else ssrf.UrlPolicy.from_env()


def _request_id(request: Request) -> str | None:
    return request.scope.get("request_id")


async def create_webhook(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, CreateWebhookIn)
    draft = service.draft_endpoint(body, principal, now=now_us())
    await ssrf.check_url(draft.url, _policy(request))
    idempotency.bind(_created)
    endpoint = await service.create_endpoint(request.app.state.db, principal, draft)
    return rendered(_created, endpoint)


async def list_webhooks(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    query = parse_list_query(request.query_params, service.WEBHOOK_LIST)
    page = await service.list_endpoints(request.app.state.db, principal, query)
    return json_response(list_envelope(request, page["data"], page["pagination"]))


async def retrieve_webhook(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    endpoint = await service.get_endpoint(request.app.state.db, principal, request.path_params["webhook_id"])
    return json_response(endpoint)


async def update_webhook(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, UpdateWebhookIn)
    service.check_update(body)
    if isinstance(body.url, str):
        await ssrf.check_url(body.url.strip(), _policy(request))
    idempotency.bind(_ok)
    endpoint = await service.update_endpoint(
        request.app.state.db, principal, request.path_params["webhook_id"], body, request_id=_request_id(request)
    )
    return rendered(_ok, endpoint)


async def delete_webhook(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    idempotency.bind(_ok)
    deleted = await service.delete_endpoint(request.app.state.db, principal, request.path_params["webhook_id"])
    return rendered(_ok, deleted)


async def rotate_secret(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, RotateSecretIn, optional=True)
    idempotency.bind(_ok)
    endpoint = await service.rotate_secret(request.app.state.db, principal, request.path_params["webhook_id"], body)
    return rendered(_ok, endpoint)


async def list_deliveries(request: Request, principal: Principal | None) -> Response:
    """The shared list engine over one endpoint's deliveries: its id is added to the client's filters."""
    assert principal is not None
    endpoint_id = request.path_params["webhook_id"]
    params = QueryParams([*request.query_params.multi_items(), ("endpoint_id", endpoint_id)])
    query = parse_list_query(params, service.DELIVERY_LIST)
    page = await service.list_deliveries(request.app.state.db, principal, endpoint_id, query)
    return json_response(list_envelope(request, page["data"], page["pagination"]))


async def retrieve_delivery(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    delivery = await service.get_delivery(
        request.app.state.db, principal, request.path_params["webhook_id"], request.path_params["delivery_id"]
    )
    return json_response(delivery)


async def retry_delivery(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    idempotency.bind(_ok)
    delivery = await service.retry_delivery(
        request.app.state.db, principal, request.path_params["webhook_id"], request.path_params["delivery_id"]
    )
    return rendered(_ok, delivery)


async def replay(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    body = await read_json(request, ReplayIn)
    idempotency.bind(_ok)
    result = await service.replay(request.app.state.db, principal, request.path_params["webhook_id"], body)
    return rendered(_ok, result)


async def simulate(request: Request, principal: Principal | None) -> Response:
    """Not a database write: nothing to bind; a repeated request sends another sample."""
    assert principal is not None
    body = await read_json(request, SimulateIn)
    result = await service.simulate(
        request.app.state.db, principal, body, _policy(request), request_id=_request_id(request)
    )
    return json_response(result)


_PATH = "/v1/webhooks/{webhook_id}"
_DELIVERY = f"{_PATH}/deliveries/{{delivery_id}}"
ROUTES = [
    ApiRoute(
        "POST",
        "/v1/webhooks/simulate",
        simulate,
        scope="webhooks:write",
        summary="Send a signed sample event to a URL now and report the receiver's answer (nothing is stored)",
        tag="Webhooks",
        request_body=SimulateIn,
        response=SimulateOut,
        errors=_WRITE_ERRORS,
    ),
    ApiRoute(
        "POST",
        "/v1/webhooks",
        create_webhook,
        scope="webhooks:write",
        summary="Create a webhook endpoint (the secret is shown in full only here and on rotate_secret)",
        tag="Webhooks",
        request_body=CreateWebhookIn,
        response=WebhookOut,
        status=201,
        errors=_WRITE_ERRORS,
    ),
    ApiRoute(
        "GET",
        "/v1/webhooks",
        list_webhooks,
        scope="webhooks:read",
        summary="List webhook endpoints",
        tag="Webhooks",
        errors=("VALIDATION_ERROR",),
        query=list_parameters(service.WEBHOOK_LIST),
    ),
    ApiRoute(
        "GET",
        _PATH,
        retrieve_webhook,
        scope="webhooks:read",
        summary="Retrieve a webhook endpoint",
        tag="Webhooks",
        response=WebhookOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    *(
        ApiRoute(
            method,
            _PATH,
            update_webhook,
            scope="webhooks:write",
            summary="Edit a webhook endpoint: url, events, headers, description, metadata (merged), enabled",
            tag="Webhooks",
            request_body=UpdateWebhookIn,
            response=WebhookOut,
            errors=("RESOURCE_NOT_FOUND", *_WRITE_ERRORS),
        )
        for method in ("PATCH", "PUT")
    ),
    ApiRoute(
        "DELETE",
        _PATH,
        delete_webhook,
        scope="webhooks:write",
        summary="Delete a webhook endpoint (its queued deliveries fail)",
        tag="Webhooks",
        response=DeletedWebhookOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    ApiRoute(
        "POST",
        f"{_PATH}/rotate_secret",
        rotate_secret,
        scope="webhooks:write",
        summary="Rotate the signing secret; the old one also signs for expires_in_seconds (default 86400)",
        tag="Webhooks",
        request_body=RotateSecretIn,
        response=WebhookOut,
        errors=("RESOURCE_NOT_FOUND", *_WRITE_ERRORS),
    ),
    ApiRoute(
        "GET",
        f"{_PATH}/deliveries",
        list_deliveries,
        scope="webhooks:read",
        summary="List an endpoint's deliveries, newest first (filters: status, event_type, created_at)",
        tag="Webhooks",
        errors=("RESOURCE_NOT_FOUND", "VALIDATION_ERROR"),
        query=list_parameters(service.DELIVERY_LIST),
    ),
    ApiRoute(
        "GET",
        _DELIVERY,
        retrieve_delivery,
        scope="webhooks:read",
        summary="Retrieve a delivery with every attempt (status code, latency, error, response snippet)",
        tag="Webhooks",
        response=DeliveryOut,
        errors=("RESOURCE_NOT_FOUND",),
    ),
    ApiRoute(
        "POST",
        f"{_DELIVERY}/retry",
        retry_delivery,
        scope="webhooks:write",
        summary="Queue a delivery again, due now, with a fresh retry schedule",
        tag="Webhooks",
        response=DeliveryOut,
        errors=("RESOURCE_NOT_FOUND", "RESOURCE_CONFLICT"),
    ),
    ApiRoute(
        "POST",
        f"{_PATH}/replay",
        replay,
        scope="webhooks:write",
        summary="Queue the stored events since an event id or a time that the endpoint subscribes to",
        tag="Webhooks",
        request_body=ReplayIn,
        response=ReplayOut,
        errors=("RESOURCE_NOT_FOUND", "RESOURCE_CONFLICT", *_WRITE_ERRORS),
    ),
]
