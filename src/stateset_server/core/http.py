"""The HTTP edge shared by every endpoint: request ids, the error envelope, JSON, bodies, routes.

Each endpoint is declared once as an `ApiRoute` (path, method, scope, request and response types);
the same declaration builds the Starlette route, enforces authentication and scopes, and feeds the
OpenAPI document. Handlers receive the request and the authenticated `Principal` and return a
Response or raise `ApiError`; nothing else reaches the client.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stateset_server.core import idempotency
from stateset_server.core.clock import iso, now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.forms import FormError, form_to_json
from stateset_server.core.ids import request_id as next_request_id
from stateset_server.core.validation import decode_body, decode_optional_body
from stateset_server.storage.database import StorageUnavailable, is_unique_violation
from stateset_server.storage.packing import Packed
from stateset_server.workspaces.keys import Principal

__all__ = [
    "MAX_BODY_BYTES",
    "ApiRoute",
    "RequestIdMiddleware",
    "base_url",
    "error_response",
    "http_exception_handler",
    "json_response",
    "read_body",
    "read_json",
    "rendered",
]

log = logging.getLogger("stateset_server")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
MAX_BODY_BYTES = 10 * 1024 * 1024
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_encoder = msgspec.json.Encoder()

T = TypeVar("T")
Handler = Callable[[Request, Principal | None], Awaitable[Response]]


class RequestIdMiddleware:
    """Gives every request an id (`req_…`, or the client's own `X-Request-Id` when it is sane)
    and returns it in `X-Request-Id` on every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, with_request_id(scope, send))


def with_request_id(scope: Scope, send: Send) -> Send:
    """Put the request's id in the scope and a `send` that adds it (and X-RateLimit-*) to the response."""
    request_id = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.match(candidate):
                request_id = candidate
            break
    if request_id is None:
        request_id = next_request_id()
    scope["request_id"] = request_id
    scope["started"] = time.perf_counter()  # for list envelopes' meta.response_time_ms
    header = (b"x-request-id", request_id.encode())

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            # X-RateLimit-* of an admitted request (ApiRoute puts them in the scope after authenticating).
            message["headers"] = [*message.get("headers", ()), header, *scope.get("rate_limit_headers", ())]
        await send(message)

    return send_with_id


def rendered(render: Callable[[Any], tuple[int, Any]], result: Any) -> Response:
    """The response for a write result, built by the same renderer the idempotency layer stores
    (or the very bytes it stored)."""
    stored = idempotency.stored_response(result)
    if stored is not None:
        return Response(stored[1], status_code=stored[0], media_type="application/json")
    status, content = render(result)
    if type(content) is Packed:
        return Response(content.body, status_code=status, media_type="application/json")
    return json_response(content, status)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(content), status_code=status, headers=headers, media_type="application/json")


_base_urls: dict[tuple[Any, ...], str] = {}


def base_url(request: Request) -> str:
    """The server's public address: STATESET_PUBLIC_URL, else the one this request came to.

    Remembered per (scheme, Host, root path, server): building Starlette's URL object per request
    cost a tenth of a GET. Bounded, so a flood of made-up Host headers cannot grow it."""
    configured = getattr(request.app.state, "public_url", None)
    if configured:
        return configured
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    key = (scope.get("scheme"), host, scope.get("root_path"), scope.get("server"))
    known = _base_urls.get(key)
    if known is None:
        known = str(request.base_url).rstrip("/")
        if len(_base_urls) < 1024:
            _base_urls[key] = known
    return known


def scope_path(request: Request) -> str:
    """`request.url.path` without building the URL."""
    return request.scope.get("root_path", "") + request.scope["path"]


def error_response(request: Request, error: ApiError) -> Response:
    body = {
        "error": {
            "code": error.code,
            "message": error.message,
            **getattr(error, "fields", {}),  # e.g. RATE_LIMITED's retry_after, limit, remaining, reset_at
            "details": error.details,
            "request_id": request.scope.get("request_id"),
            "timestamp": iso(now_us()),
            "documentation_url": f"{base_url(request)}/docs/errors/{error.code}",
        }
    }
    return json_response(body, error.status, error.headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Routing failures (unknown path, wrong method) in the same envelope as every other error."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        error = ApiError(
            "METHOD_NOT_ALLOWED",
            f"{request.method} is not allowed on {request.url.path}",
            {"method": request.method, "allowed_methods": [m.strip() for m in allow.split(",") if m.strip()]},
            headers={"Allow": allow} if allow else None,
        )
    elif exc.status_code == 404:
        error = ApiError(
            "ROUTE_NOT_FOUND", f"No endpoint at {request.method} {request.url.path}", {"path": request.url.path}
        )
    else:
        error = ApiError("VALIDATION_ERROR", str(exc.detail), status=exc.status_code)
    return error_response(request, error)


def _too_large(limit: int) -> ApiError:
    return ApiError("PAYLOAD_TOO_LARGE", f"Request bodies are limited to {limit} bytes.", {"max_bytes": limit})


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body as JSON bytes, refusing (413) as soon as it is known to exceed `limit` — without
    buffering it. Form-encoded bodies (bracket notation for nesting) are rewritten to JSON and marked
    for lax decoding; a JSON document sent with the form content type (`curl -d @order.json`) is JSON.
    """
    cached = request.scope.get("body_json")
    if cached is not None:
        return cached
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if (
        media
        and media != "application/x-www-form-urlencoded"
        and media != "text/plain"
        and not (media == "application/json" or media.endswith("+json"))
    ):
        raise ApiError(
            "UNSUPPORTED_MEDIA_TYPE",
            f"Request bodies are JSON or form-encoded, not {media}.",
            {"content_type": media, "supported": ["application/json", "application/x-www-form-urlencoded"]},
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    # The ASGI messages read here directly (Starlette's `stream()` is an async generator around the
    # same loop, ~10 µs a request); nothing else reads a request's body (it is kept in the scope).
    chunks, size, receive = [], 0, request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if media == "application/x-www-form-urlencoded" and body.lstrip()[:1] not in (b"{", b"["):
        try:
            body = form_to_json(body)
        except FormError as exc:
            raise ApiError(
                "VALIDATION_ERROR",
                f"The form body cannot be read: {exc.issue}",
                {
                    "field": exc.field,
                    "issue": exc.issue,
                    "expected": "key=value pairs, nesting as a[b][0]=…",
                    "received": None,
                },
                status=400,
            ) from None
        request.scope["lax_body"] = True
    request.scope["body_json"] = body
    return body


@dataclass(frozen=True)
class ApiRoute:
    """One endpoint: how it is reached, who may call it, and what goes in and out (for OpenAPI)."""

    method: str
    path: str
    handler: Handler
    scope: str | None  # None: public, no API key needed
    summary: str
    tag: str
    request_body: type | None = None
    response: type | None = None
    status: int = 200
    errors: tuple[str, ...] = ()
    query: tuple[tuple[str, str, str], ...] = field(default=())  # (name, JSON type, description)

    def starlette_route(self) -> Route:
        return Route(self.path, self.endpoint, methods=[self.method], name=f"{self.method} {self.path}")

    async def endpoint(self, request: Request) -> Response:
        token = inflight = admission = None
        try:
            principal = None
            if self.scope is not None:
                principal, limits = await request.app.state.identify(request.headers.get("authorization"))
                # Rate limits apply to authenticated requests only, before anything else runs; a 429
                # (RateLimited, an ApiError) carries its own headers and never reaches the handler.
                admission = await request.app.state.limiter.admit(principal.key_id, limits)
                request.scope["rate_limit_headers"] = admission.headers
                if not principal.allows(self.scope):
                    raise ApiError(
                        "INSUFFICIENT_PERMISSIONS",
                        f"This API key cannot perform this operation; it needs the '{self.scope}' scope.",
                        {"required_scope": self.scope, "key_type": principal.kind},
                    )
            _refuse_nul(request)
            key = request.headers.get("idempotency-key")
            if key is not None and principal is not None and self.method in _WRITES:
                idempotency.check_key(key)
                inflight = (principal.workspace_id, principal.mode, key)
                running: set[tuple[str, str, str]] = request.app.state.inflight
                if inflight in running:
                    inflight = None
                    raise ApiError(
                        "IDEMPOTENCY_IN_PROGRESS",
                        "A request with this Idempotency-Key is still being processed; retry shortly.",
                        {"idempotency_key": key},
                    )
                running.add(inflight)
                token = idempotency.enter(
                    idempotency.Scope(
                        principal=principal,
                        key=key,
                        method=self.method,
                        path=scope_path(request),
                        body=lambda: request.scope.get("body_json", b""),
                        error_body=lambda error: error_response(request, error).body,
                    )
                )
            return await self.handler(request, principal)
        except idempotency.Replay as replay:
            return Response(
                replay.body,
                status_code=replay.status,
                media_type="application/json",
                headers={"Idempotent-Replayed": "true"} if replay.replayed else None,
            )
        except ApiError as error:
            return error_response(request, error)
        except ClientDisconnect:
            # The client closed the connection before its whole body arrived: nothing was run or
            # written, and nobody is left to answer (the status is for the access log).
            log.info("client disconnected before sending its body (request %s)", request.scope.get("request_id"))
            return Response(status_code=400)
        except StorageUnavailable as exc:
            log.warning("storage unavailable: %s (request %s)", exc, request.scope.get("request_id"))
            return error_response(
                request,
                ApiError("SERVICE_UNAVAILABLE", "The database is temporarily unavailable; retry shortly."),
            )
        except Exception as exc:
            if is_unique_violation(exc):
                # A specific check lost a race to a concurrent request (e.g. two creates of one email):
                # a conflict for the client to retry, never a 500.
                return error_response(
                    request,
                    ApiError("RESOURCE_CONFLICT", "A concurrent request changed the same resource; retry.", {}),
                )
            log.exception("unhandled error (request %s)", request.scope.get("request_id"))
            return error_response(
                request, ApiError("INTERNAL_ERROR", "An unexpected error occurred. It has been logged.")
            )
        finally:
            if token is not None:
                idempotency.leave(token)
            if inflight is not None:
                request.app.state.inflight.discard(inflight)
            if admission is not None and admission.slot is not None:
                await request.app.state.limiter.release(admission)


def _refuse_nul(request: Request) -> None:
    """A NUL (`%00`) in a path or query parameter is a 400 for every route: PostgreSQL text cannot
    hold one, so it would fail the statement that carries it (bodies: validation.decode_body)."""
    scope = request.scope
    if "\x00" not in scope["path"] and b"%00" not in scope.get("query_string", b""):
        return  # the usual case, told from the raw request without parsing its parameters
    for kind, items in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for name, value in items:
            if isinstance(value, str) and "\x00" in value:
                raise ApiError(
                    "VALIDATION_ERROR",
                    f"Invalid {kind} parameter '{name}': contains a NUL character",
                    {"field": name, "issue": "contains a NUL character", "expected": "text without NUL (%00)",
                     "received": value[:300]},
                    status=400,
                )  # fmt: skip


async def read_json(request: Request, into: type[T], *, optional: bool = False) -> T:
    """The request body decoded into `into`: JSON strictly, form bodies in lax mode (text → field type)."""
    body = await read_body(request)
    strict = not request.scope.get("lax_body", False)
    if optional:
        return decode_optional_body(body, into, strict=strict)
    return decode_body(body, into, strict=strict)
