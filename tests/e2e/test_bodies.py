"""Request bodies: JSON, form-encoded with bracket notation (what curl -d sends), JSON sent with the
form content type (curl -d @order.json), other media types, and the size limit."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support import ORDER, Workspace

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_form_encoded_order(ws: Workspace) -> None:
    body = (
        "customer_email=customer%40example.com&currency=usd"
        "&items[0][sku]=007&items[0][quantity]=2&items[0][price]=29.99"
        "&items[1][sku]=GADGET&items[1][quantity]=1&items[1][unit_price]=5"
        "&shipping_address[postal_code]=94105&shipping_address[city]=San+Francisco&metadata[channel]=web"
    )
    response = ws.client().post("/v1/orders", content=body, headers=FORM)
    assert response.status_code == 201, response.text
    order = response.json()
    assert [(i["sku"], i["quantity"], i["unit_price"]) for i in order["items"]] == [
        ("007", 2, "29.99"),
        ("GADGET", 1, "5.00"),
    ]
    assert order["shipping_address"] == {"city": "San Francisco", "postal_code": "94105"}
    assert order["metadata"] == {"channel": "web"} and order["currency"] == "USD"
    assert order["subtotal"] == "64.98"


def test_json_sent_with_the_form_content_type_is_json(ws: Workspace) -> None:
    body = b'{"items": [{"sku": "A", "quantity": 1, "price": 12.5}]}'
    response = ws.client().post("/v1/orders", content=body, headers=FORM)
    assert response.status_code == 201 and response.json()["items"][0]["unit_price"] == "12.50"


def test_form_bodies_for_commands_and_bulk(ws: Workspace) -> None:
    client = ws.client()
    order = client.post("/v1/orders", json={"items": [{"sku": "A", "quantity": 1, "price": "10.00"}]}).json()
    paid = client.post(f"/v1/orders/{order['id']}/pay", content="amount=5.00&payment_method[type]=usdc", headers=FORM)
    assert paid.status_code == 200 and paid.json()["amount"] == "5.00"
    held = client.post(f"/v1/orders/{order['id']}/hold", content="reason=fraud_review", headers=FORM)
    assert held.json()["status_reason"] == "fraud_review"
    bulk = client.post(
        "/v1/orders/bulk",
        content="orders[0][items][0][sku]=A&orders[0][items][0][quantity]=3&orders[0][items][0][price]=1",
        headers=FORM,
    )
    assert bulk.status_code == 201 and bulk.json()["data"][0]["items"][0]["quantity"] == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("items[0][sku=A", "items[0][sku"),
        ("items[0][sku]=A&items[2][sku]=B", "items[1]"),
        ("a=1&a=2", "a"),
        ("a=1&a[b]=2", "a[b]"),
    ],
)
def test_unreadable_forms_are_a_400_naming_the_key(ws: Workspace, body: str, field: str) -> None:
    response = ws.client().post("/v1/orders", content=body, headers=FORM)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"]["field"] == field


def test_form_values_are_still_validated_per_field(ws: Workspace) -> None:
    response = ws.client().post(
        "/v1/orders", content="items[0][sku]=A&items[0][quantity]=two&items[0][price]=1", headers=FORM
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"]["field"] == "items[0].quantity"


@pytest.mark.parametrize("media", ["text/xml", "multipart/form-data; boundary=x", "application/octet-stream"])
def test_other_media_types_are_415(ws: Workspace, media: str) -> None:
    response = ws.client().post("/v1/orders", content=b"<order/>", headers={"Content-Type": media})
    assert response.status_code == 415 and response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_json_with_a_charset_and_vendor_json_types(ws: Workspace) -> None:
    body = b'{"items": [{"sku": "A", "quantity": 1, "price": "1"}]}'
    for media in ("application/json; charset=utf-8", "application/vnd.api+json"):
        assert ws.client().post("/v1/orders", content=body, headers={"Content-Type": media}).status_code == 201


def test_a_client_gone_before_its_body_arrived_is_no_server_error(ws: Workspace) -> None:
    """The connection closes after part of a declared body: nothing is written, nothing is logged as
    an error, and the server goes on serving."""
    key = "gone-before-its-body"
    head = (
        "POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ws.secret}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\nIdempotency-Key: {key}\r\n\r\n"
    )
    logged = len(ws.server.output)
    with socket.create_connection(("127.0.0.1", ws.server.port), timeout=5) as sock:
        sock.sendall(head.encode() + b'{"currency": "USD", "items": [')
        time.sleep(0.2)  # the server has the head and part of the body, and waits for the rest
    client = ws.client()
    deadline = time.monotonic() + 5
    while not any("client disconnected" in line for line in ws.server.output[logged:]):
        assert time.monotonic() < deadline, "the server never noticed the client leave"
        time.sleep(0.05)
    assert not any("unhandled error" in line or "Traceback" in line for line in ws.server.output[logged:])
    assert client.get("/v1/orders").json()["data"] == []
    # The key was never used: the same key with a whole body creates the order.
    created = client.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
