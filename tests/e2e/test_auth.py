"""API keys of every kind, test/live separation and workspace isolation, over real HTTP."""

from __future__ import annotations

import base64
import time

import pytest

from stateset_server.storage import open_database
from stateset_server.workspaces import service
from tests.support import ORDER, ServerProcess, Workspace, run


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_the_first_start_prints_a_working_sandbox_secret_key(server: ServerProcess) -> None:
    key = server.first_key
    assert key is not None and key.startswith("sk_test_")
    import httpx

    response = httpx.get(f"{server.base_url}/v1/events", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200


def test_a_request_without_a_key_is_refused_with_missing_api_key(ws: Workspace) -> None:
    error = assert_error(ws.client("").get("/v1/orders/ord_x"), 401, "MISSING_API_KEY")
    assert "Authorization" in error["message"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sk_test_doesnotexistdoesnotexist123456",
        "Bearer not-a-key",
        "Bearer",
        "Basic !!!notbase64",
        "Token sk_test_abc",
        "Bearer sk_test_" + "x" * 500,
    ],
)
def test_unknown_or_malformed_keys_are_refused_with_invalid_api_key(ws: Workspace, header: str) -> None:
    client = ws.client("", Authorization=header)
    assert_error(client.post("/v1/orders", json=ORDER), 401, "INVALID_API_KEY")


def test_http_basic_with_the_key_as_user_name_works_like_curl_u(ws: Workspace) -> None:
    token = base64.b64encode(f"{ws.secret}:".encode()).decode()
    client = ws.client("", Authorization=f"Basic {token}")
    assert client.post("/v1/orders", json=ORDER).status_code == 201


def test_a_revoked_key_stops_working_immediately(ws: Workspace) -> None:
    """Even where the server has the key cached: revoking it (here from another process) changes the
    cache's marker (SQLite: the shared epoch file, at once; PostgreSQL: a NOTIFY with the commit,
    seen when it arrives — the test allows it a second)."""
    secret = ws.key()
    client = ws.client(secret)
    assert client.post("/v1/orders", json=ORDER).status_code == 201
    for _ in range(20):  # long enough for PostgreSQL's listener to connect and the key to be cached
        assert client.get("/v1/events").status_code == 200
        time.sleep(0.02)

    async def revoke(url: str) -> bool:
        db = await open_database(url)
        try:

            async def key_id(tx):
                from stateset_server.workspaces.keys import hash_key

                return await tx.fetchval("SELECT id FROM api_keys WHERE secret_hash = $1", hash_key(secret))

            return await service.revoke_key(db, await db.read(key_id))
        finally:
            await db.close()

    assert run(revoke(ws.server.database_url))
    if ws.server.database_url.startswith("postgresql"):
        deadline = time.monotonic() + 1.0
        while client.get("/v1/events").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert_error(client.get("/v1/events"), 401, "INVALID_API_KEY")


def test_restricted_read_key_can_read_but_not_write(ws: Workspace) -> None:
    order = ws.client().post("/v1/orders", json=ORDER).json()
    reader = ws.client(ws.key("restricted", scopes=["orders:read"]))
    assert reader.get(f"/v1/orders/{order['id']}").status_code == 200
    error = assert_error(reader.post("/v1/orders", json=ORDER), 403, "INSUFFICIENT_PERMISSIONS")
    assert error["details"] == {"required_scope": "orders:write", "key_type": "restricted"}
    assert_error(reader.get("/v1/events"), 403, "INSUFFICIENT_PERMISSIONS")


def test_restricted_write_scope_implies_read_of_the_same_resource_only(ws: Workspace) -> None:
    writer = ws.client(ws.key("restricted", scopes=["orders:write"]))
    created = writer.post("/v1/orders", json=ORDER)
    assert created.status_code == 201
    assert writer.get(f"/v1/orders/{created.json()['id']}").status_code == 200
    assert_error(writer.get("/v1/events"), 403, "INSUFFICIENT_PERMISSIONS")


def test_restricted_events_key_sees_events_only(ws: Workspace) -> None:
    ws.client().post("/v1/orders", json=ORDER)
    events = ws.client(ws.key("restricted", scopes=["events:read"]))
    assert events.get("/v1/events").status_code == 200
    assert_error(events.post("/v1/orders", json=ORDER), 403, "INSUFFICIENT_PERMISSIONS")


def test_publishable_keys_cannot_create_or_read_orders_or_events(ws: Workspace) -> None:
    order = ws.client().post("/v1/orders", json=ORDER).json()
    public = ws.client(ws.key("publishable"))
    assert_error(public.post("/v1/orders", json=ORDER), 403, "INSUFFICIENT_PERMISSIONS")
    assert_error(public.get(f"/v1/orders/{order['id']}"), 403, "INSUFFICIENT_PERMISSIONS")
    assert_error(public.get("/v1/events"), 403, "INSUFFICIENT_PERMISSIONS")


def test_test_and_live_data_never_mix(ws: Workspace) -> None:
    test_client = ws.client()
    live_client = ws.client(ws.key("secret", "live"))
    test_order = test_client.post("/v1/orders", json=ORDER).json()
    live_order = live_client.post("/v1/orders", json=ORDER).json()
    assert test_order["livemode"] is False and live_order["livemode"] is True
    assert_error(live_client.get(f"/v1/orders/{test_order['id']}"), 404, "RESOURCE_NOT_FOUND")
    assert_error(test_client.get(f"/v1/orders/{live_order['id']}"), 404, "RESOURCE_NOT_FOUND")
    live_events = live_client.get("/v1/events", params={"limit": 100}).json()["data"]
    assert {e["data"]["object"]["id"] for e in live_events} == {live_order["id"]}
    assert all(e["livemode"] for e in live_events)
    # Order numbers are counted separately per mode.
    assert test_order["order_number"] == live_order["order_number"] == 1001


def test_no_key_ever_sees_another_workspaces_data(ws: Workspace, other_ws: Workspace) -> None:
    mine = ws.client().post("/v1/orders", json=ORDER).json()
    theirs = other_ws.client()
    assert_error(theirs.get(f"/v1/orders/{mine['id']}"), 404, "RESOURCE_NOT_FOUND")
    # A pure command (hold) reads the order ahead of its transaction, by id alone and then its
    # workspace checked (orders/repository.py: read_order): another workspace's hold finds nothing,
    # and the order stays as it was.
    assert_error(theirs.post(f"/v1/orders/{mine['id']}/hold"), 404, "RESOURCE_NOT_FOUND")
    assert ws.client().get(f"/v1/orders/{mine['id']}").json()["status"] == mine["status"]
    event_id = ws.client().get("/v1/events").json()["data"][0]["id"]
    assert_error(theirs.get(f"/v1/events/{event_id}"), 404, "RESOURCE_NOT_FOUND")
    assert theirs.get("/v1/events").json()["data"] == []
    assert theirs.get("/v1/events", params={"object_id": mine["id"]}).json()["data"] == []


def test_keys_are_stored_only_as_hashes(ws: Workspace) -> None:
    secret = ws.key("restricted", scopes=["orders:read"])

    async def stored(url: str) -> list:
        db = await open_database(url)
        try:
            return await db.read(lambda tx: tx.fetch("SELECT * FROM api_keys"))
        finally:
            await db.close()

    rows = run(stored(ws.server.database_url))
    text = repr([tuple(row) for row in rows])
    assert secret not in text and secret[8:] not in text
    assert any(row["last4"] == secret[-4:] for row in rows)
