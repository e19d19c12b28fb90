"""Bulk create (atomic, up to 1,000) and bulk pay (each payment on its own)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx

from tests.e2e.lifecycle_support import EVM_WALLET, WALLET, balance, fund, new_order
from tests.support import Workspace

ITEM = {"sku": "WIDGET-001", "quantity": 10, "price": "1.00"}


def event_count(ws: Workspace) -> int:
    return len(ws.client().get("/v1/events", params={"limit": 100}).json()["data"])


def test_bulk_create_in_both_shapes(ws: Workspace) -> None:
    client = ws.client()
    as_array = client.post("/v1/orders/bulk", json=[{"customer_id": "cust_123", "items": [ITEM]}] * 3)
    assert as_array.status_code == 201, as_array.text
    assert as_array.json()["count"] == 3
    assert [o["order_number"] for o in as_array.json()["data"]] == [1001, 1002, 1003]
    as_object = client.post("/v1/orders/bulk", json={"orders": [{"customer_id": "cust_456", "items": [ITEM]}]})
    assert as_object.status_code == 201 and as_object.json()["data"][0]["customer_id"] == "cust_456"
    for order in as_array.json()["data"]:
        assert client.get(f"/v1/orders/{order['id']}").json()["total"] == "20.865"  # USDC keeps 6 decimals: tax 0.875
    assert event_count(ws) == 4


def test_one_bad_order_rolls_back_the_batch_and_every_error_is_reported(ws: Workspace) -> None:
    client = ws.client()
    batch = [
        {"items": [ITEM]},
        {"items": [{"sku": "X", "quantity": 0, "price": "1.00"}]},
        {"items": [ITEM]},
        {"items": [{"sku": "Y", "quantity": 1, "price": "1.001"}], "currency": "USD"},
        {"items": [ITEM], "bogus": True},
    ]
    response = client.post("/v1/orders/bulk", json=batch)
    assert response.status_code == 422
    errors = response.json()["error"]["details"]["errors"]
    assert [(e["index"], e["details"]["field"]) for e in errors] == [
        (1, "items[0].quantity"),
        (3, "items[0].price"),
        (4, "bogus"),
    ]
    assert event_count(ws) == 0
    assert client.post("/v1/orders", json={"items": [ITEM]}).json()["order_number"] == 1001


def test_a_failing_payment_inside_the_batch_rolls_it_all_back(ws: Workspace) -> None:
    client = ws.client()
    batch = [{"items": [ITEM], "payment": {"method": "usdc"}}, {"items": [ITEM], "payment": {"test_mode": "fail"}}]
    response = client.post("/v1/orders/bulk", json=batch)
    assert response.status_code == 402
    assert response.json()["error"]["details"]["errors"][0]["index"] == 1
    assert event_count(ws) == 0


def test_batch_size_limits(ws: Workspace) -> None:
    client = ws.client()
    too_many = client.post("/v1/orders/bulk", json=[{"items": [ITEM]}] * 1001)
    assert too_many.status_code == 422
    error = too_many.json()["error"]
    assert "1000" in error["message"] and error["details"]["received"] == 1001
    assert client.post("/v1/orders/bulk", json=[]).status_code == 422
    assert client.post("/v1/orders/bulk", json={"nope": []}).status_code == 422
    assert client.post("/v1/orders/bulk", content=b"[{").status_code == 400
    full = client.post("/v1/orders/bulk", json=[{"items": [ITEM]}] * 1000)
    assert full.status_code == 201 and full.json()["count"] == 1000
    assert full.json()["data"][-1]["order_number"] == 2000


def test_pay_bulk_reports_each_result(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "30")
    first, second, third = (new_order(client, "10.00") for _ in range(3))  # 20.865 each (USDC: tax 0.875 exactly)
    response = client.post(
        "/v1/orders/pay_bulk",
        json=[
            {"order_id": first["id"], "amount": first["total"], "payment_method": {"wallet_address": WALLET}},
            {"order_id": second["id"], "payment_method": {"wallet_address": WALLET}},  # only 9.135 left: 402
            {"order_id": "ord_missing", "amount": "1.00"},
            {"order_id": first["id"]},  # already paid: 409
            {"order_id": third["id"], "amount": "5.00"},  # partial, from the sandbox wallet
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["succeeded"], body["failed"]) == (2, 3)
    summary = [(r["index"], r["status"], r.get("order_status"), r.get("error", {}).get("code")) for r in body["data"]]
    assert summary == [
        (0, "succeeded", "PAID", None),
        (1, "failed", None, "PAYMENT_FAILED"),
        (2, "failed", None, "RESOURCE_NOT_FOUND"),
        (3, "failed", None, "RESOURCE_CONFLICT"),
        (4, "succeeded", "CREATED", None),
    ]
    assert body["data"][4]["amount"] == "5.00" and body["data"][4]["amount_due"] == "15.865"
    assert balance(client, WALLET) == "9.135"
    shape = client.post("/v1/orders/pay_bulk", json={"payments": [{"order_id": second["id"]}]})
    assert shape.json()["data"][0]["order_status"] == "PAID"


def test_concurrent_bulk_payments_from_the_same_wallets_in_opposite_orders_all_succeed(ws: Workspace) -> None:
    """Each batch locks the wallets in its own order; where two batches deadlock (PostgreSQL), the one
    rolled back is run again: every payment succeeds, none is charged twice, no 500."""
    client = ws.client()
    wallets = [WALLET, EVM_WALLET]
    for wallet in wallets:
        fund(client, wallet, "1000")
    rounds = 12
    orders = [new_order(client, "1.00")["id"] for _ in range(rounds * 4)]

    def batch(index: int) -> httpx.Response:
        mine = orders[index * 2 : index * 2 + 2]
        order = wallets if index % 2 else wallets[::-1]  # opposite wallet orders in neighbouring batches
        body = [
            {"order_id": order_id, "payment_method": {"wallet_address": wallet}}
            for order_id, wallet in zip(mine, order, strict=True)
        ]
        with httpx.Client(base_url=ws.server.base_url, headers=client.headers, timeout=30) as own:
            return own.post("/v1/orders/pay_bulk", json=body)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(batch, range(rounds * 2)))
    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text[:300] for r in responses if r.status_code != 200
    ]
    assert all(r.json()["failed"] == 0 for r in responses)
    paid = [client.get(f"/v1/orders/{order_id}").json() for order_id in orders]
    assert all(o["status"] == "PAID" and o["amount_paid"] == o["total"] for o in paid)
    spent = sum(Decimal("1000") - Decimal(balance(client, wallet)) for wallet in wallets)
    assert spent == sum(Decimal(o["total"]) for o in paid)
