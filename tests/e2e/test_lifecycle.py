"""Every lifecycle command from every status, on both engines, against the transition table."""

from __future__ import annotations

import pytest

from stateset_server.orders.machine import Position, allowed_next
from stateset_server.orders.status import OrderStatus as S
from tests.e2e.lifecycle_support import PATHS, act, new_order, order_in
from tests.support import Workspace

TARGET_OF = {
    "pay": S.PAID,
    "fulfill": S.FULFILLED,
    "ship": S.SHIPPED,
    "deliver": S.DELIVERED,
    "hold": S.HELD,
    "release": S.RELEASED,
    "cancel": S.CANCELLED,
    "return": S.RETURNED,
    "refund": S.REFUNDED,
    "dispute": S.DISPUTED,
    "resolve": S.RESOLVED,
}
EVENTS_OF = {
    "pay": ["order.paid"],
    "fulfill": ["order.fulfilled", "order.processing"],
    "ship": ["order.shipped"],
    "deliver": ["order.delivered"],
    "hold": ["order.held"],
    "release": ["order.released"],
    "cancel": ["order.cancelled"],
    "return": ["order.returned"],
    "refund": ["order.refunded"],
    "dispute": ["order.disputed"],
    "resolve": ["order.resolved"],
}
# The status each path's order stands for when it is HELD/DISPUTED/RELEASED/RESOLVED.
RESUME = {"HELD": S.PAID, "RELEASED": S.PAID, "DISPUTED": S.PAID, "RESOLVED": S.PAID}


def expected_legal(start: str, action: str, paid: bool) -> bool:
    position = Position(S(start), RESUME.get(start))
    target = TARGET_OF[action]
    if action == "refund":
        # Refunding everything is the REFUNDED move; it also needs money to refund.
        return paid and target in allowed_next(position)
    return target in allowed_next(position)


@pytest.mark.parametrize("action", list(TARGET_OF))
@pytest.mark.parametrize("start", list(PATHS))
def test_each_command_from_each_status(ws: Workspace, start: str, action: str) -> None:
    client = ws.client()
    order = order_in(ws, start)
    events_before = client.get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"]
    paid = order["amount_paid"] != "0.00" and order["amount_refunded"] != order["amount_paid"]
    response = act(client, order["id"], action)
    if expected_legal(start, action, paid):
        assert response.status_code == 200, response.text
        body = response.json()
        shown = body.get("order", body)
        assert shown["status"] == TARGET_OF[action].value
        assert shown["timeline"][-1]["status"] == TARGET_OF[action].value
        events = client.get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"]
        new = [e["type"] for e in reversed(events[: len(events) - len(events_before)])]
        expected = EVENTS_OF[action]
        if action == "cancel" and order["amount_paid"] != "0.00":
            expected = ["order.refunded", "order.cancelled"]
        assert new == expected
        assert events[0]["data"]["object"]["status"] == TARGET_OF[action].value
        assert events[0]["previous_attributes"]["status"] == start
    else:
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == "RESOURCE_CONFLICT"
        assert error["details"]["current_status"] == start
        if "requested_status" in error["details"]:
            position = Position(S(start), RESUME.get(start))
            assert error["details"]["requested_status"] == TARGET_OF[action].value
            assert error["details"]["allowed_statuses"] == sorted(s.value for s in allowed_next(position))
        assert client.get(f"/v1/orders/{order['id']}").json() == order  # nothing changed
        assert client.get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"] == events_before


def test_hold_and_release_continue_as_the_held_status(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client)
    held = act(client, order["id"], "hold", {"reason": "fraud_review"}).json()
    assert (held["status"], held["resume_status"], held["status_reason"]) == ("HELD", "CREATED", "fraud_review")
    released = act(client, order["id"], "release").json()
    assert (released["status"], released["resume_status"]) == ("RELEASED", "CREATED")
    paid = act(client, order["id"], "pay").json()
    assert paid["status"] == "PAID"
    assert [s["status"] for s in paid["order"]["timeline"]] == ["CREATED", "HELD", "RELEASED", "PAID"]


def test_dispute_resolved_continues_and_can_be_refunded(ws: Workspace) -> None:
    client = ws.client()
    order = order_in(ws, "SHIPPED")
    assert act(client, order["id"], "dispute", {"reason": "not received"}).json()["resume_status"] == "SHIPPED"
    assert act(client, order["id"], "resolve").json()["status"] == "RESOLVED"
    assert act(client, order["id"], "deliver").json()["status"] == "DELIVERED"
    assert act(client, order["id"], "dispute").json()["status"] == "DISPUTED"
    refunded = act(client, order["id"], "refund").json()
    assert (
        refunded["order"]["status"] == "REFUNDED"
        and refunded["order"]["amount_refunded"] == refunded["order"]["amount_paid"]
    )


def test_ship_records_carrier_tracking_and_times(ws: Workspace) -> None:
    client = ws.client()
    order = order_in(ws, "FULFILLED")
    shipped = act(
        client,
        order["id"],
        "ship",
        {
            "tracking_number": "1234567890",
            "carrier": "FedEx",
            "shipped_at": "2024-06-26T09:00:00Z",
            "estimated_delivery": "2024-06-27T17:00:00+00:00",
        },
    ).json()
    assert shipped["shipping_details"] | {"method": None} == {
        "method": None,
        "carrier": "FedEx",
        "tracking_number": "1234567890",
        "estimated_delivery": "2024-06-27T17:00:00.000Z",
        "shipped_at": "2024-06-26T09:00:00.000Z",
        "delivered_at": None,
    }
    delivered = act(client, order["id"], "deliver").json()
    assert delivered["shipping_details"]["delivered_at"] is not None
    fetched = client.get(f"/v1/orders/{order['id']}").json()
    assert fetched["shipping_details"]["tracking_number"] == "1234567890"
    assert [s["status"] for s in fetched["timeline"]] == ["CREATED", "PAID", "FULFILLED", "SHIPPED", "DELIVERED"]
    bad = act(client, order_in(ws, "FULFILLED")["id"], "ship", {"shipped_at": "2024-06-26 09:00"})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "shipped_at"


def test_fulfill_accepts_the_sdk_shape(ws: Workspace) -> None:
    client = ws.client()
    order = order_in(ws, "PAID")
    body = {"tracking_number": "FEDEX123456", "carrier": "fedex", "items": order["items"]}
    fulfilled = act(client, order["id"], "fulfill", body).json()
    assert fulfilled["status"] == "FULFILLED" and fulfilled["shipping_details"]["carrier"] == "fedex"
    assert act(client, order["id"], "ship").json()["status"] == "SHIPPED"


def test_patch_merges_metadata_and_edits_addresses_until_shipped(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client)
    client.patch(f"/v1/orders/{order['id']}", json={"metadata": {"a": "1", "b": "2"}})
    edited = client.patch(
        f"/v1/orders/{order['id']}",
        json={
            "metadata": {"a": None, "c": "3"},
            "notes": "gift",
            "shipping_address": {"city": "Oslo", "country": "no"},
        },
    )
    assert edited.status_code == 200, edited.text
    body = edited.json()
    assert body["metadata"] == {"b": "2", "c": "3"} and body["notes"] == "gift"
    assert body["shipping_address"] == {"city": "Oslo", "country": "NO"}
    event = client.get("/v1/events", params={"object_id": order["id"]}).json()["data"][0]
    assert event["type"] == "order.updated"
    assert event["previous_attributes"]["metadata"] == {"a": "1", "b": "2"}
    assert event["previous_attributes"]["shipping_address"] is None
    assert "status" not in event["previous_attributes"]
    put = client.put(f"/v1/orders/{order['id']}", json={"billing_address": {"name": "Jo"}})
    assert put.status_code == 200 and put.json()["billing_address"] == {"name": "Jo"}

    shipped = order_in(ws, "SHIPPED")
    refused = client.patch(f"/v1/orders/{shipped['id']}", json={"shipping_address": {"city": "Bergen"}})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "RESOURCE_CONFLICT"
    assert client.patch(f"/v1/orders/{shipped['id']}", json={"notes": "late"}).status_code == 200
    unknown = client.patch(f"/v1/orders/{order['id']}", json={"total": "0.01"})
    assert unknown.status_code == 422 and unknown.json()["error"]["details"]["field"] == "total"


@pytest.mark.parametrize(("word", "status"), [("processing", "FULFILLED"), ("Fulfilled", "FULFILLED")])
def test_status_inputs_accept_lowercase_and_aliases(ws: Workspace, word: str, status: str) -> None:
    client = ws.client()
    order = order_in(ws, "PAID")
    response = client.patch(f"/v1/orders/{order['id']}", json={"status": word})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == status
    shipped = client.patch(f"/v1/orders/{order['id']}", json={"status": "shipped"}).json()
    assert shipped["status"] == "SHIPPED"
    for word_, code in (("paid", 422), ("nonsense", 422), ("pending", 422)):
        assert client.patch(f"/v1/orders/{order['id']}", json={"status": word_}).status_code == code
    illegal = client.patch(f"/v1/orders/{order['id']}", json={"status": "cancelled", "notes": "x"})
    assert illegal.status_code == 409
    assert client.get(f"/v1/orders/{order['id']}").json()["notes"] is None  # the edit rolled back with it


def test_unknown_and_foreign_orders_are_404_for_every_command(ws: Workspace, other_ws: Workspace) -> None:
    theirs = new_order(other_ws.client())
    for action in TARGET_OF:
        for order_id in ("ord_missing", theirs["id"]):
            response = act(ws.client(), order_id, action)
            assert response.status_code == 404, (action, response.text)
            assert response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert ws.client().patch(f"/v1/orders/{theirs['id']}", json={"notes": "x"}).status_code == 404
    assert other_ws.client().get(f"/v1/orders/{theirs['id']}").json()["status"] == "CREATED"


def test_restricted_and_publishable_keys_on_lifecycle_commands(ws: Workspace) -> None:
    order = new_order(ws.client())
    public = ws.client(ws.key("publishable"))
    assert act(public, order["id"], "fulfill").status_code == 403
    assert act(public, order["id"], "pay").status_code == 200  # client-side checkout may pay
    reader = ws.client(ws.key("restricted", scopes=["orders:read"]))
    assert act(reader, order["id"], "fulfill").status_code == 403
    writer = ws.client(ws.key("restricted", scopes=["orders:write"]))
    assert act(writer, order["id"], "fulfill").status_code == 200
