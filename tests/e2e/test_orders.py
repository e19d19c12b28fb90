"""Creating and reading orders in both spec shapes, with exact money and their events."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from tests.support import ORDER, Workspace


def create(ws: Workspace, body: dict) -> dict:
    response = ws.client().post("/v1/orders", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_the_orders_api_shape_round_trips(ws: Workspace) -> None:
    order = create(ws, ORDER)
    assert order["id"].startswith("ord_") and order["object"] == "order"
    assert order["status"] == "CREATED"
    assert order["customer_id"] == "cust_123"
    assert order["currency"] == "USDC"
    assert order["items"][0] | {"id": None} == {
        "id": None,
        "sku": "LAPTOP-001",
        "description": "MacBook Pro 16-inch",
        "quantity": 1,
        "unit_price": "999.99",
        "price": "999.99",
        "total_price": "999.99",
        "status": "CREATED",
        "metadata": {},
    }
    assert order["line_items"] == order["items"]
    # 8.75 % of 999.99 is 87.499125 exactly: USDC keeps 6 decimals, so nothing is rounded.
    assert (order["subtotal"], order["tax"], order["shipping"]) == ("999.99", "87.499125", "9.99")
    assert order["total"] == order["total_amount"] == "1097.479125"
    assert order["shipping_address"] == ORDER["shipping_address"]
    assert order["metadata"] == ORDER["metadata"]
    assert order["payment_url"].endswith(f"/pay/{order['id']}")
    assert order["created_at"].endswith("Z")
    assert [step["status"] for step in order["timeline"]] == ["CREATED"]

    fetched = ws.client().get(f"/v1/orders/{order['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == order


def test_the_api_reference_shape_with_json_number_prices(ws: Workspace) -> None:
    # The SDK example sends `price: 29.99` as a JSON number; it must be read exactly, not as a float.
    raw = (
        b'{"customer_email": "customer@example.com", "currency": "USD",'
        b' "items": [{"sku": "WIDGET-001", "quantity": 2, "price": 29.99}]}'
    )
    response = ws.client().post("/v1/orders", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["customer_email"] == "customer@example.com"
    # An email alone finds or creates the customer.
    assert order["customer"] == {"id": order["customer_id"], "email": "customer@example.com"}
    assert order["customer_id"].startswith("cus_")
    assert ws.client().get(f"/v1/customers/{order['customer_id']}").json()["email"] == "customer@example.com"
    assert order["items"][0]["unit_price"] == "29.99"
    assert order["items"][0]["total_price"] == "59.98"
    assert order["tax"] == "5.25"  # 59.98 × 0.0875 = 5.248250 → 5.25 (half-up to cents)
    assert order["total"] == "75.22"


def test_customer_object_and_create_and_pay_shipping_shape(ws: Workspace) -> None:
    order = create(
        ws,
        {
            "items": [{"sku": "LAPTOP-001", "quantity": 1, "price": "999.99"}],
            "customer": {"id": "cust_123", "email": "customer@example.com"},
            "shipping": {"address": "123 Main St, San Francisco, CA 94105", "method": "standard"},
        },
    )
    assert (order["customer_id"], order["customer_email"]) == ("cust_123", "customer@example.com")
    assert order["shipping_address"] == {"formatted": "123 Main St, San Francisco, CA 94105"}
    assert order["shipping_method"] == "standard"


def test_conflicting_customer_ids_are_refused(ws: Workspace) -> None:
    body = {"customer_id": "cust_1", "customer": {"id": "cust_2"}, "items": [{"sku": "A", "quantity": 1, "price": "1"}]}
    response = ws.client().post("/v1/orders", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "customer.id"


@pytest.mark.parametrize(
    ("currency", "items", "subtotal", "tax", "shipping", "total"),
    [
        # 3 × 19.99 is 59.97 exactly (a float gives 59.970000000000006).
        ("USD", [("A", 3, "19.99")], "59.97", "5.25", "9.99", "75.21"),
        # 0.1 + 0.2 is 0.30 exactly (a float gives 0.30000000000000004).
        ("USD", [("A", 1, "0.1"), ("B", 1, "0.2")], "0.30", "0.03", "9.99", "10.32"),
        # Half-up rounding: 0.20 × 8.75 % = 0.0175 → 0.02.
        ("USD", [("A", 1, "0.20")], "0.20", "0.02", "9.99", "10.21"),
        # USDC keeps micro-units: 0.000001 × 3, and 8.75 % of it rounds half-up to 0.000000.
        ("USDC", [("A", 3, "0.000001")], "0.000003", "0.00", "9.99", "9.990003"),
        # Zero-decimal currency: 8.75 % of 1,000 JPY is 87.5 → 88 (half-up); shipping 9.99 → 10.
        ("JPY", [("A", 1, "1000")], "1000", "88", "10", "1098"),
        # The free-shipping threshold is in the order's currency: 1,999 JPY ships free.
        ("JPY", [("A", 1, "1999")], "1999", "175", "0", "2174"),
        # Three-decimal currency.
        ("KWD", [("A", 2, "1.005")], "2.010", "0.176", "9.990", "12.176"),
        # Free shipping from 1,500.00 upwards.
        ("USD", [("A", 2, "750.00")], "1500.00", "131.25", "0.00", "1631.25"),
        # A free order ships nothing and costs nothing.
        ("EUR", [("GIFT", 1, "0")], "0.00", "0.00", "0.00", "0.00"),
    ],
)
def test_totals_are_exact(
    ws: Workspace, currency: str, items: list, subtotal: str, tax: str, shipping: str, total: str
) -> None:
    body = {"currency": currency, "items": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in items]}
    order = create(ws, body)
    assert (order["subtotal"], order["tax"], order["shipping"], order["total"]) == (subtotal, tax, shipping, total)
    assert Decimal(order["total"]) == Decimal(order["subtotal"]) + Decimal(order["tax"]) + Decimal(order["shipping"])
    assert order["currency"] == currency


def test_money_is_never_a_json_number(ws: Workspace) -> None:
    order = create(ws, {"items": [{"sku": "A", "quantity": 7, "price": 12.34}]})

    def numbers(node: object) -> list:
        if isinstance(node, dict):
            return [x for v in node.values() for x in numbers(v)]
        if isinstance(node, list):
            return [x for v in node for x in numbers(v)]
        return [node] if isinstance(node, float) else []

    assert numbers(order) == []


def test_currency_is_case_insensitive_and_defaults_to_usdc(ws: Workspace) -> None:
    assert create(ws, {"currency": "eur", "items": [{"sku": "A", "quantity": 1, "price": "1"}]})["currency"] == "EUR"
    assert create(ws, {"items": [{"sku": "A", "quantity": 1, "price": "1"}]})["currency"] == "USDC"


def test_order_numbers_count_up_per_workspace(ws: Workspace, other_ws: Workspace) -> None:
    numbers = [create(ws, ORDER)["order_number"] for _ in range(3)]
    assert numbers == [1001, 1002, 1003]
    assert create(other_ws, ORDER)["order_number"] == 1001


def test_every_order_writes_an_order_created_event(ws: Workspace) -> None:
    client = ws.client()
    orders = [create(ws, ORDER) for _ in range(3)]
    for order in orders:
        page = client.get("/v1/events", params={"object_id": order["id"]}).json()
        assert [e["type"] for e in page["data"]] == ["order.created"]
        event = page["data"][0]
        assert event["id"].startswith("evt_") and event["object"] == "event"
        assert event["id"] == order["timeline"][0]["event_id"]
        snapshot = event["data"]["object"]
        assert snapshot == {k: v for k, v in order.items() if k != "timeline"}
        assert event["previous_attributes"] is None
        assert event["metadata"]["workspace_id"] == ws.id
        assert event["metadata"]["api_version"]
        assert client.get(f"/v1/events/{event['id']}").json() == event


def test_events_list_newest_first_with_cursor_and_type_filters(ws: Workspace) -> None:
    client = ws.client()
    ids = [create(ws, ORDER)["id"] for _ in range(5)]
    first = client.get("/v1/events", params={"limit": 2}).json()
    assert first["pagination"]["has_more"] is True
    second = client.get("/v1/events", params={"limit": 2, "cursor": first["pagination"]["next_cursor"]}).json()
    third = client.get("/v1/events", params={"limit": 2, "cursor": second["pagination"]["next_cursor"]}).json()
    assert third["pagination"]["has_more"] is False and third["pagination"]["next_cursor"] is None
    assert third["pagination"]["total_count"] == 5
    seen = [e["data"]["object"]["id"] for page in (first, second, third) for e in page["data"]]
    assert seen == list(reversed(ids))
    assert len(client.get("/v1/events", params={"type": "order.*", "limit": 100}).json()["data"]) == 5
    assert len(client.get("/v1/events", params={"type": "order.created", "limit": 100}).json()["data"]) == 5
    assert client.get("/v1/events", params={"type": "customer.*"}).json()["data"] == []
    assert first["meta"]["request_id"]


def test_concurrent_creates_all_land_with_distinct_numbers(ws: Workspace) -> None:
    import concurrent.futures

    def one(i: int) -> httpx.Response:
        body = {"items": [{"sku": f"SKU-{i}", "quantity": 1, "price": "1.00"}]}
        return httpx.post(
            f"{ws.server.base_url}/v1/orders", json=body, headers={"Authorization": f"Bearer {ws.secret}"}, timeout=30
        )

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(64)))
    assert all(r.status_code == 201 for r in responses)
    numbers = sorted(r.json()["order_number"] for r in responses)
    assert numbers == list(range(1001, 1065))


def test_metadata_and_unicode_round_trip_byte_for_byte(ws: Workspace) -> None:
    metadata = {
        "zeta": "last",
        "alpha": "first",
        "emoji": "📦 ünïcode",
        "count": 3,
        "ok": True,
        "none": None,
        "ratio": 0.5,
    }
    order = create(ws, {"metadata": metadata, "items": [{"sku": "Ü-1", "quantity": 1, "price": "1", "name": "Bücher"}]})
    fetched = ws.client().get(f"/v1/orders/{order['id']}")
    assert json.loads(fetched.text)["metadata"] == metadata
    assert list(fetched.json()["metadata"]) == list(metadata)  # key order preserved on both engines
    assert fetched.json()["items"][0]["description"] == "Bücher"
