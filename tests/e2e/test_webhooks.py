"""Webhooks through real HTTP on both engines, delivered to a real HTTP receiver in this process:
signatures checked by an independent port of the API reference's verifier, the payload structure,
retries and backoff, Retry-After, 4xx and 410, crash recovery (SIGKILL mid-delivery), several
dispatcher processes on one database, SSRF refusal, secret rotation, the delivery log, retry, replay
and the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import httpx
import pytest

from tests.conftest import servers_on_new_database
from tests.support import ServerProcess, Workspace, new_workspace

# Small retry base so a whole schedule step takes a fraction of a second; short lease so a killed
# dispatcher's claims come back quickly.
WEBHOOK_ENV = {
    "STATESET_WEBHOOK_ALLOW_PRIVATE": "true",
    "STATESET_WEBHOOK_RETRY_BASE_SECONDS": "0.15",
    "STATESET_WEBHOOK_LEASE_SECONDS": "1.5",
}
ITEM = {"sku": "WIDGET-001", "quantity": 1, "price": "10.00"}


# --- an independent verifier: the API reference's JavaScript, line for line -----------------------


def verify_webhook(payload: bytes, signature: str, secret: str, now: int | None = None) -> bool:
    elements = signature.split(" ")
    timestamp = next(e for e in elements if e.startswith("t="))[2:]
    signatures = [e[3:] for e in elements if e.startswith("v1=")]
    current_time = int(time.time()) if now is None else now
    if current_time - int(timestamp) > 300:
        raise ValueError("Webhook timestamp too old")
    signed_payload = f"{timestamp}.{payload.decode()}"
    expected = hmac.new(secret.encode(), signed_payload.encode(), hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(sig.encode(), expected.encode()) for sig in signatures):
        raise ValueError("Invalid webhook signature")
    return True


# --- the receiver ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b'{"received": true}'


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A threaded HTTP server: records every POST, answers each path from its script (then 200)."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.default: dict[str, Reply] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                hit = Hit(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    receiver.hits.append(hit)
                    queue = receiver.scripts.get(self.path)
                    reply = queue.pop(0) if queue else receiver.default.get(self.path, Reply())
                if reply.delay:
                    time.sleep(reply.delay)
                with contextlib.suppress(OSError):  # the server may have been killed meanwhile
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.counter = 0

    def endpoint(self, *replies: Reply, default: Reply | None = None) -> tuple[str, str]:
        """A fresh path (and its URL) answering `replies` in order, then `default` (200)."""
        with self.lock:
            self.counter += 1
            path = f"/hooks/{self.counter}"
            self.scripts[path] = list(replies)
            if default is not None:
                self.default[path] = default
        return path, f"http://127.0.0.1:{self.server.server_port}{path}"

    def at(self, path: str) -> list[Hit]:
        with self.lock:
            return [hit for hit in self.hits if hit.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def wh_server(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with servers_on_new_database(engine, str(tmp_path_factory.mktemp(f"webhooks-{engine}")), WEBHOOK_ENV) as (one,):
        yield one


@pytest.fixture
def wws(wh_server: ServerProcess) -> Iterator[Workspace]:
    workspace = new_workspace(wh_server)
    try:
        yield workspace
    finally:
        workspace.close()


def create_endpoint(client: httpx.Client, url: str, **fields: object) -> dict:
    response = client.post("/v1/webhooks", json={"url": url, "events": ["order.*"], **fields})
    assert response.status_code == 201, response.text
    return response.json()


def create_order(client: httpx.Client, **fields: object) -> dict:
    response = client.post("/v1/orders", json={"items": [ITEM], **fields})
    assert response.status_code == 201, response.text
    return response.json()


def delivery_of(client: httpx.Client, endpoint_id: str, status: str | None = None) -> dict:
    """The endpoint's only delivery, once it has reached `status`."""

    def check() -> dict | None:
        data = client.get(f"/v1/webhooks/{endpoint_id}/deliveries").json()["data"]
        if len(data) == 1 and (status is None or data[0]["status"] == status):
            return client.get(f"/v1/webhooks/{endpoint_id}/deliveries/{data[0]['id']}").json()
        return None

    return wait_for(check, what=f"a {status} delivery")  # type: ignore[return-value]


# --- delivery, signature, payload -------------------------------------------------------------------


def test_signed_delivery_with_the_spec_payload(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint()
    endpoint = create_endpoint(client, url, headers={"X-Receiver-Token": "abc123"}, description="orders")
    assert endpoint["id"].startswith("we_") and endpoint["secret"].startswith("whsec_")
    assert endpoint["events"] == ["order.*"] and endpoint["enabled"] is True
    # The secret is shown on create only.
    assert "secret" not in client.get(f"/v1/webhooks/{endpoint['id']}").json()

    order = create_order(client, customer_email="webhooks@example.com")  # also customer.created: not subscribed
    hit = wait_for(lambda: receiver.at(path), what="the delivery")[0]  # type: ignore[index]
    time.sleep(0.3)
    assert len(receiver.at(path)) == 1

    assert verify_webhook(hit.body, hit.headers["stateset-signature"], endpoint["secret"])
    with pytest.raises(ValueError, match="Invalid webhook signature"):
        verify_webhook(hit.body, hit.headers["stateset-signature"], "whsec_wrong")
    with pytest.raises(ValueError, match="Invalid webhook signature"):
        verify_webhook(hit.body.replace(b"CREATED", b"PAID"), hit.headers["stateset-signature"], endpoint["secret"])
    signed_at = int(hit.headers["webhook-timestamp"])
    assert abs(signed_at - time.time()) < 30
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], endpoint["secret"], now=signed_at + 300)
    with pytest.raises(ValueError, match="too old"):
        verify_webhook(hit.body, hit.headers["stateset-signature"], endpoint["secret"], now=signed_at + 301)

    header = hit.headers["stateset-signature"]
    assert header.startswith(f"t={signed_at} v1=") and len(header.split(" ")) == 2
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["user-agent"].startswith("stateset-server/")
    assert hit.headers["x-receiver-token"] == "abc123"

    event = hit.event
    assert hit.headers["webhook-id"] == event["id"] and event["id"].startswith("evt_")
    assert event["type"] == "order.created"
    assert datetime.fromisoformat(event["created"].replace("Z", "+00:00")).tzinfo is not None
    assert event["data"]["object"]["id"] == order["id"]
    assert event["data"]["object"]["status"] == "CREATED"
    assert event["previous_attributes"] is None
    assert event["metadata"]["workspace_id"] == wws.id
    assert event["metadata"]["api_version"] == "2024-01-01"
    assert "request_id" in event["metadata"]
    # Exactly the event as the API shows it.
    assert client.get(f"/v1/events/{event['id']}").json() == event

    delivery = delivery_of(client, endpoint["id"], "succeeded")
    assert delivery["event_id"] == event["id"] and delivery["attempt_count"] == 1
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["outcome"] == "succeeded"
    assert attempt["response_body"] == '{"received": true}' and attempt["latency_ms"] >= 0


def test_update_event_carries_previous_attributes(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint()
    order = create_order(client)
    endpoint = create_endpoint(client, url, events=["order.updated"])
    assert client.patch(f"/v1/orders/{order['id']}", json={"notes": "leave at the door"}).status_code == 200
    hit = wait_for(lambda: receiver.at(path), what="order.updated")[0]  # type: ignore[index]
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], endpoint["secret"])
    assert hit.event["type"] == "order.updated"
    assert hit.event["previous_attributes"] == {"notes": None}


# --- retries -------------------------------------------------------------------------------------


def test_503_twice_then_200_is_three_attempts_with_growing_gaps(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint(Reply(503, body=b"\x00\xffdown"), Reply(503))
    endpoint = create_endpoint(client, url)
    create_order(client)
    hits = wait_for(lambda: len(receiver.at(path)) >= 3 and receiver.at(path), what="three attempts")
    first, second, third = hits  # type: ignore[misc]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    assert first.body == second.body == third.body  # the same event, each attempt signed afresh
    gaps = (second.at - first.at, third.at - second.at)
    assert 0.1 < gaps[0] < gaps[1], gaps
    assert gaps[1] > 0.6, gaps  # the second step is 6× the base (0.15 s), ±20 % jitter
    delivery = delivery_of(client, endpoint["id"], "succeeded")
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 503, 200]
    assert [a["outcome"] for a in delivery["attempts"]] == ["retry", "retry", "succeeded"]
    assert delivery["attempts"][0]["error"] == "HTTP 503"
    assert delivery["attempts"][0]["response_body"] == "\ufffd\ufffddown"  # stored even on PostgreSQL
    assert client.get(f"/v1/webhooks/{endpoint['id']}").json()["failure_streak"] == 0


def test_429_retry_after_is_honoured(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint(Reply(429, {"Retry-After": "1"}))
    create_endpoint(client, url)
    create_order(client)
    first, second = wait_for(lambda: len(receiver.at(path)) >= 2 and receiver.at(path), what="the retry")  # type: ignore[misc]
    assert second.at - first.at >= 0.95  # not the 0.15 s the schedule alone would give


def test_400_is_not_retried_and_a_failure_streak_disables(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint(Reply(400, body=b'{"error": "bad"}'))
    endpoint = create_endpoint(client, url)
    create_order(client)
    delivery = delivery_of(client, endpoint["id"], "failed")
    assert [a["status_code"] for a in delivery["attempts"]] == [400]
    assert delivery["attempts"][0]["outcome"] == "failed"
    assert delivery["attempts"][0]["response_body"] == '{"error": "bad"}'
    time.sleep(0.5)
    assert len(receiver.at(path)) == 1
    shown = client.get(f"/v1/webhooks/{endpoint['id']}").json()
    assert shown["enabled"] is True and shown["failure_streak"] == 1

    # 20 deliveries in a row failing for good disable the endpoint.
    _always_400, url2 = receiver.endpoint(default=Reply(400))
    streaky = create_endpoint(client, url2, events=["order.created"])
    batch = client.post("/v1/orders/bulk", json=[{"items": [ITEM]}] * 20)
    assert batch.status_code == 201, batch.text
    wait_for(lambda: not client.get(f"/v1/webhooks/{streaky['id']}").json()["enabled"], what="the streak")
    shown = client.get(f"/v1/webhooks/{streaky['id']}").json()
    assert shown["status"] == "disabled" and "20 consecutive" in shown["disabled_reason"]


def test_410_disables_the_endpoint_and_emits_an_event(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    gone_path, gone_url = receiver.endpoint(Reply(410))
    watcher_path, watcher_url = receiver.endpoint()
    gone = create_endpoint(client, gone_url)
    watcher = create_endpoint(client, watcher_url, events=["webhook_endpoint.*"])
    create_order(client)
    hit = wait_for(lambda: receiver.at(watcher_path), what="webhook_endpoint.disabled")[0]  # type: ignore[index]
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], watcher["secret"])
    event = hit.event
    assert event["type"] == "webhook_endpoint.disabled"
    assert event["data"]["object"]["id"] == gone["id"]
    assert event["data"]["object"]["enabled"] is False
    assert "secret" not in event["data"]["object"] and "headers" not in event["data"]["object"]
    assert event["previous_attributes"]["enabled"] is True

    shown = client.get(f"/v1/webhooks/{gone['id']}").json()
    assert shown["enabled"] is False and "410" in shown["disabled_reason"]
    listed = client.get("/v1/events", params={"type": "webhook_endpoint.disabled"}).json()["data"]
    assert [e["id"] for e in listed] == [event["id"]]
    # A disabled endpoint gets nothing more; re-enabling it starts afresh.
    create_order(client)
    time.sleep(0.5)
    assert len(receiver.at(gone_path)) == 1
    enabled = client.patch(f"/v1/webhooks/{gone['id']}", json={"enabled": True}).json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] is None
    create_order(client)
    wait_for(lambda: len(receiver.at(gone_path)) == 2, what="delivery after re-enabling")


# --- rotation -------------------------------------------------------------------------------------


def test_rotation_signs_with_both_secrets_during_the_overlap(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint()
    endpoint = create_endpoint(client, url)
    old = endpoint["secret"]
    rotated = client.post(f"/v1/webhooks/{endpoint['id']}/rotate_secret", json={"expires_in_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and new.startswith("whsec_") and rotated.json()["previous_secret_expires_at"]
    create_order(client)
    hit = wait_for(lambda: receiver.at(path), what="a delivery")[0]  # type: ignore[index]
    t, first, second = hit.headers["stateset-signature"].split(" ")
    assert verify_webhook(hit.body, f"{t} {first}", new)  # the new secret signs first
    assert verify_webhook(hit.body, f"{t} {second}", old)
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], old)
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], new)

    # No overlap: only the newest secret signs.
    latest = client.post(f"/v1/webhooks/{endpoint['id']}/rotate_secret", data={"expires_in_seconds": "0"}).json()
    assert latest["previous_secret_expires_at"] is None
    create_order(client)
    hit = wait_for(lambda: len(receiver.at(path)) == 2 and receiver.at(path)[1], what="a delivery")
    assert len(hit.headers["stateset-signature"].split(" ")) == 2  # type: ignore[union-attr]
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], latest["secret"])  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        verify_webhook(hit.body, hit.headers["stateset-signature"], new)  # type: ignore[union-attr]


# --- the delivery log, retry, replay ------------------------------------------------------------------


def test_delivery_log_retry_and_replay(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint(Reply(400))
    endpoint = create_endpoint(client, url, events=["order.created", "order.cancelled"])
    base = f"/v1/webhooks/{endpoint['id']}"
    first = create_order(client)
    failed = delivery_of(client, endpoint["id"], "failed")

    # Retry: queued again now, with a fresh schedule; the receiver now says 200.
    retried = client.post(f"{base}/deliveries/{failed['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    done = delivery_of(client, endpoint["id"], "succeeded")
    assert [a["status_code"] for a in done["attempts"]] == [400, 200]

    second = create_order(client)
    assert client.post(f"/v1/orders/{second['id']}/cancel").status_code == 200
    wait_for(lambda: len(receiver.at(path)) == 4, what="two more deliveries")
    listing = client.get(f"{base}/deliveries").json()
    assert listing["pagination"]["total_count"] == 3
    assert [d["event_type"] for d in listing["data"]] == ["order.cancelled", "order.created", "order.created"]
    only = client.get(f"{base}/deliveries", params={"event_type": "order.cancelled"}).json()["data"]
    assert [d["event_type"] for d in only] == ["order.cancelled"]
    assert client.get(f"{base}/deliveries", params={"event_type": "order.*", "status": "failed"}).json()["data"] == []
    later = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert client.get(f"{base}/deliveries", params={"created_at_gt": later}).json()["data"] == []
    assert client.get(f"{base}/deliveries", params={"status": "lost"}).status_code == 400

    # Replay after the first order's event: the second order's created and cancelled events.
    first_event = client.get("/v1/events", params={"object_id": first["id"], "type": "order.created"}).json()
    replayed = client.post(f"{base}/replay", json={"since_event_id": first_event["data"][0]["id"]})
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["enqueued"] == 2 and replayed.json()["has_more"] is False
    wait_for(lambda: len(receiver.at(path)) == 6, what="the replayed deliveries")
    assert Counter(hit.event["type"] for hit in receiver.at(path)[4:]) == {"order.created": 1, "order.cancelled": 1}
    # Replay by time: everything of this workspace since a minute ago that the endpoint subscribes to.
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    by_time = client.post(f"{base}/replay", data={"since": since}).json()
    assert by_time["enqueued"] == 3
    replays = client.get(f"{base}/deliveries", params={"origin": "replay", "limit": 100}).json()["data"]
    assert len(replays) == 5
    # Errors: both or neither; an unknown event; another workspace's endpoint.
    assert client.post(f"{base}/replay", json={}).status_code == 422
    assert client.post(f"{base}/replay", json={"since_event_id": "evt_nope"}).status_code == 422
    assert client.post(f"{base}/deliveries/wdl_nope/retry").status_code == 404


# --- simulator ----------------------------------------------------------------------------------------


def test_simulator_form_and_json(wws: Workspace, receiver: Receiver) -> None:
    client = wws.client()
    path, url = receiver.endpoint()
    # Form-encoded, exactly as the spec's curl: a generated secret, returned so it can be checked.
    form = client.post("/v1/webhooks/simulate", data={"event_type": "order.created", "endpoint_url": url})
    assert form.status_code == 200, form.text
    result = form.json()
    assert result["status_code"] == 200 and result["delivered"] is True and result["secret_source"] == "generated"
    assert result["response_body"] == '{"received": true}'
    [hit] = receiver.at(path)
    assert hit.headers["stateset-signature"] == result["signature_header"]
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], result["secret_used"])
    event = hit.event
    assert event["id"] == result["event_id"] and event["type"] == "order.created"
    assert event["data"]["object"]["object"] == "order" and event["metadata"]["workspace_id"] == wws.id

    # JSON with the caller's secret.
    as_json = client.post(
        "/v1/webhooks/simulate",
        json={"event_type": "return.approved", "endpoint_url": url, "secret": "whsec_my_own_secret_123"},
    ).json()
    assert as_json["secret_source"] == "request" and "secret_used" not in as_json
    hit = receiver.at(path)[1]
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], "whsec_my_own_secret_123")
    assert hit.event["data"]["object"]["status"] == "approved"

    # The URL of an endpoint: signed with its secret. Nothing is queued for it.
    endpoint = create_endpoint(client, url)
    by_endpoint = client.post("/v1/webhooks/simulate", json={"event_type": "order.shipped", "endpoint_url": url})
    assert by_endpoint.json()["secret_source"] == "endpoint" and by_endpoint.json()["endpoint_id"] == endpoint["id"]
    hit = receiver.at(path)[2]
    assert verify_webhook(hit.body, hit.headers["stateset-signature"], endpoint["secret"])
    assert client.get(f"/v1/webhooks/{endpoint['id']}/deliveries").json()["data"] == []

    # A receiver that is down: reported, not an API error.
    down = client.post(
        "/v1/webhooks/simulate", json={"event_type": "order.paid", "endpoint_url": "http://127.0.0.1:9/x"}
    ).json()
    assert down["status_code"] is None and down["delivered"] is False and down["error"]
    bad = client.post("/v1/webhooks/simulate", json={"event_type": "order.exploded", "endpoint_url": url})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "event_type"


# --- endpoints: validation, edits, tenancy ----------------------------------------------------------------


def test_endpoint_validation_edits_and_tenancy(wws: Workspace, wh_server: ServerProcess, receiver: Receiver) -> None:
    client = wws.client()
    _path, url = receiver.endpoint()

    def refused(body: dict, field: str) -> None:
        response = client.post("/v1/webhooks", json={"url": url, **body})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["field"].startswith(field), response.json()

    refused({"events": ["order.exploded"]}, "events[0]")
    refused({"events": ["nothing.*"]}, "events[0]")
    refused({"events": []}, "events")
    refused({"url": "ftp://example.com/x"}, "url")
    refused({"headers": {f"X-H{i}": "v" for i in range(21)}}, "headers")
    refused({"headers": {"stateset-signature": "t=1 v1=forged"}}, "headers.stateset-signature")
    refused({"headers": {"Content-Type": "text/plain"}}, "headers.Content-Type")
    refused({"secret": "short"}, "secret")

    everything = client.post("/v1/webhooks", json={"url": url}).json()
    assert everything["events"] == ["*"]
    mine = create_endpoint(
        client,
        url,
        events=["order.*", "customer.subscription.*", "return.approved", "*"],
        secret="whsec_given_by_the_client",
        metadata={"team": "ops"},
    )
    assert mine["secret"] == "whsec_given_by_the_client"
    edited = client.patch(
        f"/v1/webhooks/{mine['id']}",
        json={"events": ["inventory.*"], "description": "stock", "metadata": {"team": None, "env": "qa"}},
    )
    assert edited.status_code == 200, edited.text
    shown = edited.json()
    assert shown["events"] == ["inventory.*"] and shown["description"] == "stock" and shown["metadata"] == {"env": "qa"}
    assert "secret" not in shown
    listed = client.get("/v1/webhooks").json()
    assert {e["id"] for e in listed["data"]} == {everything["id"], mine["id"]}
    assert client.get("/v1/webhooks", params={"enabled": "true"}).json()["pagination"]["total_count"] == 2

    # Another workspace sees none of it; a read-only key cannot write.
    other = new_workspace(wh_server)
    try:
        stranger = other.client()
        assert stranger.get(f"/v1/webhooks/{mine['id']}").status_code == 404
        assert stranger.get(f"/v1/webhooks/{mine['id']}/deliveries").status_code == 404
        assert stranger.get("/v1/webhooks").json()["data"] == []
        reader = wws.client(wws.key("restricted", scopes=["webhooks:read"]))
        assert reader.get("/v1/webhooks").status_code == 200
        assert reader.post("/v1/webhooks", json={"url": url}).status_code == 403
        # Live mode is another scope of its own.
        live = wws.client(wws.key(mode="live"))
        assert live.get(f"/v1/webhooks/{mine['id']}").status_code == 404
    finally:
        other.close()

    deleted = client.delete(f"/v1/webhooks/{mine['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert client.get(f"/v1/webhooks/{mine['id']}").status_code == 404


def test_loopback_and_metadata_urls_are_refused_by_default(ws: Workspace) -> None:
    """The suite's shared server runs without STATESET_WEBHOOK_ALLOW_PRIVATE."""
    client = ws.client()
    for url in ("http://127.0.0.1:8080/hook", "http://169.254.169.254/latest/meta-data", "http://localhost/x"):
        response = client.post("/v1/webhooks", json={"url": url, "events": ["*"]})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["field"] == "url"
    endpoint = client.post("/v1/webhooks", json={"url": "https://93.184.215.14/hook"})
    assert endpoint.status_code == 201, endpoint.text
    patched = client.patch(f"/v1/webhooks/{endpoint.json()['id']}", json={"url": "http://10.0.0.1/"})
    assert patched.status_code == 422
    simulated = client.post(
        "/v1/webhooks/simulate", data={"event_type": "order.created", "endpoint_url": "http://127.0.0.1:9/x"}
    )
    assert simulated.status_code == 422 and simulated.json()["error"]["details"]["field"] == "endpoint_url"


# --- crashes and many dispatchers ----------------------------------------------------------------------


def _event_ids(client: httpx.Client, event_type: str) -> set[str]:
    ids, cursor = set(), None
    while True:
        params = {"type": event_type, "limit": "100", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/events", params=params).json()
        ids |= {event["id"] for event in page["data"]}
        cursor = page["pagination"]["next_cursor"]
        if cursor is None:
            return ids


def test_sigkill_mid_delivery_loses_nothing(fresh_database: str, receiver: Receiver) -> None:
    server = ServerProcess(fresh_database, env=WEBHOOK_ENV).start()
    try:
        headers = {"Authorization": f"Bearer {server.first_key}"}
        # The first deliveries hang at the receiver: the server dies while they are in flight.
        path, url = receiver.endpoint(*[Reply(delay=3.0)] * 4)
        with httpx.Client(base_url=server.base_url, headers=headers) as client:
            create_endpoint(client, url, events=["order.created"])
            for _ in range(6):
                create_order(client)
            expected = _event_ids(client, "order.created")
            wait_for(lambda: len(receiver.at(path)) >= 1, what="a delivery in flight")
        server.kill()
        server = ServerProcess(fresh_database, env=WEBHOOK_ENV).start()
        received = lambda: {hit.headers["webhook-id"] for hit in receiver.at(path)}  # noqa: E731
        wait_for(lambda: received() == expected, timeout=20, what="every event after the restart")
        with httpx.Client(base_url=server.base_url, headers=headers) as client:
            endpoint_id = client.get("/v1/webhooks").json()["data"][0]["id"]
            wait_for(
                lambda: (
                    client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": "succeeded"}).json()[
                        "pagination"
                    ]["total_count"]
                    == 6
                ),
                timeout=20,
                what="every delivery recorded",
            )
    finally:
        server.stop()


_DRAINERS: dict[int, threading.Thread] = {}


def _start_worker(database_url: str) -> subprocess.Popen[str]:
    env = {**os.environ, **WEBHOOK_ENV, "STATESET_WEBHOOK_LEASE_SECONDS": "10"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stateset_server", "worker", "--database-url", database_url, "--concurrency", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = [proc.stdout.readline() for _ in range(1)]
    while "webhook worker" not in seen[-1]:
        assert seen[-1] and len(seen) < 50, "".join(seen)
        seen.append(proc.stdout.readline())
    drainer = threading.Thread(target=proc.stdout.read, daemon=True)  # keep draining its output
    drainer.start()
    _DRAINERS[proc.pid] = drainer
    return proc


def _stop_worker(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=15)
    _DRAINERS.pop(proc.pid).join(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


async def _attempt_workers(database_url: str) -> set[str]:
    if database_url.startswith("postgresql://"):
        conn = await asyncpg.connect(database_url)
        try:
            return {row["worker"] for row in await conn.fetch("SELECT DISTINCT worker FROM webhook_attempts")}
        finally:
            await conn.close()
    with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT worker FROM webhook_attempts")}


def test_two_worker_processes_never_send_twice(fresh_database: str, receiver: Receiver) -> None:
    server = ServerProcess(fresh_database, env={**WEBHOOK_ENV, "STATESET_WEBHOOK_WORKER": "external"}).start()
    workers: list[subprocess.Popen[str]] = []
    try:
        headers = {"Authorization": f"Bearer {server.first_key}"}
        path, url = receiver.endpoint(default=Reply(delay=0.02))
        with httpx.Client(base_url=server.base_url, headers=headers) as client:
            create_endpoint(client, url, events=["order.created"])
            create_order(client)
            time.sleep(0.5)
            assert receiver.at(path) == []  # the server itself sends nothing
            workers = [_start_worker(fresh_database), _start_worker(fresh_database)]
            batch = client.post("/v1/orders/bulk", json=[{"items": [ITEM]}] * 49)
            assert batch.status_code == 201, batch.text
            expected = _event_ids(client, "order.created")
        assert len(expected) == 50
        wait_for(lambda: len(receiver.at(path)) >= 50, timeout=20, what="50 deliveries")
        time.sleep(0.5)
        counts = Counter(hit.headers["webhook-id"] for hit in receiver.at(path))
        assert set(counts) == expected
        assert max(counts.values()) == 1, [event for event, n in counts.items() if n > 1]
        assert len(asyncio.run(_attempt_workers(fresh_database))) == 2  # both took a share
    finally:
        for proc in workers:
            _stop_worker(proc)
        server.stop()
