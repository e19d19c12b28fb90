"""Idempotency-Key on every write: replay, reuse, in-flight, concurrency, processes and restarts."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from stateset_server.storage import open_database
from tests.e2e.lifecycle_support import WALLET, new_order
from tests.support import ServerProcess, Workspace, run

ORDER = {"items": [{"sku": "WIDGET-001", "quantity": 2, "price": "29.99"}]}


def key() -> str:
    return f"order-{uuid.uuid4()}"


def count_orders(client: httpx.Client) -> int:
    return client.get("/v1/orders", params={"include": "total_count"}).json()["pagination"]["total_count"]


def test_a_retry_replays_the_first_response_and_creates_nothing(ws: Workspace) -> None:
    client = ws.client()
    headers = {"Idempotency-Key": key()}
    first = client.post("/v1/orders", json=ORDER, headers=headers)
    again = client.post("/v1/orders", json=ORDER, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.content == first.content
    assert count_orders(client) == 1
    assert client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": key()}).status_code == 201
    assert count_orders(client) == 2


def test_the_same_key_with_another_request_is_refused(ws: Workspace) -> None:
    client = ws.client()
    headers = {"Idempotency-Key": key()}
    order = client.post("/v1/orders", json=ORDER, headers=headers).json()
    other_body = client.post("/v1/orders", json={**ORDER, "notes": "x"}, headers=headers)
    assert other_body.status_code == 422 and other_body.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    other_path = client.post(f"/v1/orders/{order['id']}/hold", headers=headers)
    assert other_path.status_code == 422
    assert count_orders(client) == 1


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "tab\there"])
def test_malformed_keys_are_a_400(ws: Workspace, bad: str) -> None:
    response = ws.client().post("/v1/orders", json=ORDER, headers={"Idempotency-Key": bad})
    assert response.status_code == 400 and response.json()["error"]["details"]["field"] == "Idempotency-Key"


def test_errors_after_the_work_began_are_replayed_but_validation_errors_are_not_stored(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client)
    headers = {"Idempotency-Key": key()}
    declined = client.post(
        f"/v1/orders/{order['id']}/pay", json={"payment_method": {"wallet_address": WALLET}}, headers=headers
    )
    assert declined.status_code == 402
    client.post("/v1/sandbox/faucet", json={"wallet_address": WALLET, "amount": "100"})
    replayed = client.post(
        f"/v1/orders/{order['id']}/pay", json={"payment_method": {"wallet_address": WALLET}}, headers=headers
    )
    assert replayed.status_code == 402 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == declined.content  # even though the wallet could pay now
    fixed = {"Idempotency-Key": key()}
    invalid = client.post("/v1/orders", json={"items": []}, headers=fixed)
    assert invalid.status_code == 422
    valid = client.post("/v1/orders", json=ORDER, headers=fixed)  # nothing was stored for the invalid one
    assert valid.status_code == 201 and "idempotent-replayed" not in valid.headers


def test_every_write_endpoint_replays_without_a_second_effect(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client)

    def twice(method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Idempotency-Key": key()}
        first = client.request(method, path, json=body, headers=headers)
        second = client.request(method, path, json=body, headers=headers)
        assert first.status_code < 300, first.text
        assert (second.status_code, second.content) == (first.status_code, first.content)
        assert second.headers["idempotent-replayed"] == "true"
        return first.json()

    twice("POST", "/v1/sandbox/faucet", {"wallet_address": WALLET, "amount": "10"})
    assert client.get(f"/v1/wallets/{WALLET}").json()["balance"] == "10.00"
    twice("PATCH", f"/v1/orders/{order['id']}", {"metadata": {"a": "1"}})
    twice("POST", f"/v1/orders/{order['id']}/pay", {"amount": "5.00"})
    assert client.get(f"/v1/orders/{order['id']}").json()["amount_paid"] == "5.00"
    twice("POST", f"/v1/orders/{order['id']}/pay")
    twice("POST", f"/v1/orders/{order['id']}/fulfill")
    twice("POST", f"/v1/orders/{order['id']}/refund", {"amount": "1.00"})
    assert client.get(f"/v1/orders/{order['id']}").json()["amount_refunded"] == "1.00"
    created = twice("POST", "/v1/orders/bulk", [ORDER, ORDER])
    twice("POST", "/v1/orders/pay_bulk", [{"order_id": o["id"]} for o in created["data"]])
    assert count_orders(client) == 3
    events = client.get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"]
    assert [e["type"] for e in reversed(events)] == [
        "order.created", "order.updated", "order.updated", "order.paid",
        "order.fulfilled", "order.processing", "order.refunded",
    ]  # fmt: skip


def test_keys_are_scoped_to_workspace_and_mode(ws: Workspace, other_ws: Workspace) -> None:
    shared = {"Idempotency-Key": "same-key-everywhere"}
    test_order = ws.client().post("/v1/orders", json=ORDER, headers=shared).json()
    live_order = ws.client(ws.key("secret", "live")).post("/v1/orders", json=ORDER, headers=shared).json()
    theirs = other_ws.client().post("/v1/orders", json=ORDER, headers=shared).json()
    assert len({test_order["id"], live_order["id"], theirs["id"]}) == 3


def test_twenty_concurrent_requests_with_one_key_make_one_order(ws: Workspace) -> None:
    headers = {"Authorization": f"Bearer {ws.secret}", "Idempotency-Key": key()}

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=ws.server.base_url, headers=headers) as client:
            return await asyncio.gather(*(client.post("/v1/orders", json=ORDER, timeout=30) for _ in range(20)))

    responses = run(fire())
    created = [r for r in responses if r.status_code == 201]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_flight) == 20 and created
    assert all(r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS" for r in in_flight)
    assert len({r.json()["id"] for r in created}) == 1
    assert count_orders(ws.client()) == 1


def test_keys_hold_across_server_processes_and_restarts(fresh_database: str) -> None:
    first = ServerProcess(fresh_database).start()
    second = ServerProcess(fresh_database).start()
    try:
        headers = {"Authorization": f"Bearer {first.first_key}", "Idempotency-Key": key()}
        original = httpx.post(f"{first.base_url}/v1/orders", json=ORDER, headers=headers)
        from_other = httpx.post(f"{second.base_url}/v1/orders", json=ORDER, headers=headers)
        assert original.status_code == 201 and from_other.content == original.content
        assert from_other.headers["idempotent-replayed"] == "true"

        async def race() -> list[httpx.Response]:
            racing = {**headers, "Idempotency-Key": key()}
            async with httpx.AsyncClient(headers=racing) as client:
                return await asyncio.gather(
                    *(client.post(f"{s.base_url}/v1/orders", json=ORDER, timeout=30) for s in [first, second] * 5)
                )

        raced = run(race())
        bodies = {r.json()["id"] for r in raced if r.status_code == 201}
        assert len(bodies) == 1 and all(r.status_code in (201, 409) for r in raced)
    finally:
        first.kill()
        second.stop()
    restarted = ServerProcess(fresh_database).start()
    try:
        after = httpx.post(f"{restarted.base_url}/v1/orders", json=ORDER, headers=headers)
        assert after.content == original.content and after.headers["idempotent-replayed"] == "true"
    finally:
        restarted.stop()


def test_keys_expire_after_24_hours(ws: Workspace) -> None:
    client = ws.client()
    headers = {"Idempotency-Key": key()}
    first = client.post("/v1/orders", json=ORDER, headers=headers).json()

    async def age() -> None:
        db = await open_database(ws.server.database_url)
        try:
            await db.write(
                lambda tx: tx.execute(
                    "UPDATE idempotency_keys SET created_at = created_at - $1 WHERE key = $2",
                    25 * 3600 * 1_000_000,
                    headers["Idempotency-Key"],
                )
            )
        finally:
            await db.close()

    run(age())
    fresh = client.post("/v1/orders", json={**ORDER, "notes": "new"}, headers=headers)
    assert fresh.status_code == 201 and fresh.json()["id"] != first["id"]
    assert "idempotent-replayed" not in fresh.headers
