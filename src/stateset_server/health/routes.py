"""`GET /health`: 200 when the database answers, 503 when it does not. No API key needed."""

from __future__ import annotations

import time

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from stateset_server import __version__
from stateset_server.core.clock import iso, now_us
from stateset_server.core.http import ApiRoute, json_response
from stateset_server.storage.database import StorageUnavailable
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES", "Health"]


class Check(msgspec.Struct):
    status: str
    response_time: str | None = None
    engine: str | None = None
    error: str | None = None


class Health(msgspec.Struct):
    status: str
    checks: dict[str, Check]
    version: str
    timestamp: str


async def health(request: Request, _principal: Principal | None) -> Response:
    db = request.app.state.db
    started = time.perf_counter()
    try:
        await db.ping()
        check = Check("healthy", f"{(time.perf_counter() - started) * 1000:.1f}ms", db.dialect)
    except StorageUnavailable as exc:
        check = Check("unhealthy", engine=db.dialect, error=str(exc))
    status = check.status
    body = Health(status, {"database": check}, __version__, iso(now_us()))
    return json_response(body, 200 if status == "healthy" else 503)


ROUTES = [
    ApiRoute(
        "GET",
        "/health",
        health,
        scope=None,
        summary="Health of the server and its database (503 when the database is unreachable)",
        tag="Health",
        response=Health,
    )
]
