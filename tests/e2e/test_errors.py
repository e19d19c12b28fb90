"""Every error reaches the client in the documented envelope with a stable code — never a 500."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support import ORDER, ServerProcess, Workspace

ENVELOPE_KEYS = {"code", "message", "details", "request_id", "timestamp", "documentation_url"}


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", error["timestamp"])
    assert error["documentation_url"].endswith(f"/docs/errors/{code}")
    return error


def test_unknown_route_is_a_404_envelope(server: ServerProcess) -> None:
    error_of(httpx.get(f"{server.base_url}/v1/nothing-here"), 404, "ROUTE_NOT_FOUND")


def test_wrong_method_is_a_405_envelope_with_allow(ws: Workspace) -> None:
    response = ws.client().delete("/v1/orders")
    error = error_of(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in error["details"]["allowed_methods"]
    assert "POST" in response.headers["allow"]


def test_the_documentation_url_of_an_error_is_served(ws: Workspace) -> None:
    error = error_of(ws.client().get("/v1/orders/ord_missing"), 404, "RESOURCE_NOT_FOUND")
    page = httpx.get(error["documentation_url"])
    assert page.status_code == 200 and "RESOURCE_NOT_FOUND" in page.text


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"items": [}', b"\xff\xfe", b'{"a":1}{"b":2}'])
def test_malformed_json_is_a_400_validation_error(ws: Workspace, body: bytes) -> None:
    response = ws.client().post("/v1/orders", content=body, headers={"content-type": "application/json"})
    error = error_of(response, 400, "VALIDATION_ERROR")
    assert error["details"]["field"] == "body"


def test_an_empty_body_is_a_400(ws: Workspace) -> None:
    error_of(ws.client().post("/v1/orders"), 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("body", "code", "field", "received"),
    [
        (
            {"items": [{"sku": "A", "quantity": "two", "unit_price": "1.00"}]},
            "VALIDATION_ERROR",
            "items[0].quantity",
            "two",
        ),
        (
            {"items": [{"sku": "A", "quantity": 1.5, "unit_price": "1.00"}]},
            "VALIDATION_ERROR",
            "items[0].quantity",
            1.5,
        ),
        (
            {"items": [{"sku": "A", "quantity": 0, "unit_price": "1.00"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].quantity",
            0,
        ),
        ({"items": [{"quantity": 1, "unit_price": "1.00"}]}, "MISSING_REQUIRED_FIELD", "items[0].sku", None),
        ({"items": [{"sku": "A", "quantity": 1}]}, "MISSING_REQUIRED_FIELD", "items[0].unit_price", None),
        ({}, "MISSING_REQUIRED_FIELD", "items", None),
        ({"items": []}, "INVALID_FIELD_FORMAT", "items", []),
        ({"items": "LAPTOP"}, "VALIDATION_ERROR", "items", "LAPTOP"),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "abc"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].unit_price",
            "abc",
        ),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "NaN"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].unit_price",
            "NaN",
        ),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "-1.00"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].unit_price",
            "-1.00",
        ),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "1e400"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].unit_price",
            "1E+400",
        ),
        (
            {"currency": "USD", "items": [{"sku": "A", "quantity": 1, "unit_price": "1.001"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].unit_price",
            "1.001",
        ),
        ({"items": [{"sku": "A", "quantity": 1, "price": True}]}, "VALIDATION_ERROR", "items[0].price", True),
        (
            {"customer_email": "invalid-email", "items": [{"sku": "A", "quantity": 1, "price": "1"}]},
            "INVALID_FIELD_FORMAT",
            "customer_email",
            "invalid-email",
        ),
        (
            {"currency": "XYZ", "items": [{"sku": "A", "quantity": 1, "price": "1"}]},
            "INVALID_FIELD_FORMAT",
            "currency",
            "XYZ",
        ),
        (
            {"fraud_check": {"enabled": True}, "items": [{"sku": "A", "quantity": 1, "price": "1"}]},
            "VALIDATION_ERROR",
            "fraud_check",
            {"enabled": True},
        ),
        (
            {"metadata": {"nested": {"a": 1}}, "items": [{"sku": "A", "quantity": 1, "price": "1"}]},
            "INVALID_FIELD_FORMAT",
            "metadata.nested",
            {"a": 1},
        ),
        (
            {"items": [{"sku": "A", "quantity": 1, "unit_price": "1.00", "price": "2.00"}]},
            "INVALID_FIELD_FORMAT",
            "items[0].price",
            "2.00",
        ),
        ({"items": [{"sku": " ", "quantity": 1, "price": "1"}]}, "INVALID_FIELD_FORMAT", "items[0].sku", " "),
        ([1, 2], "VALIDATION_ERROR", "body", [1, 2]),
    ],
)
def test_field_errors_name_the_field_expected_and_received(
    ws: Workspace, body: object, code: str, field: str, received: object
) -> None:
    response = ws.client().post("/v1/orders", json=body)
    error = error_of(response, 422, code)
    assert error["details"]["field"] == field
    assert error["details"]["received"] == received
    assert error["details"]["expected"]
    assert error["details"]["issue"]


def test_more_than_1000_items_is_refused(ws: Workspace) -> None:
    items = [{"sku": f"S{i}", "quantity": 1, "price": "1.00"} for i in range(1001)]
    error = error_of(ws.client().post("/v1/orders", json={"items": items}), 422, "INVALID_FIELD_FORMAT")
    assert error["details"]["field"] == "items"


def test_a_body_over_10_mb_is_a_413(ws: Workspace) -> None:
    body = b'{"items": [], "notes": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    error = error_of(ws.client().post("/v1/orders", content=body), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["max_bytes"] == 10 * 1024 * 1024


def test_a_413_without_content_length_is_caught_while_streaming(ws: Workspace) -> None:
    def chunks():
        yield b'{"notes": "'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    error_of(ws.client().post("/v1/orders", content=chunks()), 413, "PAYLOAD_TOO_LARGE")


def test_every_response_has_a_request_id_and_a_sane_client_one_is_echoed(ws: Workspace) -> None:
    client = ws.client()
    assert re.match(r"^req_[0-9A-Za-z]{22}$", client.get("/health").headers["x-request-id"])
    echoed = client.get("/v1/orders/ord_missing", headers={"X-Request-Id": "trace-abc.123"})
    assert echoed.headers["x-request-id"] == "trace-abc.123"
    assert echoed.json()["error"]["request_id"] == "trace-abc.123"
    replaced = client.get("/health", headers={"X-Request-Id": "bad id with spaces <script>"})
    assert replaced.headers["x-request-id"].startswith("req_")


def test_a_failed_create_writes_nothing(ws: Workspace) -> None:
    client = ws.client()
    before = client.get("/v1/events", params={"limit": 100}).json()["data"]
    bad = {"items": [{"sku": "A", "quantity": 1, "price": "1.00"}, {"sku": "B", "quantity": 1, "price": "x"}]}
    assert client.post("/v1/orders", json=bad).status_code == 422
    assert client.get("/v1/events", params={"limit": 100}).json()["data"] == before
    # The next order still gets the next number: no counter was consumed by the failure.
    assert client.post("/v1/orders", json=ORDER).json()["order_number"] == 1001 + len(before)


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"cursor": "!!"}, {"colour": "red"}, {"offset": "10001"}],
)
def test_bad_list_parameters_are_a_400(ws: Workspace, params: dict) -> None:
    error = error_of(ws.client().get("/v1/events", params=params), 400, "VALIDATION_ERROR")
    assert error["details"]["field"] in params


def test_unknown_ids_are_404_resource_not_found(ws: Workspace) -> None:
    client = ws.client()
    error = error_of(client.get("/v1/orders/ord_doesnotexist"), 404, "RESOURCE_NOT_FOUND")
    assert error["details"] == {"resource": "order", "id": "ord_doesnotexist"}
    error_of(client.get("/v1/events/evt_doesnotexist"), 404, "RESOURCE_NOT_FOUND")
    error_of(client.get("/v1/orders/" + "x" * 5000), 404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/orders/ord_%00x", "order_id"),
        ("POST", "/v1/orders/ord_%00x/hold", "order_id"),
        ("GET", "/v1/customers/cus_%00x", "customer_id"),
        ("GET", "/v1/products/SKU%00x", "sku"),
        ("GET", "/v1/events/evt_%00x", "event_id"),
        ("GET", "/v1/returns/ret_%00x", "return_id"),
        ("GET", "/v1/orders?customer_id=cus_%00x", "customer_id"),
        ("GET", "/v1/orders?search=a%00b", "search"),
    ],
)
def test_a_nul_in_a_path_or_query_parameter_is_a_400(ws: Workspace, method: str, path: str, field: str) -> None:
    """PostgreSQL text cannot hold NUL: a statement carrying one fails (it was a 500 there, and a
    GET's failed look-up failed the look-ups sent with it). Refused up front on both engines."""
    client = ws.client()
    order = client.post("/v1/orders", json=ORDER).json()
    error = error_of(client.request(method, path), 400, "VALIDATION_ERROR")
    assert error["details"]["field"] == field and error["details"]["received"].count("\x00") == 1
    assert client.get(f"/v1/orders/{order['id']}").status_code == 200  # and the server goes on


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        # PostgreSQL text cannot hold NUL: refused up front on both engines, naming the field.
        (b'{"items": [{"sku": "A\\u0000", "quantity": 1, "price": "1"}]}', 422, "INVALID_FIELD_FORMAT", "items[0].sku"),
        (
            b'{"metadata": {"k\\u0000": "v"}, "items": [{"sku": "A", "quantity": 1, "price": "1"}]}',
            422,
            "INVALID_FIELD_FORMAT",
            "metadata",
        ),
        (b'{"items": [{"sku": "\\ud800", "quantity": 1, "price": "1"}]}', 400, "VALIDATION_ERROR", "body"),
        (
            b'{"metadata": {"deep": ' + b"[" * 50_000 + b"]" * 50_000 + b'}, "items": []}',
            400,
            "VALIDATION_ERROR",
            "body",
        ),
        (
            b'{"metadata": {"big": 123456789012345678901234567890},'
            b' "items": [{"sku": "A", "quantity": 1, "price": "1"}]}',
            422,
            "INVALID_FIELD_FORMAT",
            "metadata.big",
        ),
        (
            b'{"items": [{"sku": "A", "quantity": 1000000, "price": "1000000000000"}]}',
            422,
            "INVALID_FIELD_FORMAT",
            "items[0]",
        ),
        (
            b'{"items": [{"sku": "A", "quantity": 1, "price": "999999999999"},'
            b' {"sku": "B", "quantity": 1, "price": "999999999999"}]}',
            422,
            "INVALID_FIELD_FORMAT",
            "items",
        ),
    ],
)
def test_hostile_bodies_get_a_4xx_and_write_nothing(
    ws: Workspace, body: bytes, status: int, code: str, field: str
) -> None:
    client = ws.client()
    error = error_of(client.post("/v1/orders", content=body), status, code)
    assert error["details"]["field"] == field
    assert client.get("/v1/events").json()["data"] == []
