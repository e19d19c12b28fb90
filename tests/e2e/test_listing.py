"""Lists: every filter operator, sorting, offset/page/cursor pagination — on both engines."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from tests.support import Workspace

EMAILS = ["ann@example.com", "bob@example.com", "cy@other.org"]


def seed(ws: Workspace, count: int = 30) -> list[dict]:
    """`count` orders with rising totals, 3 customers, and statuses CREATED / PAID / FULFILLED in turn."""
    client = ws.client()
    batch = [
        {
            "currency": "USD",
            "customer_email": EMAILS[i % 3],
            "customer_id": f"cus_{i % 3}",
            "items": [{"sku": f"SKU-{i}", "quantity": 1, "price": f"{i + 1}.00"}],
            "notes": "gift wrap" if i % 5 == 0 else None,
        }
        for i in range(count)
    ]
    orders = client.post("/v1/orders/bulk", json=batch).json()["data"]
    card = {"type": "card", "number": "4242424242424242"}
    payments = [{"order_id": o["id"], "payment_method": card} for i, o in enumerate(orders) if i % 3 >= 1]
    assert client.post("/v1/orders/pay_bulk", json=payments).json()["failed"] == 0
    for i, order in enumerate(orders):
        if i % 3 == 2:
            assert client.post(f"/v1/orders/{order['id']}/fulfill").status_code == 200
    return [client.get(f"/v1/orders/{o['id']}").json() for o in orders]


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()["data"]]


def everything(client: httpx.Client, **params: str) -> list[dict]:
    return client.get("/v1/orders", params={"limit": "100", **params}).json()["data"]


@pytest.fixture
def seeded(ws: Workspace) -> tuple[httpx.Client, list[dict]]:
    return ws.client(), seed(ws)


def test_default_page_and_both_shapes(seeded: tuple[httpx.Client, list[dict]]) -> None:
    client, orders = seeded
    body = client.get("/v1/orders").json()
    assert len(body["data"]) == 10  # default limit
    assert [o["id"] for o in body["data"]] == [o["id"] for o in reversed(orders)][:10]  # newest first
    assert body["pagination"] | {"next_cursor": None} == {
        "has_more": True,
        "next_cursor": None,
        "previous_cursor": None,
        "total_count": 30,
        "total_count_exact": True,
        "page_count": 3,
        "current_page": 1,
        "limit": 10,
    }
    assert body["meta"]["request_id"] and isinstance(body["meta"]["response_time_ms"], float)
    # The Orders API's shape, side by side.
    assert (body["total_count"], body["has_more"]) == (30, True)
    assert body["orders"][0] == {
        k: body["data"][0][k] for k in ("id", "customer_id", "status", "total", "currency", "created_at")
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "PAID"}, lambda o: o["status"] == "PAID"),
        ({"status": "pending"}, lambda o: o["status"] == "CREATED"),
        ({"status_eq": "processing"}, lambda o: o["status"] == "FULFILLED"),
        ({"status_ne": "CREATED"}, lambda o: o["status"] != "CREATED"),
        ({"status_in": "pending,processing"}, lambda o: o["status"] in ("CREATED", "FULFILLED")),
        ({"total_gt": "20.00"}, lambda o: Decimal(o["total"]) > 20),
        (
            {"total_amount_gte": "20.00", "total_amount_lte": "25.50"},
            lambda o: 20 <= Decimal(o["total"]) <= Decimal("25.50"),
        ),
        ({"total_lt": "5"}, lambda o: Decimal(o["total"]) < 5),
        ({"amount_min": "10", "amount_max": "12"}, lambda o: 10 <= Decimal(o["total"]) <= 12),
        ({"total_between": "3.00,6.00"}, lambda o: 3 <= Decimal(o["total"]) <= 6),
        ({"customer_email": "bob@example.com"}, lambda o: o["customer_email"] == "bob@example.com"),
        ({"customer_email_like": "%@EXAMPLE.com"}, lambda o: o["customer_email"].endswith("@example.com")),
        ({"customer_id_in": "cus_0,cus_2"}, lambda o: o["customer_id"] in ("cus_0", "cus_2")),
        ({"order_number_gte": "1025"}, lambda o: o["order_number"] >= 1025),
        ({"currency": "usd"}, lambda o: True),
        ({"currency": "EUR"}, lambda o: False),
        ({"search": "other.org"}, lambda o: o["customer_email"] == "cy@other.org"),
        ({"search": "GIFT"}, lambda o: o["notes"] == "gift wrap"),
        ({"search": "100%_"}, lambda o: False),  # % and _ are literal in search
        ({"status": "PAID", "customer_email": "ann@example.com"}, lambda o: False),  # filters combine with AND
        ({"status": "PAID", "total_gte": "15"}, lambda o: o["status"] == "PAID" and Decimal(o["total"]) >= 15),
    ],
)
def test_filters(seeded: tuple[httpx.Client, list[dict]], params: dict, expected) -> None:
    client, orders = seeded
    got = everything(client, **params)
    assert {o["id"] for o in got} == {o["id"] for o in orders if expected(o)}
    assert client.get("/v1/orders", params=params).json()["pagination"]["total_count"] == len(got)


def test_date_filters(seeded: tuple[httpx.Client, list[dict]]) -> None:
    client, orders = seeded
    now = datetime.now(UTC)
    today, tomorrow = now.date().isoformat(), (now + timedelta(days=1)).date().isoformat()
    assert len(everything(client, created_after="2020-01-01")) == 30
    assert everything(client, created_before="2020-01-01T00:00:00Z") == []
    assert len(everything(client, created_between=f"{today},{today}")) == 30  # the whole day is included
    assert everything(client, created_at_gt=tomorrow) == []
    middle = orders[15]["created_at"]
    later = everything(client, created_at_gte=middle)
    assert {o["id"] for o in later} >= {o["id"] for o in orders[16:]}
    plus = everything(client, created_after=(now - timedelta(hours=1)).isoformat())  # "+00:00" arrives as a space
    assert len(plus) == 30


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"total_gt": "ten"}, "total_gt"),
        ({"total_gt": "1.0000001"}, "total_gt"),
        ({"created_after": "last tuesday"}, "created_after"),
        ({"status": "SHIPPING"}, "status"),
        ({"status_like": "PA%"}, "status_like"),
        ({"total_between": "1"}, "total_between"),
        ({"order_number": "x"}, "order_number"),
        ({"sort": "metadata"}, "sort"),
        ({"sort": "total", "order": "sideways"}, "order"),
        ({"offset": "10001"}, "offset"),
        ({"limit": "101"}, "limit"),
        ({"page": "0"}, "page"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor"),
        ({"cursor": "x", "offset": "10"}, "cursor"),
    ],
)
def test_bad_list_parameters_name_the_parameter(ws: Workspace, params: dict, field: str) -> None:
    response = ws.client().get("/v1/orders", params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
    if field == "colour":
        assert "customer_email" in error["details"]["expected"] and "status" in error["details"]["expected"]


def test_sorting_with_deterministic_tiebreak(seeded: tuple[httpx.Client, list[dict]]) -> None:
    client, orders = seeded
    by_total = everything(client, sort="total", order="desc")
    assert [Decimal(o["total"]) for o in by_total] == sorted((Decimal(o["total"]) for o in orders), reverse=True)
    ascending = everything(client, sort="total")
    assert [o["id"] for o in ascending] == [o["id"] for o in reversed(by_total)]
    # Status ties are broken by created_at (desc) and then the id, in the same order every time.
    mixed = everything(client, sort="status,created_at", order="asc,desc")
    expected = sorted(orders, key=lambda o: (o["status"], -orders.index(o)))
    assert [o["id"] for o in mixed] == [o["id"] for o in expected]
    assert everything(client, sort="-total")[0]["id"] == by_total[0]["id"]
    emails = everything(client, sort="customer_email,total", order="asc,asc")
    assert [o["customer_email"] for o in emails] == sorted(o["customer_email"] for o in orders)


def test_offset_and_the_deprecated_page(seeded: tuple[httpx.Client, list[dict]]) -> None:
    client, orders = seeded
    newest_first = [o["id"] for o in reversed(orders)]
    assert ids(client.get("/v1/orders", params={"limit": 7, "offset": 14})) == newest_first[14:21]
    page = client.get("/v1/orders", params={"limit": 7, "page": 3})
    assert ids(page) == newest_first[14:21]
    assert page.json()["pagination"]["current_page"] == 3 and page.json()["pagination"]["page_count"] == 5
    assert ids(client.get("/v1/orders", params={"limit": 7, "offset": 28})) == newest_first[28:]
    past_the_end = client.get("/v1/orders", params={"offset": 30}).json()
    assert past_the_end["data"] == []
    # No row carries the count (it rides in the page's statement): it is counted on its own.
    assert past_the_end["pagination"]["total_count"] == len(orders) == past_the_end["total_count"]


@pytest.mark.parametrize(("sort", "order"), [("created_at", "desc"), ("total", "asc"), ("status,total", "asc,desc")])
def test_cursor_pages_cover_everything_once_under_any_sort(
    seeded: tuple[httpx.Client, list[dict]], sort: str, order: str
) -> None:
    client, _orders = seeded
    expected = ids(client.get("/v1/orders", params={"limit": 100, "sort": sort, "order": order}))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 7, "sort": sort, "order": order} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/orders", params=params).json()
        seen += [o["id"] for o in body["data"]]
        pages += 1
        assert body["pagination"]["current_page"] == pages and body["pagination"]["total_count"] == 30
        cursor = body["pagination"]["next_cursor"]
        if cursor is None:
            assert body["pagination"]["has_more"] is False
            break
    assert seen == expected and pages == 5
    # previous_cursor walks back to the page before.
    params = {"limit": 7, "sort": sort, "order": order}
    first = client.get("/v1/orders", params=params).json()
    second = client.get("/v1/orders", params={**params, "cursor": first["pagination"]["next_cursor"]}).json()
    back = client.get(
        "/v1/orders",
        params={"limit": 7, "sort": sort, "order": order, "cursor": second["pagination"]["previous_cursor"]},
    )
    assert ids(back) == expected[:7]
    assert back.json()["pagination"]["previous_cursor"] is None and back.json()["pagination"]["current_page"] == 1
    other_sort = client.get(
        "/v1/orders", params={"limit": 7, "sort": "updated_at", "cursor": second["pagination"]["next_cursor"]}
    )
    assert other_sort.status_code == 400 and other_sort.json()["error"]["details"]["field"] == "cursor"


def test_cursor_is_stable_while_orders_are_created_concurrently(
    seeded: tuple[httpx.Client, list[dict]], ws: Workspace
) -> None:
    client, orders = seeded
    stop = threading.Event()

    def keep_creating() -> None:
        with httpx.Client(base_url=ws.server.base_url, headers={"Authorization": f"Bearer {ws.secret}"}) as writer:
            while not stop.is_set():
                writer.post(
                    "/v1/orders", json={"currency": "USD", "items": [{"sku": "NEW", "quantity": 1, "price": "500.00"}]}
                )

    thread = threading.Thread(target=keep_creating)
    thread.start()
    try:
        seen, cursor = [], None
        for _ in range(10):  # newest first: new orders land before page 1 and never shift later pages
            body = client.get("/v1/orders", params={"limit": 4} | ({"cursor": cursor} if cursor else {})).json()
            seen += [o for o in body["data"]]
            cursor = body["pagination"]["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        thread.join()
    old = [o["id"] for o in seen if o["items"][0]["sku"] != "NEW"]
    first_old = old[0]
    expected = [o["id"] for o in reversed(orders)]
    assert old == expected[expected.index(first_old) : expected.index(first_old) + len(old)]
    assert len({o["id"] for o in seen}) == len(seen)  # no duplicates
    # By total ascending, new expensive orders sort last: the walk over the old ones has no gaps.
    cheap = []
    cursor = None
    while True:
        body = client.get(
            "/v1/orders",
            params={"limit": 9, "sort": "total", "total_lt": "100"} | ({"cursor": cursor} if cursor else {}),
        ).json()
        cheap += [o["id"] for o in body["data"]]
        cursor = body["pagination"]["next_cursor"]
        client.post("/v1/orders", json={"currency": "USD", "items": [{"sku": "MID", "quantity": 1, "price": "0.50"}]})
        if cursor is None:
            break
    assert [i for i in cheap if i in {o["id"] for o in orders}] == [
        o["id"] for o in sorted(orders, key=lambda o: (Decimal(o["total"]), o["id"]))
    ]


def test_counts_are_capped_unless_asked_for(ws: Workspace) -> None:
    client = ws.client()
    batch = [{"currency": "USD", "items": [{"sku": "A", "quantity": 1, "price": "1.00"}]}] * 550
    for _ in range(2):
        assert client.post("/v1/orders/bulk", json=batch).status_code == 201
    capped = client.get("/v1/orders", params={"limit": 100}).json()
    assert capped["pagination"]["total_count"] == 1_000 and capped["pagination"]["total_count_exact"] is False
    assert capped["pagination"]["page_count"] == 10 and capped["has_more"] is True
    exact = client.get("/v1/orders", params={"limit": 100, "include": "total_count"}).json()
    assert exact["pagination"]["total_count"] == 1_100 and exact["pagination"]["total_count_exact"] is True
    filtered = client.get("/v1/orders", params={"order_number_gt": "2095"}).json()
    assert filtered["pagination"]["total_count"] == 5 and filtered["pagination"]["total_count_exact"] is True
    at_cap = client.get("/v1/orders", params={"order_number_lte": "2000"}).json()["pagination"]  # numbers from 1001
    assert at_cap["total_count"] == 1_000 and at_cap["total_count_exact"] is True
    past_cap = client.get("/v1/orders", params={"order_number_lte": "2001"}).json()["pagination"]
    assert past_cap["total_count"] == 1_000 and past_cap["total_count_exact"] is False
    for include in ({}, {"include": "total_count"}):  # an empty page's count, capped and exact
        beyond = client.get("/v1/orders", params={"limit": 100, "offset": 2_000, **include}).json()
        assert beyond["data"] == [] and beyond["pagination"]["total_count"] == (1_100 if include else 1_000)
        assert beyond["pagination"]["total_count_exact"] is bool(include)


def test_events_use_the_same_list_engine(seeded: tuple[httpx.Client, list[dict]]) -> None:
    client, orders = seeded
    paid = client.get("/v1/events", params={"type": "order.paid", "limit": 100}).json()
    assert paid["pagination"]["total_count"] == 20
    several = client.get("/v1/events", params={"type_in": "order.fulfilled,order.processing", "limit": 100}).json()
    assert len(several["data"]) == 20
    assert (
        client.get("/v1/events", params={"type": "order.*"}).json()["pagination"]["total_count"] == 70
    )  # 30 created, 20 paid, 10 + 10 fulfilled
    assert client.get("/v1/events", params={"type_ne": "order.*"}).json()["data"] == []
    first = client.get("/v1/events", params={"sort": "created_at", "order": "asc", "limit": 1}).json()["data"][0]
    assert first["type"] == "order.created" and first["data"]["object"]["id"] == orders[0]["id"]
