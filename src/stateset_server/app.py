"""`create_app(settings)`: the route table, middleware and lifespan. No business logic lives here."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute

from stateset_server.affinity import pin_this_worker
from stateset_server.core.clock import now_us
from stateset_server.core.fastpath import ApiApp
from stateset_server.core.http import ApiRoute, RequestIdMiddleware, http_exception_handler
from stateset_server.core.idempotency import IdempotentDatabase, purge_expired
from stateset_server.core.ratelimit import open_limiter
from stateset_server.customers.routes import ROUTES as CUSTOMER_ROUTES
from stateset_server.docs.openapi import build_openapi
from stateset_server.docs.routes import docs_routes
from stateset_server.events.routes import ROUTES as EVENT_ROUTES
from stateset_server.health.routes import ROUTES as HEALTH_ROUTES
from stateset_server.inventory import stock
from stateset_server.inventory.routes import ROUTES as INVENTORY_ROUTES
from stateset_server.orders.routes import ROUTES as ORDER_ROUTES
from stateset_server.payments.routes import ROUTES as PAYMENT_ROUTES
from stateset_server.products.routes import ROUTES as PRODUCT_ROUTES
from stateset_server.returns.routes import ROUTES as RETURN_ROUTES
from stateset_server.settings import Settings
from stateset_server.storage import open_database
from stateset_server.webhooks import realtime
from stateset_server.webhooks.dispatcher import Dispatcher, DispatchSettings
from stateset_server.webhooks.routes import ROUTES as WEBHOOK_ROUTES
from stateset_server.webhooks.ssrf import UrlPolicy
from stateset_server.workspaces.plans import default_plan
from stateset_server.workspaces.routes import ROUTES as WORKSPACE_ROUTES
from stateset_server.workspaces.service import authenticate, identify

__all__ = ["API_ROUTES", "app_from_environment", "create_app"]

API_ROUTES: list[ApiRoute] = [
    *HEALTH_ROUTES,
    *ORDER_ROUTES,
    *PAYMENT_ROUTES,
    *CUSTOMER_ROUTES,
    *PRODUCT_ROUTES,
    *INVENTORY_ROUTES,
    *RETURN_ROUTES,
    *EVENT_ROUTES,
    *WEBHOOK_ROUTES,
    *WORKSPACE_ROUTES,
]


def create_app(settings: Settings) -> Starlette:
    # Fail at start, not on the first order, when a setting is malformed.
    pricing, fees = settings.pricing(), settings.fees()
    default_plan()  # and when STATESET_DEFAULT_PLAN names no plan
    # And when a webhook setting is: the URL policy and the dispatcher's schedule.
    url_policy, dispatch_settings = UrlPolicy.from_env(), DispatchSettings.from_env()
    # Deliveries are sent by this process unless dedicated `stateset-server worker` processes do it.
    in_server_dispatcher = os.environ.get("STATESET_WEBHOOK_WORKER", "").strip().lower() != "external"

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raw = await open_database(settings.database_url)
        try:
            # Counts go to the raw database: they are never part of a request's idempotent transaction.
            limiter = app.state.limiter = await open_limiter(raw)
        except BaseException:
            await raw.close()
            raise
        await limiter.start()
        if raw.epochs is not None:
            raw.epochs.listen()  # this process's caches follow other processes' changes
        db = IdempotentDatabase(raw)
        app.state.db = db
        app.state.inflight = set()
        purger = asyncio.create_task(_purge_idempotency_keys(db))
        expirer = asyncio.create_task(_expire_reservations(db))
        app.state.authenticate = partial(authenticate, db)
        app.state.identify = partial(identify, db)
        app.state.pricing = pricing
        app.state.fees = fees
        app.state.public_url = settings.public_url
        app.state.webhook_url_policy = url_policy
        # One per process: fans committed events out to this process's WebSocket subscribers.
        broadcaster = app.state.realtime = realtime.Broadcaster(db)
        await broadcaster.start()
        # On the raw database: deliveries are never part of a request's idempotent transaction.
        dispatcher = Dispatcher(raw, dispatch_settings, url_policy) if in_server_dispatcher else None
        if dispatcher is not None:
            dispatcher.start()
        try:
            yield
        finally:
            await broadcaster.stop()  # closes the streams while the database is still open
            if dispatcher is not None:
                await dispatcher.stop()  # before the database closes: it records what is in flight
            purger.cancel()
            expirer.cancel()
            await limiter.stop()
            await db.close()

    api_routes = [(route, route.starlette_route()) for route in API_ROUTES]
    routes = [route for _api, route in api_routes] + docs_routes(build_openapi(API_ROUTES))
    routes.append(WebSocketRoute("/v1/ws", realtime.stream, name="GET /v1/ws"))
    return ApiApp(
        api_routes=api_routes,
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


async def _expire_reservations(db: IdempotentDatabase) -> None:
    """Unpaid orders hold their stock for STATESET_RESERVATION_TTL_SECONDS; then it is released."""
    while True:
        try:
            await db.write(lambda tx: stock.expire_due(tx, now_us()))
        except Exception:  # the next round tries again
            logging.getLogger("stateset_server").exception("expiring reservations failed")
        await asyncio.sleep(min(30, stock.RESERVATION_TTL_US / 1_000_000 / 2))


def app_from_environment() -> Starlette:
    """The factory each server worker process calls (settings come from STATESET_* variables)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pin_this_worker()  # before granian starts this worker's I/O threads: they inherit its CPU
    app = create_app(Settings.from_env())
    _collect_garbage_less_often()
    hand_the_gil_over_sooner()
    return app


GIL_SWITCH_INTERVAL = 0.001  # seconds (CPython's default: 0.005)


def hand_the_gil_over_sooner() -> None:
    """granian's I/O threads take the GIL to hand each request, its body and its response's
    completion over to the event loop. While the loop runs Python, such a thread waits for the
    interpreter's switch interval to pass before the loop is made to let go of the GIL: 5 ms by
    default, every hand-off. At 1 ms, over nine alternating pairs of runs, p95 at half the peak
    fell in seven of nine for fulfils (median −15 %) and five of six for pays; fulfils/s rose in
    seven of nine, creates and pays were within the noise (docs/benchmarks.md, session 14)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


def _collect_garbage_less_often() -> None:
    """A request's objects are freed by reference counting; the cycle collector only looks for
    cycles. By default it ran every 700 container allocations and walked every object young enough,
    a request's included (about 4 % of a worker's CPU under load, `perf`). Here it runs every 20,000,
    and what the process loaded before serving (modules, classes, tables) is left out of its walks."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
