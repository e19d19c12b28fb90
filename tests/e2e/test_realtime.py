"""`GET /v1/ws`, the real-time event stream: subscribers on one server process receive the events
committed through another process on the same database, filtered by type, object, workspace and mode.

Two real server processes per engine share one fresh database for the whole module (starting them per
test would cost more than the tests); each test works in its own workspace, except the acceptance
test, which uses the sandbox key the first server printed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stateset_server.core.errors import ApiError
from stateset_server.webhooks import realtime
from stateset_server.workspaces.keys import Principal
from tests.conftest import PRICING_ENV, servers_on_new_database
from tests.support import ServerProcess, Workspace, new_workspace

ORDER = {"items": [{"sku": "A", "quantity": 1, "price": "5.00"}]}
Frame = dict[str, Any]


@pytest.fixture(scope="module")
def pair(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Server A (where the streams connect) and server B (where the writes go), one database."""
    folder = str(tmp_path_factory.mktemp(f"realtime-{engine}"))
    with servers_on_new_database(engine, folder, PRICING_ENV, count=2) as (a, b):
        yield a, b


@pytest.fixture
def workspace(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[Workspace]:
    ws = new_workspace(pair[0])
    try:
        yield ws
    finally:
        ws.close()


def ws_url(server: ServerProcess, query: str = "") -> str:
    return server.base_url.replace("http://", "ws://", 1) + "/v1/ws" + query


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def receive(ws: ClientConnection, timeout: float = 10.0) -> Frame:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def request(ws: ClientConnection, message: Frame | str) -> Frame:
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    return await receive(ws)


async def subscribe(ws: ClientConnection, events: list[str], **options: Any) -> str:
    reply = await request(ws, {"type": "subscribe", "events": events, **options})
    assert reply["type"] == "subscribed", reply
    assert reply["events"] == events
    assert reply["object_id"] == options.get("object_id")
    return str(reply["subscription_id"])


async def events_until(ws: ClientConnection, done: Callable[[Frame], bool], timeout: float = 10.0) -> list[Frame]:
    """The event frames received up to and including the first one for which `done` is true."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "heartbeat":
                continue
            assert frame["type"] == "event", frame
            frames.append(frame)
            if done(frame):
                return frames


def about(order_id: str, event_type: str | None = None) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        event = frame["event"]
        return event["data"]["object"]["id"] == order_id and event_type in (None, event["type"])

    return check


async def create_order(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/orders", json=ORDER)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def pay(client: httpx.AsyncClient, order_id: str) -> None:
    response = await client.post(f"/v1/orders/{order_id}/pay")
    assert response.status_code == 200, response.text


def writer(server: ServerProcess, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers=bearer(key), timeout=30.0)


async def refusal(url: str, headers: dict[str, str] | None = None, first: Frame | None = None) -> tuple[Frame, int]:
    """The error frame and the close code of a connection the server refuses."""
    async with connect(url, additional_headers=headers or {}) as ws:
        if first is not None:
            await ws.send(json.dumps(first))
        error = await receive(ws)
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None
    return error, closed.value.rcvd.code


# --- Across processes ---------------------------------------------------------------------------


def test_subscriber_on_one_process_sees_an_order_created_and_paid_through_another(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    key = a.first_key
    assert key is not None

    async def scenario() -> list[Frame]:
        async with connect(ws_url(a), additional_headers=bearer(key)) as ws:
            subscription = await subscribe(ws, ["order.created", "order.paid"])
            async with writer(b, key) as client:
                order_id = await create_order(client)
                await pay(client, order_id)
            frames = await events_until(ws, about(order_id, "order.paid"), timeout=5.0)
        assert {frame["subscription_id"] for frame in frames} == {subscription}
        return [frame for frame in frames if about(order_id)(frame)]

    frames = asyncio.run(scenario())
    assert [frame["event"]["type"] for frame in frames] == ["order.created", "order.paid"]
    event = frames[1]["event"]
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["livemode"] is False
    assert event["data"]["object"]["status"].lower() == "paid"


def test_object_id_filter_wildcards_and_unsubscribe(
    pair: tuple[ServerProcess, ServerProcess], workspace: Workspace
) -> None:
    a, b = pair

    async def scenario() -> None:
        async with writer(b, workspace.secret) as client:
            first = await create_order(client)
            # Query-parameter authentication, as a browser connects.
            async with connect(ws_url(a, f"?api_key={workspace.secret}")) as ws:
                one = await subscribe(ws, ["order.*"], object_id=first)
                everything = await subscribe(ws, ["*"])
                second = await create_order(client)
                await pay(client, first)
                last = await create_order(client)  # committed last: once it arrives, all others have
                frames = await events_until(ws, lambda f: f["subscription_id"] == everything and about(last)(f))

                of_one = [f["event"] for f in frames if f["subscription_id"] == one]
                assert [e["type"] for e in of_one] == ["order.paid"]
                assert all(e["data"]["object"]["id"] == first for e in of_one)
                seen = {(f["event"]["type"], f["event"]["data"]["object"]["id"]) for f in frames}
                assert {("order.created", second), ("order.paid", first), ("order.created", last)} <= seen

                assert await request(ws, {"type": "unsubscribe", "subscription_id": one}) == {
                    "type": "unsubscribed",
                    "subscription_id": one,
                }
                prefix = await subscribe(ws, ["order.*"])
                final = await create_order(client)
                frames = await events_until(ws, lambda f: f["subscription_id"] == prefix and about(final)(f))
                assert {f["subscription_id"] for f in frames} <= {everything, prefix}
                assert all(f["event"]["type"].startswith("order.") for f in frames if f["subscription_id"] == prefix)

    asyncio.run(scenario())


def test_other_workspaces_and_modes_never_arrive(
    pair: tuple[ServerProcess, ServerProcess], workspace: Workspace, other_workspace: Workspace
) -> None:
    a, b = pair
    live_key = workspace.key(mode="live")  # through service.create_key, as the CLI does

    async def scenario() -> None:
        async with (
            connect(ws_url(a), additional_headers=bearer(workspace.secret)) as test_stream,
            connect(ws_url(a), additional_headers=bearer(live_key)) as live_stream,
            writer(b, workspace.secret) as test_client,
            writer(b, live_key) as live_client,
            writer(b, other_workspace.secret) as other_client,
        ):
            await subscribe(test_stream, ["*"])
            await subscribe(live_stream, ["*"])
            foreign = await create_order(other_client)
            live = await create_order(live_client)
            mine = await create_order(test_client)
            live_last = await create_order(live_client)

            test_frames = await events_until(test_stream, about(mine))
            assert {f["event"]["data"]["object"]["id"] for f in test_frames} == {mine}
            assert all(f["event"]["livemode"] is False for f in test_frames)
            assert {f["event"]["metadata"]["workspace_id"] for f in test_frames} == {workspace.id}

            live_frames = await events_until(live_stream, about(live_last))
            assert {f["event"]["data"]["object"]["id"] for f in live_frames} == {live, live_last}
            assert all(f["event"]["livemode"] is True for f in live_frames)
            assert foreign not in {f["event"]["data"]["object"]["id"] for f in test_frames + live_frames}

    asyncio.run(scenario())


@pytest.fixture
def other_workspace(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[Workspace]:
    ws = new_workspace(pair[0])
    try:
        yield ws
    finally:
        ws.close()


def test_since_replays_stored_events_then_continues_live_without_duplicates(
    pair: tuple[ServerProcess, ServerProcess], workspace: Workspace
) -> None:
    a, b = pair

    async def scenario() -> None:
        async with writer(b, workspace.secret) as client:
            earlier = await create_order(client)
            await pay(client, earlier)
            async with connect(ws_url(a), additional_headers=bearer(workspace.secret)) as ws:
                # The workspace's whole history (seq 0: the beginning), then what happens next.
                replay = await subscribe(ws, ["order.*"], since=0)
                frames = await events_until(ws, about(earlier, "order.paid"))
                assert [f["event"]["type"] for f in frames] == ["order.created", "order.paid"]
                created_id = frames[0]["event"]["id"]
                later = await create_order(client)
                frames += await events_until(ws, about(later))
                assert [f["event"]["type"] for f in frames] == ["order.created", "order.paid", "order.created"]
                assert {f["subscription_id"] for f in frames} == {replay}
                assert len({f["event"]["id"] for f in frames}) == 3

                # From an event id: everything after it.
                after = await subscribe(ws, ["order.*"], since=created_id)
                frames = await events_until(ws, lambda f: f["subscription_id"] == after and about(later)(f))
                assert [f["event"]["type"] for f in frames if f["subscription_id"] == after] == [
                    "order.paid",
                    "order.created",
                ]

    asyncio.run(scenario())


# --- Authentication and protocol ---------------------------------------------------------------


def test_authentication_failures_close_with_4401_or_4403(
    pair: tuple[ServerProcess, ServerProcess], workspace: Workspace
) -> None:
    a, _ = pair
    no_events = workspace.key(kind="restricted", scopes=["orders:read"])
    publishable = workspace.key(kind="publishable")
    events_reader = workspace.key(kind="restricted", scopes=["events:read"])
    bogus = "sk_test_" + "x" * 32

    async def scenario() -> None:
        silent = asyncio.create_task(refusal(ws_url(a)))  # says nothing: refused after 5 s
        error, code = await refusal(ws_url(a), first={"type": "ping"})
        assert (error["type"], error["code"], code) == ("error", "MISSING_API_KEY", 4401)
        error, code = await refusal(ws_url(a), headers=bearer(bogus))
        assert (error["code"], code) == ("INVALID_API_KEY", 4401)
        error, code = await refusal(ws_url(a, f"?api_key={bogus}"))
        assert (error["code"], code) == ("INVALID_API_KEY", 4401)
        error, code = await refusal(ws_url(a), first={"type": "auth", "api_key": bogus})
        assert (error["code"], code) == ("INVALID_API_KEY", 4401)
        error, code = await refusal(ws_url(a), headers=bearer(no_events))
        assert (error["code"], code) == ("INSUFFICIENT_PERMISSIONS", 4403)
        assert "events:read" in error["message"]
        error, code = await refusal(ws_url(a, f"?api_key={publishable}"))
        assert (error["code"], code) == ("INSUFFICIENT_PERMISSIONS", 4403)

        # A restricted key with events:read, authenticated by its first message.
        async with connect(ws_url(a)) as ws:
            assert await request(ws, {"type": "auth", "api_key": events_reader}) == {
                "type": "authenticated",
                "livemode": False,
            }
            await subscribe(ws, ["order.created"])

        error, code = await silent
        assert (error["code"], code) == ("MISSING_API_KEY", 4401)
        assert "5 seconds" in error["message"]

    asyncio.run(scenario())


def test_ping_pong_and_malformed_messages_keep_the_connection(
    pair: tuple[ServerProcess, ServerProcess], workspace: Workspace
) -> None:
    a, _ = pair

    async def scenario() -> None:
        async with connect(ws_url(a), additional_headers=bearer(workspace.secret)) as ws:
            assert await request(ws, {"type": "ping"}) == {"type": "pong"}
            malformed: list[tuple[Frame | str | bytes, str]] = [
                ("not json", "VALIDATION_ERROR"),
                (b"\x00binary", "VALIDATION_ERROR"),
                ({"type": "dance"}, "VALIDATION_ERROR"),
                ({"events": ["*"]}, "VALIDATION_ERROR"),
                ({"type": "subscribe"}, "VALIDATION_ERROR"),
                ({"type": "subscribe", "events": []}, "VALIDATION_ERROR"),
                ({"type": "subscribe", "events": ["order paid!"]}, "VALIDATION_ERROR"),
                ({"type": "subscribe", "events": "order.*"}, "VALIDATION_ERROR"),
                ({"type": "subscribe", "events": ["*"], "since": -1}, "VALIDATION_ERROR"),
                ({"type": "subscribe", "events": ["*"], "since": "evt_unknown"}, "RESOURCE_NOT_FOUND"),
                ({"type": "unsubscribe", "subscription_id": "sub_unknown"}, "RESOURCE_NOT_FOUND"),
                ({"type": "auth", "api_key": workspace.secret}, "VALIDATION_ERROR"),  # already authenticated
            ]
            for message, code in malformed:
                await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
                reply = await receive(ws)
                assert reply["type"] == "error" and reply["code"] == code, (message, reply)
                assert reply["message"]
            assert await request(ws, {"type": "ping"}) == {"type": "pong"}

    asyncio.run(scenario())


# --- In-process: the parts a live server cannot provoke on demand -------------------------------


def _principal() -> Principal:
    return Principal("key_1", "ws_1", "test", "secret", frozenset())


def _row(seq: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "id": f"evt_{seq}",
        "workspace_id": "ws_1",
        "mode": "test",
        "type": "order.created",
        "object_type": "order",
        "object_id": f"ord_{seq}",
        "data": json.dumps({"id": f"ord_{seq}"}),
        "previous_attributes": None,
        "request_id": None,
        "api_key_id": "key_1",
        "created_at": 1_700_000_000_000_000,
        "object_status": None,
    }


class _FakeEvents:
    """Just enough of a PostgreSQL `Database` for the broadcaster's three queries."""

    dialect = "postgres"

    def __init__(self) -> None:
        self.committed: list[dict[str, Any]] = []

    async def read(self, fn: Callable[[Any], Any]) -> Any:
        return await fn(self)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        rows = sorted(self.committed, key=lambda row: row["seq"])
        if "ORDER BY seq DESC" in sql:
            return list(reversed(rows))
        if "ANY(" in sql:
            return [row for row in rows if row["seq"] in args[0]]
        return [row for row in rows if row["seq"] > args[0]][: realtime.BATCH]


def test_a_lower_seq_committed_after_a_higher_one_is_still_streamed_once() -> None:
    """PostgreSQL assigns seq at insert: seq 2 can become visible after seq 3 was streamed."""

    async def scenario() -> list[str]:
        db = _FakeEvents()
        db.committed.append(_row(1))
        broadcaster = realtime.Broadcaster(db)  # type: ignore[arg-type]
        subscriber = realtime.Subscriber(_principal())
        broadcaster.connect(subscriber)
        await broadcaster.subscribe(subscriber, realtime.Subscription("sub_1", ("order.*",)), b"{}")
        db.committed.append(_row(3))  # seq 2's transaction is still open
        await broadcaster._poll()
        db.committed.append(_row(2))
        await broadcaster._poll()
        await broadcaster._poll()
        frames = [subscriber.queue.get_nowait() for _ in range(subscriber.queue.qsize())]
        return [msgspec.json.decode(f)["event"]["id"] for f in frames[1:]]

    assert asyncio.run(scenario()) == ["evt_3", "evt_2"]


def test_a_slow_consumer_is_cut_off_beyond_the_backlog() -> None:
    async def scenario() -> realtime.Subscriber:
        subscriber = realtime.Subscriber(_principal())
        for _ in range(realtime.MAX_BACKLOG):
            subscriber.push(b"{}")
        assert not subscriber.closing.is_set()
        subscriber.push(b"{}")
        return subscriber

    subscriber = asyncio.run(scenario())
    assert subscriber.closing.is_set() and subscriber.close_code == 4008
    assert subscriber.queue.empty()
    assert subscriber.close_frame is not None and b"SLOW_CONSUMER" in subscriber.close_frame


def test_heartbeats_recheck_the_key_and_a_revoked_key_ends_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime, "HEARTBEAT_SECONDS", 0.02)
    sent: list[str] = []
    revoked = False

    async def authenticate(authorization: str | None) -> Principal:
        if revoked:
            raise ApiError("INVALID_API_KEY", "The API key provided is invalid, expired or revoked.")
        return _principal()

    class FakeSocket:
        app = type("App", (), {"state": type("State", (), {"authenticate": staticmethod(authenticate)})})

        async def send_text(self, text: str) -> None:
            sent.append(text)

    async def scenario() -> realtime.Subscriber:
        nonlocal revoked
        subscriber = realtime.Subscriber(_principal(), "Bearer sk_test_x")
        connection = realtime._Connection(FakeSocket(), None, subscriber)  # type: ignore[arg-type]
        sender = asyncio.create_task(connection._send())
        while len(sent) < 2:
            await asyncio.sleep(0.01)
        revoked = True
        await asyncio.wait_for(sender, 1.0)
        return subscriber

    subscriber = asyncio.run(scenario())
    assert sent[:2] == ['{"type":"heartbeat"}'] * 2
    assert subscriber.close_code == 4401
    assert subscriber.close_frame is not None and b"INVALID_API_KEY" in subscriber.close_frame
