"""The direct route from the server to an API endpoint, around Starlette's generic stack.

Starlette's app runs every request through its error middleware, our request-id middleware, its
exception middleware and a router that tries each route's regular expression in turn; for an API
call that spent a third of a GET. `ApiApp` keeps all of that for everything else (docs, WebSocket,
404/405 envelopes, redirects) and sends a request that fully matches an API route straight to it:
the routes are indexed by method, segment count and first two path segments, so at most a few
patterns are tried.
`ApiRoute` already turns every exception into the error envelope, so nothing is lost; the request
id and rate-limit headers are added the same way as by `RequestIdMiddleware`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from stateset_server.core.http import ApiRoute, with_request_id

__all__ = ["ApiApp", "AppState", "RouteIndex"]

_DEPTH = 2


def _key(method: str, path: str) -> tuple[str, ...]:
    """Method, segment count and the first two segments: only the routes that could match share one."""
    parts = path.split("/")
    return (method, str(len(parts)), *parts[1 : _DEPTH + 1])


class RouteIndex:
    """API routes by method, segment count and the static start of their path, in registration order
    within each bucket. A path parameter matches exactly one segment (no `:path` parameters here), so
    a route can only match a path with as many segments as its own."""

    def __init__(self, routes: Iterable[tuple[ApiRoute, Route]]) -> None:
        self._buckets: dict[tuple[str, ...], list[tuple[ApiRoute, Route]]] = {}
        for api, route in routes:
            key = _key(api.method, api.path)
            if any("{" in part for part in key[2:]) or ":path}" in api.path:
                raise ValueError(f"{api.path}: the first {_DEPTH} segments of an API path must be fixed")
            self._buckets.setdefault(key, []).append((api, route))

    def find(self, scope: Scope) -> tuple[ApiRoute, Scope] | None:
        """The endpoint that fully matches (method and path), with its path parameters; else None."""
        for api, route in self._buckets.get(_key(scope["method"], scope["path"]), ()):
            match, child = route.matches(scope)
            if match is Match.FULL:
                return api, child
        return None


class AppState(State):
    """`app.state` whose values are plain attributes. Starlette's State keeps them in a dict behind
    `__getattr__`, so every read first fails the normal look-up, building an AttributeError (~1.3 µs
    here; a request reads app.state ten times). Here that dict is the instance's own `__dict__`."""

    def __init__(self) -> None:
        super().__init__(self.__dict__)


class ApiApp(Starlette):
    """Starlette, with fully matching API requests sent straight to their endpoint."""

    def __init__(self, *, api_routes: list[tuple[ApiRoute, Route]], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.state = AppState()
        self.api_index = RouteIndex(api_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            found = self.api_index.find(scope)
            if found is not None:
                api, child = found
                scope["app"] = self
                scope.update(child)
                send = with_request_id(scope, send)
                response = await api.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
