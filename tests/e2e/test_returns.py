"""Returns (RMA): the transition table, and end to end on both engines — create, approve, reject,
cancel, receive (with and without restocking), process (partial and full refunds), over-returns,
tax shares, events, idempotent replays, lists and tenancy."""

from __future__ import annotations

import concurrent.futures
from decimal import Decimal
from typing import Any

import httpx
import pytest

from stateset_server.core.clock import now_us
from stateset_server.returns.model import (
    TRANSITIONS,
    IllegalReturnTransition,
    ReturnStatus,
    allowed_next,
    transition,
)
from stateset_server.storage import open_database
from tests.e2e.lifecycle_support import act, order_in
from tests.support import Workspace, run

R = ReturnStatus
CARD = {"type": "card", "number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


# --- the table (pure) -----------------------------------------------------------------------------


def test_the_return_table_is_exactly_the_documented_one() -> None:
    edges = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert edges == {
        (R.REQUESTED, R.APPROVED), (R.REQUESTED, R.REJECTED), (R.REQUESTED, R.CANCELLED),
        (R.APPROVED, R.RECEIVED), (R.APPROVED, R.CANCELLED),
        (R.RECEIVED, R.PROCESSED),
    }  # fmt: skip
    assert set(TRANSITIONS) == set(R)
    for terminal in (R.REJECTED, R.CANCELLED, R.PROCESSED):
        assert allowed_next(terminal) == frozenset()


@pytest.mark.parametrize("start", list(R))
@pytest.mark.parametrize("target", list(R))
def test_every_pair_is_legal_exactly_when_the_table_says(start: ReturnStatus, target: ReturnStatus) -> None:
    if target in TRANSITIONS[start]:
        assert transition(start, target) == target
    else:
        with pytest.raises(IllegalReturnTransition) as raised:
            transition(start, target)
        assert (raised.value.current, raised.value.requested) == (start, target)
        assert raised.value.allowed == sorted(TRANSITIONS[start])


# --- helpers --------------------------------------------------------------------------------------


def _paths(client: httpx.Client) -> set[str]:
    return set(client.get("/openapi.json").json()["paths"])


def _sql(ws: Workspace, fn: Any) -> Any:
    async def go() -> Any:
        db = await open_database(ws.server.database_url)
        try:
            return await db.write(fn)
        finally:
            await db.close()

    return run(go())


def stock_product(ws: Workspace, sku: str, quantity: int, *, track: bool = True) -> None:
    """A product and stock on hand at "default": over HTTP when those endpoints exist, else in SQL."""
    client = ws.client()
    paths = _paths(client)
    if "/v1/products" in paths:
        created = client.post("/v1/products", json={"sku": sku, "name": sku, "track_inventory": track})
        assert created.status_code == 201, created.text
    else:

        async def product(tx: Any) -> None:
            now = now_us()
            await tx.execute(
                "INSERT INTO products (id, workspace_id, mode, sku, name, track_inventory, created_at, updated_at)"
                " VALUES ($1, $2, 'test', $3, $3, $4, $5, $5)",
                f"prod_{sku}_{ws.id}",
                ws.id,
                sku,
                int(track),
                now,
            )

        _sql(ws, product)
    if quantity == 0:
        return
    if "/v1/inventory/{sku}/adjust" in paths:
        adjusted = client.post(f"/v1/inventory/{sku}/adjust", json={"location": "default", "quantity": quantity})
        assert adjusted.status_code == 200, adjusted.text
    else:

        async def level(tx: Any) -> None:
            now = now_us()
            await tx.execute(
                "INSERT INTO inventory_levels (workspace_id, mode, sku, location, on_hand, reserved, created_at,"
                " updated_at) VALUES ($1, 'test', $2, 'default', $3, 0, $4, $4)",
                ws.id,
                sku,
                quantity,
                now,
            )

        _sql(ws, level)


def on_hand(ws: Workspace, sku: str, location: str = "default") -> int:
    async def read(tx: Any) -> int:
        value = await tx.fetchval(
            "SELECT on_hand FROM inventory_levels WHERE workspace_id = $1 AND mode = 'test' AND sku = $2"
            " AND location = $3",
            ws.id,
            sku,
            location,
        )
        return int(value or 0)

    return int(_sql(ws, read))


def restock_movements(ws: Workspace, return_id: str) -> list[tuple[str, str, int]]:
    async def read(tx: Any) -> list[tuple[str, str, int]]:
        rows = await tx.fetch(
            "SELECT sku, location, on_hand_delta FROM inventory_movements WHERE workspace_id = $1"
            " AND kind = 'restock' AND reference = $2 ORDER BY id",
            ws.id,
            return_id,
        )
        return [(r["sku"], r["location"], int(r["on_hand_delta"])) for r in rows]

    return list(_sql(ws, read))


def delivered_order(
    client: httpx.Client, items: list[dict[str, Any]], *, until: str = "deliver", currency: str = "USD"
) -> dict[str, Any]:
    """A card-paid order taken through the lifecycle up to `until` (pay, fulfill, ship, deliver)."""
    created = client.post("/v1/orders", json={"currency": currency, "items": items})
    assert created.status_code == 201, created.text
    order = created.json()
    steps = ["pay", "fulfill", "ship", "deliver"]
    for step in steps[: steps.index(until) + 1]:
        body = {"payment_method": CARD} if step == "pay" else None
        response = act(client, order["id"], step, body)
        assert response.status_code == 200, (step, response.text)
    return client.get(f"/v1/orders/{order['id']}").json()


def new_return(client: httpx.Client, order_id: str, items: list[dict[str, Any]] | None, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"order_id": order_id, "reason": "damaged in transit", **extra}
    if items is not None:
        body["items"] = items
    return client.post("/v1/returns", json=body)


def created(client: httpx.Client, order_id: str, items: list[dict[str, Any]] | None, **extra: Any) -> dict[str, Any]:
    response = new_return(client, order_id, items, **extra)
    assert response.status_code == 201, response.text
    return response.json()


def step(client: httpx.Client, return_id: str, action: str, body: dict[str, Any] | None = None, **headers: str) -> dict:
    response = client.post(f"/v1/returns/{return_id}/{action}", json=body, headers=headers)
    assert response.status_code == 200, (action, response.text)
    return response.json()


def event_types(client: httpx.Client, object_id: str) -> list[str]:
    events = client.get("/v1/events", params={"object_id": object_id, "limit": 100}).json()["data"]
    return [event["type"] for event in reversed(events)]


def order_of(client: httpx.Client, order_id: str) -> dict[str, Any]:
    return client.get(f"/v1/orders/{order_id}").json()


# --- end to end -----------------------------------------------------------------------------------


def test_full_return_restocks_refunds_everything_and_the_order_is_refunded(ws: Workspace) -> None:
    client = ws.client()
    stock_product(ws, "LAPTOP-RT", 5)
    # 1,520.00 of goods: free shipping (from 1,500), tax 8.75 % = 133.00, total 1,653.00.
    order = delivered_order(
        client,
        [{"sku": "LAPTOP-RT", "quantity": 1, "price": "1500.00"}, {"sku": "CABLE", "quantity": 2, "price": "10.00"}],
    )
    assert (order["subtotal"], order["tax"], order["shipping"], order["total"]) == (
        "1520.00",
        "133.00",
        "0.00",
        "1653.00",
    )
    laptop, cable = order["items"]

    ret = created(
        client,
        order["id"],
        [{"sku": "LAPTOP-RT", "quantity": 1}, {"order_item_id": cable["id"], "quantity": 2}],
        metadata={"ticket": "T-1"},
    )
    assert ret["id"].startswith("ret_") and ret["object"] == "return"
    assert (ret["status"], ret["order_id"], ret["reason"], ret["currency"]) == (
        "requested",
        order["id"],
        "damaged in transit",
        "USD",
    )
    assert [(i["order_item_id"], i["sku"], i["quantity"], i["unit_price"], i["total"]) for i in ret["items"]] == [
        (laptop["id"], "LAPTOP-RT", 1, "1500.00", "1500.00"),
        (cable["id"], "CABLE", 2, "10.00", "20.00"),
    ]
    assert (ret["subtotal"], ret["tax"], ret["refund_amount"]) == ("1520.00", "133.00", "1653.00")
    assert ret["metadata"] == {"ticket": "T-1"} and ret["refund_id"] is None and ret["restocked"] == []
    assert [t["status"] for t in ret["timeline"]] == ["requested"]

    approved = step(client, ret["id"], "approve", {"notes": "label sent"})
    assert (approved["status"], approved["status_reason"]) == ("approved", "label sent")
    assert approved["approved_at"] is not None and approved["received_at"] is None

    before = on_hand(ws, "LAPTOP-RT")
    received = step(client, ret["id"], "receive", {"received_by": "dock 3"})
    assert (received["status"], received["received_by"], received["restock_location"]) == (
        "received",
        "dock 3",
        "default",
    )
    # Only the SKU whose product tracks inventory goes back on hand; CABLE has no product.
    assert received["restocked"] == [{"sku": "LAPTOP-RT", "location": "default", "quantity": 1}]
    assert on_hand(ws, "LAPTOP-RT") == before + 1
    assert restock_movements(ws, ret["id"]) == [("LAPTOP-RT", "default", 1)]
    assert order_of(client, order["id"])["status"] == "RETURNED"

    key = {"Idempotency-Key": f"process-{ret['id']}"}
    first = client.post(f"/v1/returns/{ret['id']}/process", json={"reason": "inspected"}, headers=key)
    assert first.status_code == 200, first.text
    processed = first.json()
    assert (processed["status"], processed["refund_amount"], processed["status_reason"]) == (
        "processed",
        "1653.00",
        "inspected",
    )
    assert processed["refund_id"].startswith("re") and processed["refunded_at"] == processed["processed_at"]
    replay = client.post(f"/v1/returns/{ret['id']}/process", json={"reason": "inspected"}, headers=key)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    refunded = order_of(client, order["id"])
    assert (refunded["status"], refunded["amount_refunded"]) == ("REFUNDED", "1653.00")
    assert refunded["payments"][0]["amount_refunded"] == "1653.00"  # once: the replay refunded nothing

    again = client.post(f"/v1/returns/{ret['id']}/process")
    assert again.status_code == 409
    assert again.json()["error"]["details"] == {
        "current_status": "processed",
        "requested_status": "processed",
        "allowed_statuses": [],
    }

    assert event_types(client, ret["id"]) == [
        "return.created",
        "return.approved",
        "return.received",
        "return.processed",
    ]
    assert "order.returned" in event_types(client, order["id"])
    assert event_types(client, order["id"])[-1] == "order.refunded"
    shown = client.get(f"/v1/returns/{ret['id']}").json()
    assert shown == processed | {"timeline": shown["timeline"]}
    assert [(t["status"], t["type"]) for t in shown["timeline"]] == [
        ("requested", "return.created"),
        ("approved", "return.approved"),
        ("received", "return.received"),
        ("processed", "return.processed"),
    ]
    event = client.get("/v1/events", params={"object_id": ret["id"], "type": "return.processed"}).json()["data"][0]
    assert event["data"]["object"]["status"] == "processed"
    assert event["previous_attributes"]["status"] == "received" and event["previous_attributes"]["refund_id"] is None


def test_partial_returns_share_the_tax_exactly_and_over_returns_are_422(ws: Workspace) -> None:
    client = ws.client()
    # 3 × 10.00: tax 8.75 % of 30.00 = 2.625 → 2.63, shipping 9.99, total 42.62.
    order = delivered_order(client, [{"sku": "MUG", "quantity": 3, "price": "10.00"}])
    assert (order["tax"], order["total"]) == ("2.63", "42.62")
    line = order["items"][0]["id"]

    first = created(client, order["id"], [{"order_item_id": line, "quantity": 1}])
    # A third of the tax: 0.876… → 0.88.
    assert (first["subtotal"], first["tax"], first["refund_amount"]) == ("10.00", "0.88", "10.88")
    second = created(client, order["id"], [{"sku": "MUG", "quantity": 1}])
    assert second["refund_amount"] == "10.88"

    over = new_return(client, order["id"], [{"sku": "MUG", "quantity": 2}])
    assert over.status_code == 422
    assert over.json()["error"]["details"] == {
        "field": "items[0].quantity",
        "issue": "more than the order can still return (ordered, less what its other returns hold)",
        "expected": "at most 1",
        "received": 2,
    }
    # The same line named twice in one request adds up.
    twice = new_return(client, order["id"], [{"sku": "MUG", "quantity": 1}, {"order_item_id": line, "quantity": 1}])
    assert twice.status_code == 422 and twice.json()["error"]["details"]["field"] == "items[1].quantity"
    assert twice.json()["error"]["details"]["expected"] == "at most 0"

    # The first return goes all the way: a partial refund, the order RETURNED.
    step(client, first["id"], "approve")
    step(client, first["id"], "receive")
    processed = step(client, first["id"], "process")
    assert processed["status"] == "processed"
    after_first = order_of(client, order["id"])
    assert (after_first["status"], after_first["amount_refunded"]) == ("RETURNED", "10.88")

    # The order is RETURNED with one unit left: a second partial return is still possible, and the
    # one that leaves nothing to return gets exactly the tax left: 2.63 − 0.88 − 0.88 = 0.87.
    last = created(client, order["id"], None)
    assert [(i["sku"], i["quantity"]) for i in last["items"]] == [("MUG", 1)]
    assert (last["tax"], last["refund_amount"]) == ("0.87", "10.87")
    nothing_left = new_return(client, order["id"], None)
    assert nothing_left.status_code == 409
    assert nothing_left.json()["error"]["details"]["current_status"] == "RETURNED"

    for ret in (second, last):
        step(client, ret["id"], "approve")
        step(client, ret["id"], "receive")  # the order is already RETURNED: it stays
        step(client, ret["id"], "process")
    final = order_of(client, order["id"])
    # Every item and exactly its tax came back (30.00 + 2.63); shipping stays refundable by hand.
    assert (final["status"], final["amount_refunded"]) == ("RETURNED", "32.63")
    assert event_types(client, order["id"]).count("order.returned") == 1
    assert event_types(client, order["id"]).count("order.refunded") == 3
    rest = act(client, order["id"], "refund")
    assert rest.status_code == 200 and rest.json()["amount"] == "9.99"
    assert order_of(client, order["id"])["status"] == "REFUNDED"


def test_a_usdc_order_returned_from_shipped_is_refunded_to_its_wallet(ws: Workspace) -> None:
    client = ws.client()
    order = order_in(ws, "SHIPPED")  # USDC: 10.00 + tax 0.875 (six decimals) + shipping 9.99
    assert (order["tax"], order["total"]) == ("0.875", "20.865")
    ret = client.post(f"/v1/orders/{order['id']}/returns", json={"reason": "changed mind"})
    assert ret.status_code == 201, ret.text
    ret_id = ret.json()["id"]
    assert ret.json()["refund_amount"] == "10.875"
    step(client, ret_id, "approve")
    step(client, ret_id, "receive", {"restock": False})
    assert order_of(client, order["id"])["status"] == "RETURNED"
    processed = step(client, ret_id, "process")
    refunded = order_of(client, order["id"])
    assert (refunded["status"], refunded["amount_refunded"]) == ("RETURNED", "10.875")
    assert processed["refund_id"] is not None and processed["restocked"] == []


def test_rejected_and_cancelled_returns_give_their_quantities_back(ws: Workspace) -> None:
    client = ws.client()
    order = delivered_order(
        client, [{"sku": "HAT", "quantity": 2, "price": "5.00"}, {"sku": "SCARF", "quantity": 1, "price": "7.00"}]
    )
    whole = created(client, order["id"], None)
    assert [(i["sku"], i["quantity"]) for i in whole["items"]] == [("HAT", 2), ("SCARF", 1)]
    assert new_return(client, order["id"], [{"sku": "HAT", "quantity": 1}]).status_code == 409  # nothing left

    rejected = step(client, whole["id"], "reject", {"reason": "outside the return window"})
    assert (rejected["status"], rejected["status_reason"]) == ("rejected", "outside the return window")
    assert rejected["rejected_at"] is not None

    again = created(client, order["id"], [{"sku": "HAT", "quantity": 2}])
    cancelled = step(client, again["id"], "cancel", {"reason": "customer kept it"})
    assert (cancelled["status"], cancelled["status_reason"]) == ("cancelled", "customer kept it")

    approved = created(client, order["id"], [{"sku": "HAT", "quantity": 2}, {"sku": "SCARF", "quantity": 1}])
    step(client, approved["id"], "approve")
    assert step(client, approved["id"], "cancel")["status"] == "cancelled"  # approved may still be cancelled

    # Nothing was ever received: the order is untouched.
    untouched = order_of(client, order["id"])
    assert (untouched["status"], untouched["amount_refunded"]) == ("DELIVERED", "0.00")
    assert event_types(client, whole["id"]) == ["return.created", "return.rejected"]
    assert event_types(client, approved["id"]) == ["return.created", "return.approved", "return.cancelled"]


def test_illegal_return_transitions_are_409_with_the_allowed_ones(ws: Workspace) -> None:
    client = ws.client()
    order = delivered_order(client, [{"sku": "LAMP", "quantity": 4, "price": "20.00"}])
    ret = created(client, order["id"], [{"sku": "LAMP", "quantity": 1}])
    for action, requested in (("receive", "received"), ("process", "processed")):
        response = client.post(f"/v1/returns/{ret['id']}/{action}")
        assert response.status_code == 409, action
        error = response.json()["error"]
        assert error["code"] == "RESOURCE_CONFLICT"
        assert error["details"] == {
            "current_status": "requested",
            "requested_status": requested,
            "allowed_statuses": ["approved", "cancelled", "rejected"],
        }
    step(client, ret["id"], "approve")
    for action, requested in (("approve", "approved"), ("reject", "rejected"), ("process", "processed")):
        response = client.post(f"/v1/returns/{ret['id']}/{action}")
        assert response.status_code == 409, action
        assert response.json()["error"]["details"] == {
            "current_status": "approved",
            "requested_status": requested,
            "allowed_statuses": ["cancelled", "received"],
        }
    step(client, ret["id"], "cancel")
    response = client.post(f"/v1/returns/{ret['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["details"]["allowed_statuses"] == []
    assert event_types(client, ret["id"]) == ["return.created", "return.approved", "return.cancelled"]


@pytest.mark.parametrize("status", ["CREATED", "PAID", "FULFILLED", "CANCELLED", "REFUNDED"])
def test_only_shipped_or_delivered_orders_take_returns(ws: Workspace, status: str) -> None:
    client = ws.client()
    order = order_in(ws, status)
    response = new_return(client, order["id"], [{"sku": "A", "quantity": 1}])
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "RESOURCE_CONFLICT"
    assert error["details"] == {
        "order_id": order["id"],
        "current_status": status,
        "allowed_statuses": ["SHIPPED", "DELIVERED", "RETURNED"],
    }
    assert client.get("/v1/returns", params={"order_id": order["id"]}).json()["data"] == []


def test_receive_restocks_where_asked_or_not_at_all(ws: Workspace) -> None:
    client = ws.client()
    stock_product(ws, "BOOT-RT", 10)
    stock_product(ws, "SOCK-RT", 10, track=False)
    order = delivered_order(
        client,
        [{"sku": "BOOT-RT", "quantity": 3, "price": "50.00"}, {"sku": "SOCK-RT", "quantity": 1, "price": "3.00"}],
    )
    default_before = on_hand(ws, "BOOT-RT")

    kept = created(client, order["id"], [{"sku": "BOOT-RT", "quantity": 1}])
    step(client, kept["id"], "approve")
    not_restocked = step(client, kept["id"], "receive", {"restock": False})
    assert (not_restocked["restock_location"], not_restocked["restocked"]) == (None, [])
    assert on_hand(ws, "BOOT-RT") == default_before and restock_movements(ws, kept["id"]) == []

    bay = created(client, order["id"], [{"sku": "BOOT-RT", "quantity": 2}, {"sku": "SOCK-RT", "quantity": 1}])
    step(client, bay["id"], "approve")
    restocked = step(client, bay["id"], "receive", {"location": "returns-bay"})
    # SOCK-RT's product does not track inventory: it is not stocked.
    assert restocked["restocked"] == [{"sku": "BOOT-RT", "location": "returns-bay", "quantity": 2}]
    assert restocked["restock_location"] == "returns-bay"
    assert on_hand(ws, "BOOT-RT", "returns-bay") == 2 and on_hand(ws, "BOOT-RT") == default_before
    assert on_hand(ws, "SOCK-RT", "returns-bay") == 0
    assert restock_movements(ws, bay["id"]) == [("BOOT-RT", "returns-bay", 2)]
    inventory = client.get("/v1/inventory/BOOT-RT")
    if inventory.status_code == 200:
        assert {lvl["location"]: lvl["on_hand"] for lvl in inventory.json()["locations"]}["returns-bay"] == 2


def test_create_validation_errors_name_the_field(ws: Workspace) -> None:
    client = ws.client()
    order = delivered_order(client, [{"sku": "PEN", "quantity": 2, "price": "1.00"}])
    oid, line = order["id"], order["items"][0]["id"]

    def body(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"order_id": oid, "reason": "x", "items": list(items), **extra}

    cases = [
        ({"order_id": oid, "items": [{"sku": "PEN", "quantity": 1}]}, "MISSING_REQUIRED_FIELD", "reason"),
        ({"reason": "x", "items": [{"sku": "PEN", "quantity": 1}]}, "MISSING_REQUIRED_FIELD", "order_id"),
        (body({"quantity": 1}), "MISSING_REQUIRED_FIELD", "items[0].order_item_id"),
        (body({"sku": "INK", "quantity": 1}), "VALIDATION_ERROR", "items[0].sku"),
        (body({"order_item_id": "li_x", "quantity": 1}), "VALIDATION_ERROR", "items[0].order_item_id"),
        (body({"order_item_id": line, "sku": "INK", "quantity": 1}), "VALIDATION_ERROR", "items[0].sku"),
        (body({"sku": "PEN", "quantity": 0}), "INVALID_FIELD_FORMAT", "items[0].quantity"),
        (body(), "INVALID_FIELD_FORMAT", "items"),
        (body({"sku": "PEN", "quantity": 1}, refund=True), "VALIDATION_ERROR", "refund"),
    ]
    for sent, code, field in cases:
        response = client.post("/v1/returns", json=sent)
        assert response.status_code == 422, (sent, response.text)
        error = response.json()["error"]
        assert (error["code"], error["details"]["field"]) == (code, field), sent
    mismatch = client.post(f"/v1/orders/{order['id']}/returns", json={"order_id": "ord_other", "reason": "x"})
    assert mismatch.status_code == 422 and mismatch.json()["error"]["details"]["field"] == "order_id"
    bad_location = client.post("/v1/returns/ret_x/receive", json={"location": ""})
    assert bad_location.status_code == 422
    assert client.get("/v1/returns", params={"order_id": order["id"]}).json()["data"] == []


def test_returns_are_scoped_to_their_workspace(ws: Workspace, other_ws: Workspace) -> None:
    client, stranger = ws.client(), other_ws.client()
    order = delivered_order(client, [{"sku": "CUP", "quantity": 1, "price": "4.00"}])
    ret = created(client, order["id"], None)
    assert new_return(stranger, order["id"], None).status_code == 404
    assert stranger.post(f"/v1/orders/{order['id']}/returns", json={"reason": "x"}).status_code == 404
    for method, path in (
        ("GET", f"/v1/returns/{ret['id']}"),
        ("POST", f"/v1/returns/{ret['id']}/approve"),
        ("POST", f"/v1/returns/{ret['id']}/cancel"),
    ):
        response = stranger.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert stranger.get("/v1/returns").json()["data"] == []
    assert client.get(f"/v1/returns/{ret['id']}").json()["status"] == "requested"
    missing = client.post("/v1/returns", json={"order_id": "ord_missing", "reason": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["details"] == {
        "resource": "order",
        "id": "ord_missing",
    }


def test_restricted_keys_need_the_returns_scopes(ws: Workspace) -> None:
    order = delivered_order(ws.client(), [{"sku": "BAG", "quantity": 1, "price": "9.00"}])
    reader = ws.client(ws.key("restricted", scopes=["returns:read"]))
    writer = ws.client(ws.key("restricted", scopes=["returns:write"]))
    denied = new_return(reader, order["id"], None)
    assert denied.status_code == 403 and denied.json()["error"]["details"]["required_scope"] == "returns:write"
    ret = created(writer, order["id"], None)
    assert reader.get(f"/v1/returns/{ret['id']}").status_code == 200
    assert reader.post(f"/v1/returns/{ret['id']}/approve").status_code == 403
    assert step(writer, ret["id"], "approve")["status"] == "approved"


def test_the_list_filters_sorts_and_pages(ws: Workspace) -> None:
    client = ws.client()
    first = delivered_order(client, [{"sku": "KEY", "quantity": 3, "price": "2.00"}])
    second = delivered_order(client, [{"sku": "LOCK", "quantity": 1, "price": "8.00"}])
    a = created(client, first["id"], [{"sku": "KEY", "quantity": 1}])
    b = created(client, first["id"], [{"sku": "KEY", "quantity": 1}])
    c = created(client, second["id"], None)
    step(client, b["id"], "approve")

    listed = client.get("/v1/returns").json()
    assert [r["id"] for r in listed["data"]] == [c["id"], b["id"], a["id"]]  # newest first
    assert listed["pagination"]["total_count"] == 3 and "timeline" not in listed["data"][0]
    assert listed["data"][1]["status"] == "approved" and listed["data"][1]["approved_at"] is not None
    by_order = client.get("/v1/returns", params={"order_id": first["id"], "sort": "created_at", "order": "asc"})
    assert [r["id"] for r in by_order.json()["data"]] == [a["id"], b["id"]]
    assert [r["id"] for r in client.get("/v1/returns", params={"status": "APPROVED"}).json()["data"]] == [b["id"]]
    requested = client.get("/v1/returns", params={"status_in": "requested,rejected"}).json()["data"]
    assert [r["id"] for r in requested] == [c["id"], a["id"]]
    page = client.get("/v1/returns", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["pagination"]["has_more"] is True
    rest = client.get("/v1/returns", params={"limit": 2, "cursor": page["pagination"]["next_cursor"]}).json()
    assert [r["id"] for r in rest["data"]] == [a["id"]]
    assert client.get("/v1/returns", params={"refund_amount_gte": "8.00"}).json()["data"][0]["id"] == c["id"]
    bad = client.get("/v1/returns", params={"status": "lost"})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "status"
    unknown = client.get("/v1/returns", params={"colour": "red"})
    assert unknown.status_code == 400


def test_concurrent_returns_never_over_return_a_line(ws: Workspace) -> None:
    client = ws.client()
    order = delivered_order(client, [{"sku": "RACE", "quantity": 3, "price": "1.00"}])

    def attempt(_: int) -> int:
        with httpx.Client(base_url=ws.server.base_url, headers={"Authorization": f"Bearer {ws.secret}"}) as own:
            return new_return(own, order["id"], [{"sku": "RACE", "quantity": 1}]).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    # Three units: three returns; the others find nothing left (409) or too little (422).
    assert statuses.count(201) == 3 and all(status in (201, 409, 422) for status in statuses)
    held = client.get("/v1/returns", params={"order_id": order["id"], "limit": 100}).json()["data"]
    assert sum(item["quantity"] for ret in held for item in ret["items"]) == 3
    assert sum(Decimal(ret["refund_amount"]) for ret in held) == Decimal(order["subtotal"]) + Decimal(order["tax"])
