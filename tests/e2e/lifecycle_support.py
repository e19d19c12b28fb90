"""Bringing orders to any status through the API, for lifecycle tests."""

from __future__ import annotations

import httpx

from stateset_server.storage import with_database
from tests.support import Workspace, run

WALLET = "stateset1vd6hxar0d4jhyh6lta047h6lta047h6ld4snts"
EVM_WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

# How to reach each status from a new order: the actions, in order.
PATHS: dict[str, list[str]] = {
    "CREATED": [],
    "PAID": ["pay"],
    "FULFILLED": ["pay", "fulfill"],
    "SHIPPED": ["pay", "fulfill", "ship"],
    "DELIVERED": ["pay", "fulfill", "ship", "deliver"],
    "HELD": ["pay", "hold"],
    "RELEASED": ["pay", "hold", "release"],
    "CANCELLED": ["cancel"],
    "RETURNED": ["pay", "fulfill", "ship", "deliver", "return"],
    "REFUNDED": ["pay", "refund"],
    "DISPUTED": ["pay", "dispute"],
    "RESOLVED": ["pay", "dispute", "resolve"],
}


def new_order(client: httpx.Client, total: str = "10.00", currency: str = "USDC") -> dict:
    response = client.post(
        "/v1/orders", json={"currency": currency, "items": [{"sku": "A", "quantity": 1, "price": total}]}
    )
    assert response.status_code == 201, response.text
    return response.json()


def act(client: httpx.Client, order_id: str, action: str, body: dict | None = None) -> httpx.Response:
    return (
        client.post(f"/v1/orders/{order_id}/{action}", json=body)
        if body is not None
        else client.post(f"/v1/orders/{order_id}/{action}")
    )


def order_in(ws: Workspace, status: str, total: str = "10.00") -> dict:
    client = ws.client()
    order = new_order(client, total)
    for action in PATHS[status]:
        response = act(client, order["id"], action)
        assert response.status_code == 200, (action, response.text)
    fetched = client.get(f"/v1/orders/{order['id']}").json()
    assert fetched["status"] == status
    return fetched


def fund(client: httpx.Client, wallet: str, amount: str) -> None:
    response = client.post("/v1/sandbox/faucet", json={"wallet_address": wallet, "amount": amount})
    assert response.status_code == 201, response.text


def balance(client: httpx.Client, wallet: str) -> str:
    return client.get(f"/v1/wallets/{wallet}").json()["balance"]


def execute(ws: Workspace, sql: str, *args: object) -> None:
    """One statement written to the workspace's database, as the server's own writes are (to put a
    row in a state the API cannot, e.g. as an older version of the server left it)."""

    async def write(db) -> None:
        await db.write(lambda tx: tx.execute(sql, *args))

    run(with_database(ws.server.database_url, write))
