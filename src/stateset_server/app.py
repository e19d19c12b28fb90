"""`create_app(settings)`: the route table, middleware and lifespan. No business logic lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from stateset_server.core.http import ApiRoute, RequestIdMiddleware, http_exception_handler
from stateset_server.core.idempotency import IdempotentDatabase, purge_expired
from stateset_server.docs.openapi import build_openapi
from stateset_server.docs.routes import docs_routes
from stateset_server.events.routes import ROUTES as EVENT_ROUTES
from stateset_server.health.routes import ROUTES as HEALTH_ROUTES
from stateset_server.orders.routes import ROUTES as ORDER_ROUTES
from stateset_server.payments.routes import ROUTES as PAYMENT_ROUTES
from stateset_server.settings import Settings
from stateset_server.storage import open_database
from stateset_server.workspaces.service import authenticate

__all__ = ["API_ROUTES", "app_from_environment", "create_app"]

API_ROUTES: list[ApiRoute] = [*HEALTH_ROUTES, *ORDER_ROUTES, *PAYMENT_ROUTES, *EVENT_ROUTES]


def create_app(settings: Settings) -> Starlette:
    # Fail at start, not on the first order, when a setting is malformed.
    pricing, fees = settings.pricing(), settings.fees()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = IdempotentDatabase(await open_database(settings.database_url))
        app.state.db = db
        app.state.inflight = set()
        purger = asyncio.create_task(_purge_idempotency_keys(db))
        app.state.authenticate = partial(authenticate, db)
        app.state.pricing = pricing
        app.state.fees = fees
        app.state.public_url = settings.public_url
        try:
            yield
        finally:
            purger.cancel()
            await db.close()

    routes = [route.starlette_route() for route in API_ROUTES] + docs_routes(build_openapi(API_ROUTES))
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={HTTPException: http_exception_handler},
        lifespan=lifespan,
    )


async def _purge_idempotency_keys(db: IdempotentDatabase) -> None:
    while True:
        try:
            await purge_expired(db)
        except Exception:  # the next round tries again; serving requests matters more
            logging.getLogger("stateset_server").exception("purging expired idempotency keys failed")
        await asyncio.sleep(600)


def app_from_environment() -> Starlette:
    """The factory each server worker process calls (settings come from STATESET_* variables)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(Settings.from_env())
