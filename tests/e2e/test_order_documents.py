"""Stored order documents: a GET reads the document every change rewrote; it must be exactly the order
rendered from its rows, whatever happened to the order."""

from __future__ import annotations

import pytest

from stateset_server.storage import with_database
from tests.e2e.lifecycle_support import PATHS, WALLET, act, fund, new_order, order_in
from tests.support import Workspace, run


def _forget_document(ws: Workspace, order_id: str) -> None:
    """Make the order look like one written before documents existed: GET then renders it from rows."""

    async def forget(db) -> None:
        await db.write(lambda tx: tx.execute("UPDATE orders SET document = NULL WHERE id = $1", order_id))

    run(with_database(ws.server.database_url, forget))


def _both_ways(ws: Workspace, order_id: str) -> tuple[dict, dict]:
    client = ws.client()
    stored = client.get(f"/v1/orders/{order_id}")
    assert stored.status_code == 200, stored.text
    _forget_document(ws, order_id)
    rendered = client.get(f"/v1/orders/{order_id}")
    assert rendered.status_code == 200, rendered.text
    return stored.json(), rendered.json()


@pytest.mark.parametrize("status", sorted(PATHS))
def test_the_stored_document_is_the_order_rendered_from_its_rows(ws: Workspace, status: str) -> None:
    order = order_in(ws, status)
    stored, rendered = _both_ways(ws, order["id"])
    assert stored == rendered
    assert stored["status"] == status and [s["status"] for s in stored["timeline"]][-1] == status


def test_documents_follow_partial_payments_refunds_and_edits(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client, "30.00")
    fund(client, WALLET, "100")
    paid = act(
        client, order["id"], "pay", {"payment_method": {"type": "usdc", "wallet_address": WALLET}, "amount": "10"}
    )
    assert paid.status_code == 200, paid.text
    edited = client.patch(f"/v1/orders/{order['id']}", json={"metadata": {"note": ',"payment_url":"x"}'}})
    assert edited.status_code == 200, edited.text
    stored, rendered = _both_ways(ws, order["id"])
    assert stored == rendered
    assert stored["amount_paid"] == "10.00" and stored["metadata"] == {"note": ',"payment_url":"x"}'}


def test_the_payment_url_follows_the_address_the_request_came_to(ws: Workspace) -> None:
    order = new_order(ws.client())
    there = ws.client(Host="shop.example:8443").get(f"/v1/orders/{order['id']}").json()
    assert there["payment_url"] == f"http://shop.example:8443/pay/{order['id']}"
    here = ws.client().get(f"/v1/orders/{order['id']}").json()
    assert here["payment_url"] == f"{ws.server.base_url}/pay/{order['id']}"
    assert {k: v for k, v in there.items() if k != "payment_url"} == {
        k: v for k, v in here.items() if k != "payment_url"
    }


def test_list_items_are_the_orders_without_their_timeline_with_or_without_documents(ws: Workspace) -> None:
    client = ws.client()
    ids = [order_in(ws, status)["id"] for status in ("CREATED", "PAID", "SHIPPED")]
    _forget_document(ws, ids[1])  # one order from before documents, rendered from its rows
    listed = client.get("/v1/orders", params={"limit": 10}).json()
    by_id = {item["id"]: item for item in listed["data"]}
    assert set(by_id) == set(ids)
    for order_id in ids:
        fetched = client.get(f"/v1/orders/{order_id}").json()
        assert by_id[order_id] == {k: v for k, v in fetched.items() if k != "timeline"}
    summaries = {s["id"]: s for s in listed["orders"]}
    assert summaries[ids[2]] == {
        k: by_id[ids[2]][k] for k in ("id", "customer_id", "status", "total", "currency", "created_at")
    }
