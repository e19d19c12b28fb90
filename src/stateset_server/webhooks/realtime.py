"""The real-time event stream: `GET /v1/ws`, a WebSocket on which a client subscribes to event types
(optionally of one object) and receives each event once it is committed.

Fan-out goes through the database, never through process memory, so a subscriber connected to one
server process sees the events written by every other process and worker: each process runs one
`Broadcaster` that, while at least one subscription is open, reads the `events` table past its
cursor every `POLL_SECONDS` and hands each new row to the local subscriptions of the row's workspace
and mode. With no subscription open it does not query at all.

Authentication, once per connection: `Authorization: Bearer <key>` on the upgrade request, or
`?api_key=<key>` (browsers cannot set headers on a WebSocket; the key then appears in URLs, so
proxies must not log query strings), or a first message `{"type": "auth", "api_key": …}` within
`AUTH_TIMEOUT_SECONDS`. The key needs `events:read`; everything it sees is its workspace's events in
its mode. A refused connection gets an `error` frame, then a close: 4401 (no, invalid or revoked
key), 4403 (missing scope), 4429 (rate limited), 1011 (database unavailable). The key is checked
again at every heartbeat, so revoking it ends its streams within `HEARTBEAT_SECONDS`.

Protocol, JSON text frames:
  → {"type": "subscribe", "events": ["order.*", "order.paid"], "object_id"?: …, "since"?: evt_… | seq}
  ← {"type": "subscribed", "subscription_id": "sub_…", "events": […], "object_id": … | null}
  ← {"type": "event", "subscription_id": "sub_…", "event": <the event as GET /v1/events/{id} shows it>}
  → {"type": "unsubscribe", "subscription_id": "sub_…"}  ← {"type": "unsubscribed", "subscription_id": …}
  → {"type": "ping"}  ← {"type": "pong"}
  ← {"type": "heartbeat"} every HEARTBEAT_SECONDS
  ← {"type": "error", "code": "VALIDATION_ERROR" | "RESOURCE_NOT_FOUND" | …, "message": …} — a
    malformed message is answered, the connection stays open.
Patterns: an exact type, `prefix.*` (every type under the prefix) or `*`. With `since` (an event id,
or a seq number; 0 = the beginning) the subscription first replays the stored events after it, in
order, then continues live without gaps or duplicates.

A subscriber that falls more than MAX_BACKLOG frames behind is disconnected (4008, SLOW_CONSUMER)
rather than buffered without bound; it can reconnect with `since` = the last event id it received.
On server shutdown every stream is closed with 1001.

PostgreSQL caveat: identity values are assigned when a row is inserted, not when its transaction
commits, so a lower `seq` can become visible after a higher one the broadcaster has already passed.
On PostgreSQL the broadcaster therefore remembers every hole in the seq range it has read and
re-reads those seqs on each poll for GAP_GRACE_SECONDS (a hole is either a transaction still in
flight or a rolled-back insert, which stays a hole forever); an event whose transaction stays open
longer than that between its insert and its commit is not streamed (it is still in `GET /v1/events`).
Such a late event may arrive after events with a higher seq. Each subscription also remembers the
last RECENT_IDS event ids it delivered, so no event is delivered twice (live after replay included).
SQLite commits in seq order (one writer), so it has no holes to watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.websockets import WebSocket

from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.events.log import COLUMNS, event_out
from stateset_server.storage import IN_WORKSPACE, Database, Row, Tx
from stateset_server.storage.database import StorageUnavailable
from stateset_server.workspaces.keys import Principal

__all__ = [
    "AUTH_TIMEOUT_SECONDS",
    "GAP_GRACE_SECONDS",
    "HEARTBEAT_SECONDS",
    "MAX_BACKLOG",
    "POLL_SECONDS",
    "Broadcaster",
    "Subscriber",
    "Subscription",
    "stream",
]

log = logging.getLogger("stateset_server.realtime")

POLL_SECONDS = 0.1
BATCH = 500  # rows per poll; a full batch is followed by another read at once
REPLAY_BATCH = 200
HEARTBEAT_SECONDS = 25.0
AUTH_TIMEOUT_SECONDS = 5.0
MAX_BACKLOG = 1_000  # queued frames per connection before it is dropped as a slow consumer
GAP_GRACE_SECONDS = 5.0
MAX_GAPS = 10_000
RECENT_IDS = 2_048  # > MAX_BACKLOG: covers every live event a replay can overlap with
MAX_SUBSCRIPTIONS = 100
MAX_PATTERNS = 50
MAX_MESSAGE_CHARS = 64 * 1024
SHUTDOWN_GRACE_SECONDS = 3.0

CLOSE_GOING_AWAY = 1001
CLOSE_UNAVAILABLE = 1011
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429

SCOPE = "events:read"
_PATTERN = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$")
_encoder = msgspec.json.Encoder()


# --- Client messages ----------------------------------------------------------------------------


class _Auth(msgspec.Struct, tag="auth", tag_field="type"):
    api_key: str


class _Subscribe(msgspec.Struct, tag="subscribe", tag_field="type"):
    events: list[str]
    object_id: str | None = None
    since: str | int | None = None


class _Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type"):
    subscription_id: str


class _Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


_ClientMessage = _Auth | _Subscribe | _Unsubscribe | _Ping
_decoder = msgspec.json.Decoder(_ClientMessage)


# --- Server frames ------------------------------------------------------------------------------


class _EventFrame(msgspec.Struct):
    type: str
    subscription_id: str
    event: msgspec.Raw  # encoded once per event, shared by every subscription it goes to


def _frame(**fields: Any) -> bytes:
    return _encoder.encode(fields)


def _error(code: str, message: str) -> bytes:
    return _frame(type="error", code=code, message=message)


_PONG = _frame(type="pong")
_HEARTBEAT = _frame(type="heartbeat")


# --- Subscriptions ------------------------------------------------------------------------------


class _RecentIds:
    """The last `size` event ids delivered on a subscription (insertion-ordered, bounded)."""

    __slots__ = ("_ids", "_size")

    def __init__(self, size: int = RECENT_IDS) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, event_id: str) -> bool:
        """True when the id is new (and is now remembered)."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


@dataclass(eq=False, slots=True)
class Subscription:
    """One `subscribe`: which event types (and object) of the connection's workspace and mode."""

    id: str
    patterns: tuple[str, ...]
    object_id: str | None = None
    # While a `since` replay runs, live events wait here so that they follow the replayed ones.
    held: list[tuple[str, bytes]] | None = None
    recent: _RecentIds = field(default_factory=_RecentIds)
    _everything: bool = field(init=False)
    _exact: frozenset[str] = field(init=False)
    _prefixes: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._everything = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in self.patterns if p.endswith(".*"))

    def matches(self, event_type: str, object_id: str) -> bool:
        if self.object_id is not None and object_id != self.object_id:
            return False
        return self._everything or event_type in self._exact or event_type.startswith(self._prefixes)


class Subscriber:
    """One authenticated connection: its subscriptions and its bounded queue of outgoing frames.

    Frames are queued (never sent from the broadcaster) so that one slow client cannot stall the
    fan-out to everyone else; one sender task per connection drains the queue."""

    def __init__(self, principal: Principal, authorization: str | None = None) -> None:
        self.principal = principal
        self.authorization = authorization  # re-checked at every heartbeat
        self.subscriptions: dict[str, Subscription] = {}
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.closing = asyncio.Event()
        self.close_code: int | None = None
        self.close_frame: bytes | None = None
        self.close_reason = ""

    @property
    def tenant(self) -> tuple[str, str]:
        return self.principal.workspace_id, self.principal.mode

    def push(self, frame: bytes) -> None:
        if self.closing.is_set():
            return
        if self.queue.qsize() >= MAX_BACKLOG:
            self.abort(
                CLOSE_SLOW_CONSUMER,
                "SLOW_CONSUMER",
                f"More than {MAX_BACKLOG} messages were waiting to be sent; reconnect with `since` set to"
                " the last event id received to resume.",
            )
            return
        self.queue.put_nowait(frame)

    def deliver(self, subscription: Subscription, event_id: str, event_json: bytes) -> None:
        if subscription.held is not None:
            subscription.held.append((event_id, event_json))
            if len(subscription.held) > MAX_BACKLOG:
                self.abort(CLOSE_SLOW_CONSUMER, "SLOW_CONSUMER", "The replay fell too far behind the live stream.")
            return
        if subscription.recent.add(event_id):
            self.push(_encoder.encode(_EventFrame("event", subscription.id, msgspec.Raw(event_json))))

    def abort(self, code: int, error_code: str | None = None, message: str = "", reason: str = "") -> None:
        """Close the connection (first reason wins): the frames still queued are dropped."""
        if self.closing.is_set():
            return
        self.close_code = code
        self.close_frame = _error(error_code, message) if error_code is not None else None
        self.close_reason = reason
        while not self.queue.empty():  # release the memory now; nothing more is sent but the error
            self.queue.get_nowait()
        self.closing.set()


# --- The per-process broadcaster ----------------------------------------------------------------


class Broadcaster:
    """Reads new events from the database and dispatches them to this process's subscribers."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._track_gaps = getattr(db, "dialect", "") == "postgres"
        self._tenants: dict[tuple[str, str], set[Subscriber]] = {}
        self._connections: set[Subscriber] = set()
        self._active = 0  # open subscriptions in this process; no polling while 0
        self._cursor: int | None = None  # the highest seq read; None while idle
        self._gaps: dict[int, float] = {}  # seq -> when the hole was first seen (PostgreSQL)
        self._lock = asyncio.Lock()  # a subscription starts between two polls, never inside one
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_failure_log = 0.0

    @property
    def db(self) -> Database:
        return self._db

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="realtime-broadcaster")

    async def stop(self) -> None:
        """Close every stream (1001) and stop polling; waits briefly for connections to finish."""
        if self._connections:
            log.info("closing %d real-time stream(s)", len(self._connections))
        for subscriber in list(self._connections):
            subscriber.abort(CLOSE_GOING_AWAY, reason="server shutting down")
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self._connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def connect(self, subscriber: Subscriber) -> None:
        self._connections.add(subscriber)
        self._tenants.setdefault(subscriber.tenant, set()).add(subscriber)

    def disconnect(self, subscriber: Subscriber) -> None:
        self._connections.discard(subscriber)
        self._active -= len(subscriber.subscriptions)
        subscriber.subscriptions.clear()
        peers = self._tenants.get(subscriber.tenant)
        if peers is not None:
            peers.discard(subscriber)
            if not peers:
                del self._tenants[subscriber.tenant]

    async def subscribe(self, subscriber: Subscriber, subscription: Subscription, confirmation: bytes) -> None:
        """Register `subscription`: the events committed after this returns reach it, those committed
        before do not. The confirmation is queued before any event.

        Under the lock, so it lands between two polls; when polling is under way, the events already
        committed are first read and dispatched to the existing subscriptions (a catch-up poll)."""
        async with self._lock:
            if self._cursor is None:
                await self._initialise()
            else:
                while await self._poll_locked():
                    pass
            subscriber.push(confirmation)
            subscriber.subscriptions[subscription.id] = subscription
            self._active += 1
        self._wake.set()

    def unsubscribe(self, subscriber: Subscriber, subscription_id: str) -> Subscription | None:
        subscription = subscriber.subscriptions.pop(subscription_id, None)
        if subscription is not None:
            self._active -= 1
        return subscription

    async def _initialise(self) -> None:
        """Start at the newest event. On PostgreSQL the holes just below it may be transactions still
        in flight: they are watched like the holes found while polling."""

        async def newest(tx: Tx) -> list[Row]:
            return await tx.fetch("SELECT seq FROM events ORDER BY seq DESC LIMIT 1000")

        seqs = [row["seq"] for row in await self._db.read(newest)]
        self._cursor = seqs[0] if seqs else 0
        self._gaps.clear()
        if self._track_gaps and seqs:
            present, now = set(seqs), time.monotonic()
            for seq in range(seqs[-1], seqs[0]):
                if seq not in present:
                    self._gaps[seq] = now

    async def _run(self) -> None:
        while True:
            if self._active <= 0:
                async with self._lock:
                    if self._active <= 0:
                        # Idle: forget the position, so the next subscriber starts at "now" instead of
                        # receiving whatever was written while nobody listened.
                        self._cursor = None
                        self._gaps.clear()
                self._wake.clear()
                if self._active <= 0:
                    await self._wake.wait()
                continue
            try:
                more = await self._poll()
            except Exception as exc:  # the database is away: keep the streams open and retry
                now = time.monotonic()
                if now - self._last_failure_log > 30:
                    self._last_failure_log = now
                    log.warning("real-time stream: reading events failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            if not more:
                await asyncio.sleep(POLL_SECONDS)

    async def _poll(self) -> bool:
        """One read and dispatch; True when the batch was full (more events are already waiting)."""
        async with self._lock:
            return await self._poll_locked()

    async def _poll_locked(self) -> bool:
        cursor = self._cursor
        if cursor is None:
            return False
        gaps = list(self._gaps)

        async def read(tx: Tx) -> tuple[list[Row], list[Row]]:
            rows = await tx.fetch(f"SELECT {COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT {BATCH}", cursor)
            late: list[Row] = []
            if gaps:
                late = await tx.fetch(f"SELECT {COLUMNS} FROM events WHERE seq = ANY($1::bigint[]) ORDER BY seq", gaps)
            return rows, late

        rows, late = await self._db.read(read)
        if self._track_gaps:
            self._track(cursor, rows, late)
        if rows:
            self._cursor = rows[-1]["seq"]
        # Late ones first: lower seqs, inserted before the new rows (though committed after).
        self._dispatch(late)
        self._dispatch(rows)
        return len(rows) == BATCH

    def _track(self, cursor: int, rows: list[Row], late: list[Row]) -> None:
        for row in late:
            self._gaps.pop(row["seq"], None)
        now = time.monotonic()
        expected = cursor + 1
        for row in rows:
            # A sequence can jump far (PostgreSQL pre-allocates values; a crash skips them): only
            # the nearest holes can still be transactions in flight worth watching.
            for seq in range(max(expected, row["seq"] - MAX_GAPS), row["seq"]):
                self._gaps[seq] = now
            expected = row["seq"] + 1
        # Insertion order is age order: drop the expired holes, and the oldest beyond the cap.
        while self._gaps:
            seq, seen = next(iter(self._gaps.items()))
            if now - seen <= GAP_GRACE_SECONDS and len(self._gaps) <= MAX_GAPS:
                break
            del self._gaps[seq]

    def _dispatch(self, rows: list[Row]) -> None:
        for row in rows:
            subscribers = self._tenants.get((row["workspace_id"], row["mode"]))
            if not subscribers:
                continue
            encoded: bytes | None = None
            for subscriber in list(subscribers):
                for subscription in list(subscriber.subscriptions.values()):
                    if subscription.matches(row["type"], row["object_id"]):
                        if encoded is None:
                            encoded = _encoder.encode(event_out(row))
                        subscriber.deliver(subscription, row["id"], encoded)


# --- One connection -----------------------------------------------------------------------------


async def stream(websocket: WebSocket) -> None:
    """`GET /v1/ws`."""
    broadcaster: Broadcaster = websocket.app.state.realtime
    # Accepted first: a refusal can only carry an error frame and a close code on an open socket.
    await websocket.accept()
    authenticated = await _authenticate(websocket)
    if authenticated is None:
        return
    subscriber = Subscriber(*authenticated)
    broadcaster.connect(subscriber)
    try:
        await _Connection(websocket, broadcaster, subscriber).run()
    finally:
        broadcaster.disconnect(subscriber)


async def _refuse(websocket: WebSocket, close_code: int, code: str, message: str) -> None:
    with contextlib.suppress(Exception):  # the client may already be gone
        async with asyncio.timeout(2):
            await websocket.send_text(_error(code, message).decode())
            await websocket.close(close_code)


async def _authenticate(websocket: WebSocket) -> tuple[Principal, str] | None:
    state = websocket.app.state
    authorization = websocket.headers.get("authorization")
    if authorization is None and websocket.query_params.get("api_key"):
        authorization = f"Bearer {websocket.query_params['api_key']}"
    by_message = authorization is None
    if by_message:
        how = (
            'Send {"type": "auth", "api_key": "sk_test_..."} first, an Authorization: Bearer header,'
            " or ?api_key= on the URL."
        )
        try:
            async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
                message = await websocket.receive()
        except TimeoutError:
            await _refuse(websocket, CLOSE_UNAUTHORIZED, "MISSING_API_KEY", f"No API key within 5 seconds. {how}")
            return None
        if message["type"] == "websocket.disconnect":
            return None
        try:
            first = _decoder.decode(message.get("text") or message.get("bytes") or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            first = None
        if not isinstance(first, _Auth):
            await _refuse(websocket, CLOSE_UNAUTHORIZED, "MISSING_API_KEY", f"Authenticate first. {how}")
            return None
        authorization = f"Bearer {first.api_key}"
    try:
        principal, limits = await state.identify(authorization)
        # The upgrade counts as one request; an open stream holds no concurrency slot.
        admission = await state.limiter.admit(principal.key_id, limits)
        await state.limiter.release(admission)
    except ApiError as error:
        close = CLOSE_RATE_LIMITED if error.code == "RATE_LIMITED" else CLOSE_UNAUTHORIZED
        await _refuse(websocket, close, error.code, error.message)
        return None
    except StorageUnavailable:
        await _refuse(websocket, CLOSE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "The database is unavailable; retry.")
        return None
    if not principal.allows(SCOPE):
        await _refuse(
            websocket,
            CLOSE_FORBIDDEN,
            "INSUFFICIENT_PERMISSIONS",
            f"This API key cannot read events; the stream needs the '{SCOPE}' scope.",
        )
        return None
    if by_message:
        await websocket.send_text(_frame(type="authenticated", livemode=principal.livemode).decode())
    return principal, authorization


class _Connection:
    """The tasks of one authenticated connection: reading requests, sending frames, replays."""

    def __init__(self, websocket: WebSocket, broadcaster: Broadcaster, subscriber: Subscriber) -> None:
        self.websocket = websocket
        self.broadcaster = broadcaster
        self.subscriber = subscriber
        self.replays: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        sub = self.subscriber
        tasks = {
            asyncio.create_task(self._read()),
            asyncio.create_task(self._send()),
            asyncio.create_task(sub.closing.wait()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.debug("real-time stream ended: %r", task.exception())
        finally:
            pending = (*tasks, *self.replays.values())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if sub.close_code is not None:
            # The reader is cancelled by now: granian does not complete a close while a receive is
            # pending. At shutdown granian has already stopped the socket's I/O before the lifespan
            # ends (the client just sees the connection drop), so do not hold the shutdown up then.
            # A stalled or vanished client must not hold us either.
            wait = 0.25 if sub.close_code == CLOSE_GOING_AWAY else 2.0
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wait):
                    if sub.close_frame is not None:
                        await self.websocket.send_text(sub.close_frame.decode())
                    await self.websocket.close(sub.close_code, sub.close_reason or None)

    async def _send(self) -> None:
        sub = self.subscriber
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while True:
            wait = next_beat - time.monotonic()
            if wait <= 0:
                next_beat = time.monotonic() + HEARTBEAT_SECONDS
                if not await self._key_still_valid():
                    return
                await self.websocket.send_text(_HEARTBEAT.decode())
                continue
            try:
                async with asyncio.timeout(wait):
                    frame = await sub.queue.get()
            except TimeoutError:
                continue
            await self.websocket.send_text(frame.decode())

    async def _key_still_valid(self) -> bool:
        try:
            await self.websocket.app.state.authenticate(self.subscriber.authorization)
        except ApiError as error:
            self.subscriber.abort(CLOSE_UNAUTHORIZED, error.code, error.message)
            return False
        except StorageUnavailable:
            pass  # not the key's fault; checked again at the next heartbeat
        return True

    async def _read(self) -> None:
        sub = self.subscriber
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                sub.push(_error("VALIDATION_ERROR", "Messages are JSON text frames, not binary."))
                continue
            if len(text) > MAX_MESSAGE_CHARS:
                sub.push(_error("VALIDATION_ERROR", f"Messages are limited to {MAX_MESSAGE_CHARS} characters."))
                continue
            try:
                request = _decoder.decode(text)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                sub.push(_error("VALIDATION_ERROR", f"Invalid message: {exc}"))
                continue
            try:
                await self._handle(request)
            except Exception:  # a bug answering one message should not end the stream
                log.exception("real-time stream: handling %s failed", type(request).__name__)
                sub.push(_error("INTERNAL_ERROR", "An unexpected error occurred. It has been logged."))

    async def _handle(self, request: _ClientMessage) -> None:
        sub = self.subscriber
        if isinstance(request, _Ping):
            sub.push(_PONG)
        elif isinstance(request, _Subscribe):
            await self._subscribe(request)
        elif isinstance(request, _Unsubscribe):
            self._unsubscribe(request.subscription_id)
        else:
            sub.push(_error("VALIDATION_ERROR", "This connection is already authenticated."))

    async def _subscribe(self, request: _Subscribe) -> None:
        sub = self.subscriber
        problem = _check_subscribe(request)
        if problem is None and len(sub.subscriptions) >= MAX_SUBSCRIPTIONS:
            problem = f"A connection holds at most {MAX_SUBSCRIPTIONS} subscriptions."
        if problem is not None:
            sub.push(_error("VALIDATION_ERROR", problem))
            return
        patterns = tuple(dict.fromkeys(request.events))
        try:
            since = await self._since_seq(request.since)
            if since is None and request.since is not None:
                sub.push(_error("RESOURCE_NOT_FOUND", f"No event {request.since!r} in this workspace and mode."))
                return
            subscription = Subscription(
                new_id("sub"), patterns, request.object_id, held=[] if since is not None else None
            )
            confirmation = _frame(
                type="subscribed",
                subscription_id=subscription.id,
                events=list(patterns),
                object_id=request.object_id,
            )
            await self.broadcaster.subscribe(sub, subscription, confirmation)
        except StorageUnavailable:
            sub.push(_error("SERVICE_UNAVAILABLE", "The database is temporarily unavailable; retry shortly."))
            return
        if since is not None:
            self.replays[subscription.id] = asyncio.create_task(self._replay(subscription, since))

    def _unsubscribe(self, subscription_id: str) -> None:
        sub = self.subscriber
        replay = self.replays.pop(subscription_id, None)
        if replay is not None:
            replay.cancel()
        if self.broadcaster.unsubscribe(sub, subscription_id) is None:
            sub.push(_error("RESOURCE_NOT_FOUND", f"No subscription {subscription_id!r} on this connection."))
            return
        sub.push(_frame(type="unsubscribed", subscription_id=subscription_id))

    async def _since_seq(self, since: str | int | None) -> int | None:
        """`since` as a seq: an integer as given, an event id looked up in the caller's workspace/mode."""
        if since is None or isinstance(since, int):
            return since
        if since.isdigit():
            return int(since)
        principal = self.subscriber.principal

        async def lookup(tx: Tx) -> int | None:
            return await tx.fetchval(
                f"SELECT seq FROM events WHERE id = $1 AND {IN_WORKSPACE}",
                since,
                principal.workspace_id,
                principal.mode,
            )

        return await self.broadcaster.db.read(lookup)

    async def _replay(self, subscription: Subscription, after: int) -> None:
        """Send the stored events after `after`, then release the live events held meanwhile (those
        already replayed are skipped by the subscription's recent ids)."""
        sub, principal = self.subscriber, self.subscriber.principal
        object_filter = " AND object_id = $4" if subscription.object_id is not None else ""
        sql = (
            f"SELECT {COLUMNS} FROM events WHERE workspace_id = $1 AND mode = $2 AND seq > $3{object_filter}"
            f" ORDER BY seq LIMIT {REPLAY_BATCH}"
        )
        try:
            while True:
                # Backpressure: replay only as fast as the client reads, never into the slow-consumer cut.
                while sub.queue.qsize() > MAX_BACKLOG // 4 and not sub.closing.is_set():
                    await asyncio.sleep(0.05)
                args: list[Any] = [principal.workspace_id, principal.mode, after]
                if subscription.object_id is not None:
                    args.append(subscription.object_id)
                rows = await self.broadcaster.db.read(lambda tx, args=tuple(args): tx.fetch(sql, *args))
                for row in rows:
                    if subscription.matches(row["type"], row["object_id"]) and subscription.recent.add(row["id"]):
                        event_json = _encoder.encode(event_out(row))
                        sub.push(_encoder.encode(_EventFrame("event", subscription.id, msgspec.Raw(event_json))))
                if len(rows) < REPLAY_BATCH:
                    break
                after = rows[-1]["seq"]
        except StorageUnavailable:
            sub.abort(CLOSE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "The database became unavailable during the replay.")
            return
        finally:
            self.replays.pop(subscription.id, None)
        held, subscription.held = subscription.held or [], None
        for event_id, event_json in held:
            sub.deliver(subscription, event_id, event_json)


def _check_subscribe(request: _Subscribe) -> str | None:
    if not request.events:
        return "`events` lists at least one event type or pattern, e.g. ['order.*']."
    if len(request.events) > MAX_PATTERNS:
        return f"`events` lists at most {MAX_PATTERNS} types or patterns."
    for pattern in request.events:
        if not _PATTERN.match(pattern):
            return f"Invalid event pattern {pattern!r}: use a type (order.paid), a prefix (order.*) or *."
    if request.object_id is not None and not 0 < len(request.object_id) <= 255:
        return "`object_id` is an object id such as ord_…"
    if isinstance(request.since, int) and request.since < 0:
        return "`since` is an event id or a non-negative seq number."
    return None
