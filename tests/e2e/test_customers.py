"""Customers through real HTTP on both engines: CRUD, email uniqueness, validation, tenancy, lists,
a customer's orders, events and idempotency — and the hook order creation uses to link a customer."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx
import pytest

from stateset_server.core.errors import ApiError
from stateset_server.customers.service import resolve_for_order
from stateset_server.storage import Database, Tx, with_database
from stateset_server.workspaces.keys import Principal
from tests.support import ServerProcess, Workspace

ADDRESS = {
    "name": "Ann Adams",
    "address_line_1": "123 Main St",
    "city": "San Francisco",
    "state": "CA",
    "postal_code": "94105",
    "country": "us",
}
ANN = {
    "email": "Ann@Example.com",
    "first_name": "Ann",
    "last_name": "Adams",
    "phone": "+1 415 555 0100",
    "tier": "gold",
    "addresses": [ADDRESS],
    "metadata": {"source": "import", "vip": True},
}


def create(client: httpx.Client, body: dict) -> dict:
    response = client.post("/v1/customers", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def events_of(client: httpx.Client, object_id: str) -> list[dict]:
    """The object's events, oldest first."""
    response = client.get("/v1/events", params={"object_id": object_id, "limit": "100"})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["data"]))


def error_of(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_create_retrieve_and_the_created_event(ws: Workspace) -> None:
    client = ws.client()
    customer = create(client, ANN)
    assert customer["id"].startswith("cus_") and len(customer["id"]) == 26
    assert customer | {"id": None, "created_at": None, "updated_at": None} == {
        "id": None,
        "object": "customer",
        "email": "Ann@Example.com",  # kept as written; uniqueness ignores case
        "first_name": "Ann",
        "last_name": "Adams",
        "name": "Ann Adams",
        "phone": "+1 415 555 0100",
        "tier": "gold",
        "addresses": [ADDRESS | {"country": "US"}],
        "metadata": {"source": "import", "vip": True},
        "livemode": False,
        "created_at": None,
        "updated_at": None,
    }
    assert customer["created_at"] == customer["updated_at"] and customer["created_at"].endswith("Z")
    fetched = client.get(f"/v1/customers/{customer['id']}")
    assert fetched.status_code == 200 and fetched.json() == customer

    [event] = events_of(client, customer["id"])
    assert event["type"] == "customer.created"
    assert event["data"]["object"] == customer
    assert event["previous_attributes"] is None

    minimal = create(client, {"email": "bob@example.com"})
    assert (minimal["name"], minimal["addresses"], minimal["metadata"], minimal["tier"]) == (None, [], {}, None)
    only_last = create(client, {"email": "cy@example.com", "last_name": "Clark", "first_name": "  "})
    assert (only_last["first_name"], only_last["name"]) == (None, "Clark")  # blank text means absent


def test_email_is_unique_per_workspace_and_mode_ignoring_case(ws: Workspace, other_ws: Workspace) -> None:
    client = ws.client()
    first = create(client, ANN)
    error = error_of(client.post("/v1/customers", json={"email": " ann@EXAMPLE.com "}), 409, "RESOURCE_ALREADY_EXISTS")
    assert error["details"]["existing_id"] == first["id"]
    assert first["id"] in error["message"]
    # The same email is another customer in live mode and in another workspace.
    live = create(ws.client(ws.key(mode="live")), {"email": "ann@example.com"})
    assert live["livemode"] is True and live["id"] != first["id"]
    elsewhere = create(other_ws.client(), {"email": "ann@example.com"})
    assert elsewhere["id"] not in (first["id"], live["id"])
    assert client.get("/v1/customers").json()["pagination"]["total_count"] == 1


def test_concurrent_creates_of_one_email_make_one_customer(ws: Workspace) -> None:
    """The unique index decides, without a 500: one 201, every other request a 409 naming the winner."""
    client = ws.client()
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda i: client.post("/v1/customers", json={"email": f"RACE@example.com{'' if i % 2 else ' '}"}),
                range(16),
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 15, [r.text for r in responses if r.status_code not in (201, 409)]
    [winner] = [r.json()["id"] for r in responses if r.status_code == 201]
    assert {r.json()["error"]["details"]["existing_id"] for r in responses if r.status_code == 409} == {winner}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"email": "not-an-email"}, 422, "INVALID_FIELD_FORMAT", "email"),
        ({"email": "a@b"}, 422, "INVALID_FIELD_FORMAT", "email"),
        ({"first_name": "Ann"}, 422, "MISSING_REQUIRED_FIELD", "email"),
        ({"email": "a@example.com", "nickname": "x"}, 422, "VALIDATION_ERROR", "nickname"),
        ({"email": "a@example.com", "tier": "t" * 33}, 422, "INVALID_FIELD_FORMAT", "tier"),
        ({"email": "a@example.com", "phone": 5551234}, 422, "VALIDATION_ERROR", "phone"),
        ({"email": "a@example.com", "addresses": [ADDRESS] * 11}, 422, "INVALID_FIELD_FORMAT", "addresses"),
        ({"email": "a@example.com", "addresses": [{"street": "x"}]}, 422, "VALIDATION_ERROR", "addresses[0].street"),
        ({"email": "a@example.com", "metadata": {"k" * 41: "v"}}, 422, "INVALID_FIELD_FORMAT", "metadata." + "k" * 41),
        ({"email": "a@example.com", "metadata": {"nested": {"a": 1}}}, 422, "INVALID_FIELD_FORMAT", "metadata.nested"),
    ],
)
def test_validation_errors_name_the_field(ws: Workspace, body: dict, status: int, code: str, field: str) -> None:
    client = ws.client()
    error = error_of(client.post("/v1/customers", json=body), status, code)
    assert error["details"]["field"] == field
    assert client.get("/v1/customers").json()["data"] == []


def test_update_merges_clears_and_records_previous_attributes(ws: Workspace) -> None:
    client = ws.client()
    customer = create(client, ANN)
    time.sleep(0.002)  # updated_at moves on
    response = client.patch(
        f"/v1/customers/{customer['id']}",
        json={"tier": "platinum", "first_name": "Anne", "phone": None, "metadata": {"vip": None, "note": "hi"}},
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["tier"], updated["first_name"], updated["name"], updated["phone"]) == (
        "platinum",
        "Anne",
        "Anne Adams",
        None,
    )
    assert updated["metadata"] == {"source": "import", "note": "hi"}
    assert updated["addresses"] == customer["addresses"]  # not given: unchanged
    assert updated["created_at"] == customer["created_at"] and updated["updated_at"] > customer["updated_at"]
    assert client.get(f"/v1/customers/{customer['id']}").json() == updated

    # PUT takes the same partial body; a new email is checked and kept as written.
    put = client.put(f"/v1/customers/{customer['id']}", json={"email": "anne@example.com", "addresses": None})
    assert put.status_code == 200, put.text
    assert (put.json()["email"], put.json()["addresses"]) == ("anne@example.com", [])

    # Nothing changes: no new event.
    assert client.patch(f"/v1/customers/{customer['id']}", json={"tier": "platinum"}).json() == put.json()
    assert client.patch(f"/v1/customers/{customer['id']}", json={}).status_code == 200

    created, first, second = events_of(client, customer["id"])
    assert [e["type"] for e in (created, first, second)] == [
        "customer.created",
        "customer.updated",
        "customer.updated",
    ]
    assert first["data"]["object"] == updated
    assert first["previous_attributes"] == {
        "first_name": "Ann",
        "name": "Ann Adams",
        "phone": "+1 415 555 0100",
        "tier": "gold",
        "metadata": {"source": "import", "vip": True},
    }
    assert second["previous_attributes"] == {"email": "Ann@Example.com", "addresses": customer["addresses"]}


def test_changing_the_email_rechecks_uniqueness(ws: Workspace) -> None:
    client = ws.client()
    ann = create(client, {"email": "ann@example.com"})
    bob = create(client, {"email": "bob@example.com"})
    error = error_of(
        client.patch(f"/v1/customers/{bob['id']}", json={"email": "ANN@example.com"}), 409, "RESOURCE_ALREADY_EXISTS"
    )
    assert error["details"]["existing_id"] == ann["id"]
    assert client.get(f"/v1/customers/{bob['id']}").json()["email"] == "bob@example.com"
    # Only the case changes: still the same customer's own email.
    recased = client.patch(f"/v1/customers/{ann['id']}", json={"email": "Ann@Example.com"})
    assert recased.status_code == 200 and recased.json()["email"] == "Ann@Example.com"
    error = error_of(client.patch(f"/v1/customers/{ann['id']}", json={"email": "nope"}), 422, "INVALID_FIELD_FORMAT")
    assert error["details"]["field"] == "email"
    error = error_of(client.patch(f"/v1/customers/{ann['id']}", json={"email": None}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "email"
    error = error_of(client.patch(f"/v1/customers/{ann['id']}", json={"id": "cus_x"}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "id"


def test_delete_is_soft_and_frees_the_email(ws: Workspace) -> None:
    client = ws.client()
    customer = create(client, ANN)
    response = client.delete(f"/v1/customers/{customer['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": customer["id"], "object": "customer", "deleted": True}
    for request in (
        client.get(f"/v1/customers/{customer['id']}"),
        client.patch(f"/v1/customers/{customer['id']}", json={"tier": "x"}),
        client.delete(f"/v1/customers/{customer['id']}"),
        client.get(f"/v1/customers/{customer['id']}/orders"),
    ):
        error_of(request, 404, "RESOURCE_NOT_FOUND")
    assert client.get("/v1/customers").json()["data"] == []
    again = create(client, {"email": "ann@example.com"})
    assert again["id"] != customer["id"]
    assert [c["id"] for c in client.get("/v1/customers").json()["data"]] == [again["id"]]
    *_, deleted = events_of(client, customer["id"])
    assert deleted["type"] == "customer.deleted" and deleted["data"]["object"] == customer


def test_unknown_and_foreign_customers_are_404(ws: Workspace, other_ws: Workspace) -> None:
    theirs = create(other_ws.client(), ANN)
    live = create(ws.client(ws.key(mode="live")), ANN)
    client = ws.client()
    for customer_id in ("cus_doesnotexist", theirs["id"], live["id"]):
        path = f"/v1/customers/{customer_id}"
        for response in (
            client.get(path),
            client.patch(path, json={"tier": "x"}),
            client.put(path, json={"tier": "x"}),
            client.delete(path),
            client.get(f"{path}/orders"),
        ):
            error = error_of(response, 404, "RESOURCE_NOT_FOUND")
            assert error["details"] == {"resource": "customer", "id": customer_id}
    assert other_ws.client().get(f"/v1/customers/{theirs['id']}").json()["tier"] == "gold"  # untouched


def test_keys_need_the_customer_scopes(ws: Workspace) -> None:
    publishable = ws.client(ws.key(kind="publishable"))
    error = error_of(
        publishable.post("/v1/customers", json={"email": "a@example.com"}), 403, "INSUFFICIENT_PERMISSIONS"
    )
    assert error["details"]["required_scope"] == "customers:write"
    error = error_of(publishable.get("/v1/customers"), 403, "INSUFFICIENT_PERMISSIONS")
    assert error["details"]["required_scope"] == "customers:read"


def test_idempotent_replay_of_create(ws: Workspace) -> None:
    client = ws.client()
    headers = {"Idempotency-Key": "customer-ann-1"}
    first = client.post("/v1/customers", json=ANN, headers=headers)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    replay = client.post("/v1/customers", json=ANN, headers=headers)
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert len(client.get("/v1/customers").json()["data"]) == 1
    assert len(events_of(client, first.json()["id"])) == 1
    error_of(
        client.post("/v1/customers", json={"email": "other@example.com"}, headers=headers),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    # A refusal is stored and replayed too.
    conflict = client.post("/v1/customers", json={"email": "ann@example.com"}, headers={"Idempotency-Key": "dup"})
    error_of(conflict, 409, "RESOURCE_ALREADY_EXISTS")
    again = client.post("/v1/customers", json={"email": "ann@example.com"}, headers={"Idempotency-Key": "dup"})
    assert again.status_code == 409 and again.content == conflict.content
    deleted = client.delete(f"/v1/customers/{first.json()['id']}", headers={"Idempotency-Key": "del-1"})
    replayed = client.delete(f"/v1/customers/{first.json()['id']}", headers={"Idempotency-Key": "del-1"})
    assert (replayed.status_code, replayed.content) == (200, deleted.content)


# --- lists ---------------------------------------------------------------------------------------

PEOPLE = [
    {"email": "ann@example.com", "first_name": "Ann", "last_name": "Adams", "tier": "gold", "phone": "555-0100"},
    {"email": "Bob@Example.com", "first_name": "Bob", "last_name": "Baker", "tier": "silver"},
    {"email": "cy@other.org", "first_name": "Cy", "last_name": "Clark", "tier": "gold"},
    {"email": "dee@other.org", "first_name": "Dee", "tier": "bronze", "phone": "555-0199"},  # no last name
    {"email": "eve@example.com", "first_name": "Eve", "last_name": "Evans"},  # no tier
]


@pytest.fixture
def people(ws: Workspace) -> tuple[httpx.Client, list[dict]]:
    client = ws.client()
    made = []
    for body in PEOPLE:
        made.append(create(client, body))
        time.sleep(0.002)  # distinct created_at (ms precision on the wire)
    return client, made


def plus_ms(shown: str) -> str:
    moment = datetime.fromisoformat(shown.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def emails(client: httpx.Client, **params: str) -> list[str]:
    response = client.get("/v1/customers", params={"limit": "100", **params})
    assert response.status_code == 200, response.text
    return [c["email"] for c in response.json()["data"]]


def test_list_shape_and_default_order(people: tuple[httpx.Client, list[dict]]) -> None:
    client, made = people
    body = client.get("/v1/customers", params={"limit": "2"}).json()
    assert body["object"] == "list"
    assert [c["id"] for c in body["data"]] == [made[4]["id"], made[3]["id"]]  # newest first
    assert body["data"][0] == made[4]
    assert body["pagination"] | {"next_cursor": None} == {
        "has_more": True,
        "next_cursor": None,
        "previous_cursor": None,
        "total_count": 5,
        "total_count_exact": True,
        "page_count": 3,
        "current_page": 1,
        "limit": 2,
    }
    assert set(body["meta"]) == {"request_id", "response_time_ms"}


def test_every_list_filter(people: tuple[httpx.Client, list[dict]]) -> None:
    client, made = people
    ann, bob, cy, dee, eve = (p["email"] for p in made)
    by_created = [ann, bob, cy, dee, eve]
    assert emails(client, id=made[1]["id"]) == [bob]
    assert emails(client, id_in=f"{made[0]['id']},{made[2]['id']}", sort="created_at") == [ann, cy]
    assert emails(client, email="BOB@example.COM") == [bob]  # ignoring case
    assert emails(client, email_ne="ann@example.com", sort="email") == [bob, cy, dee, eve]
    assert emails(client, email_like="%@OTHER.org", sort="email") == [cy, dee]
    assert emails(client, email_in="ANN@example.com,eve@example.com", sort="email") == [ann, eve]
    assert emails(client, first_name="Cy") == [cy]
    assert emails(client, first_name_like="e%", sort="email") == [eve]
    assert emails(client, last_name="Baker") == [bob]
    assert emails(client, last_name_in="Adams,Clark", sort="email") == [ann, cy]
    assert emails(client, tier="gold", sort="email") == [ann, cy]
    assert emails(client, customer_tier="gold", sort="email") == [ann, cy]  # the spec's name
    assert emails(client, tier_in="silver,bronze", sort="email") == [bob, dee]
    assert emails(client, tier_ne="gold", sort="email") == [bob, dee]  # no tier matches neither
    assert emails(client, search="555-01", sort="email") == [ann, dee]  # phone
    assert emails(client, search="other.ORG", sort="email") == [cy, dee]  # email
    assert emails(client, search="bak", sort="email") == [bob]  # last name
    assert emails(client, search="ev", sort="email") == [eve]  # first and last name

    # Times on the wire have milliseconds and customers are >= 2 ms apart: a shown time is at or
    # just before its customer's, and one millisecond later is still before the next customer's.
    third, after_third = made[2]["created_at"], plus_ms(made[2]["created_at"])
    assert emails(client, created_at_gte=third, sort="created_at") == by_created[2:]
    assert emails(client, created_after=after_third, sort="created_at") == by_created[3:]
    assert emails(client, created_before=third, sort="created_at") == by_created[:2]
    assert emails(client, created_lt=third, sort="created_at") == by_created[:2]
    assert emails(client, created_at_between=f"{made[1]['created_at']},{after_third}", sort="created_at") == [bob, cy]
    assert len(emails(client, created_at_between="2000-01-01,2999-12-31")) == 5

    time.sleep(0.002)
    touched = client.patch(f"/v1/customers/{made[0]['id']}", json={"tier": "platinum"}).json()
    assert emails(client, updated_at_gte=touched["updated_at"]) == [ann]
    assert emails(client, updated_at_lt=touched["updated_at"], sort="created_at") == by_created[1:]


def test_list_sorts_and_cursor_pages(people: tuple[httpx.Client, list[dict]]) -> None:
    client, made = people
    ann, bob, cy, dee, eve = (p["email"] for p in made)
    assert emails(client) == [eve, dee, cy, bob, ann]
    assert emails(client, sort="created_at") == [ann, bob, cy, dee, eve]
    assert emails(client, sort="-created_at") == [eve, dee, cy, bob, ann]
    assert emails(client, sort="email") == [ann, bob, cy, dee, eve]  # Bob@ sorts as bob@
    assert emails(client, sort="email", order="desc") == [eve, dee, cy, bob, ann]
    assert emails(client, sort="last_name") == [dee, ann, bob, cy, eve]  # a missing last name first
    assert emails(client, sort="last_name", order="desc") == [eve, cy, bob, ann, dee]

    time.sleep(0.002)
    client.patch(f"/v1/customers/{made[1]['id']}", json={"tier": "gold"})
    assert emails(client, sort="updated_at", order="desc")[0] == bob

    # Cursor pages under a sort with a NULL column still walk every row exactly once, both ways.
    seen, cursor, pages = [], None, []
    while True:
        params = {"limit": "2", "sort": "last_name"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/customers", params=params).json()
        pages.append(page)
        seen += [c["email"] for c in page["data"]]
        cursor = page["pagination"]["next_cursor"]
        if cursor is None:
            break
    assert seen == [dee, ann, bob, cy, eve]
    back = client.get(
        "/v1/customers",
        params={"limit": "2", "sort": "last_name", "cursor": pages[-1]["pagination"]["previous_cursor"]},
    )
    assert [c["email"] for c in back.json()["data"]] == [bob, cy]

    for params, name in (
        ({"nickname": "x"}, "nickname"),
        ({"sort": "phone"}, "sort"),
        ({"sort": "tier"}, "sort"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"limit": "101"}, "limit"),
    ):
        error = error_of(client.get("/v1/customers", params=params), 400, "VALIDATION_ERROR")
        assert error["details"]["field"] == name


# --- a customer's orders ---------------------------------------------------------------------------


def order(customer_id: str, price: str) -> dict:
    return {"customer_id": customer_id, "currency": "USD", "items": [{"sku": "SKU-1", "quantity": 1, "price": price}]}


def test_a_customers_orders(ws: Workspace, other_ws: Workspace) -> None:
    client = ws.client()
    ann = create(client, {"email": "ann@example.com"})
    bob = create(client, {"email": "bob@example.com"})
    mine = []
    for price in ("10.00", "20.00", "30.00"):
        response = client.post("/v1/orders", json=order(ann["id"], price))
        assert response.status_code == 201, response.text
        mine.append(response.json())
    assert client.post("/v1/orders", json=order(bob["id"], "99.00")).status_code == 201
    assert client.post("/v1/orders", json=order("cust_external", "5.00")).status_code == 201

    response = client.get(f"/v1/customers/{ann['id']}/orders")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [o["id"] for o in body["data"]] == [o["id"] for o in reversed(mine)]  # newest first
    assert {o["customer_id"] for o in body["data"]} == {ann["id"]}
    assert body["pagination"]["total_count"] == 3 and body["total_count"] == 3
    assert [o["id"] for o in body["orders"]] == [o["id"] for o in body["data"]]  # the Orders API's shape too

    # Every parameter of GET /v1/orders works, narrowed to this customer.
    narrowed = client.get(f"/v1/customers/{ann['id']}/orders", params={"subtotal_gte": "20", "sort": "total"})
    assert [o["subtotal"] for o in narrowed.json()["data"]] == ["20.00", "30.00"]
    first = client.get(f"/v1/customers/{ann['id']}/orders", params={"limit": "2", "sort": "created_at"}).json()
    rest = client.get(
        f"/v1/customers/{ann['id']}/orders",
        params={"limit": "2", "sort": "created_at", "cursor": first["pagination"]["next_cursor"]},
    ).json()
    assert [o["id"] for o in first["data"] + rest["data"]] == [o["id"] for o in mine]
    # The client's own customer_id filter is ANDed, never a way out of the customer.
    other = client.get(f"/v1/customers/{ann['id']}/orders", params={"customer_id": bob["id"]})
    assert other.json()["data"] == []
    error = error_of(client.get(f"/v1/customers/{ann['id']}/orders", params={"colour": "red"}), 400, "VALIDATION_ERROR")
    assert error["details"]["field"] == "colour"
    assert client.get(f"/v1/customers/{bob['id']}/orders").json()["pagination"]["total_count"] == 1
    error_of(other_ws.client().get(f"/v1/customers/{ann['id']}/orders"), 404, "RESOURCE_NOT_FOUND")


# --- the order hook --------------------------------------------------------------------------------


def principal_of(ws: Workspace, mode: str = "test") -> Principal:
    return Principal(key_id="key_hooktest", workspace_id=ws.id, mode=mode, kind="secret", scopes=frozenset())


def resolve(server: ServerProcess, principal: Principal, **given: str | None) -> tuple[str | None, str | None]:
    """The hook inside a transaction of its own, as order creation will call it inside the order's."""

    async def action(db: Database) -> tuple[str | None, str | None]:
        async def write(tx: Tx) -> tuple[str | None, str | None]:
            return await resolve_for_order(
                tx,
                principal,
                customer_id=given.get("customer_id"),
                email=given.get("email"),
                now=time.time_ns() // 1000,
                request_id="req_hooktest",
                **({"field": given["field"]} if "field" in given else {}),
            )

        return await db.write(write)

    return asyncio.run(with_database(server.database_url, action))


def test_the_order_hook_finds_or_creates_by_email(server: ServerProcess, ws: Workspace) -> None:
    client, principal = ws.client(), principal_of(ws)
    assert resolve(server, principal) == (None, None)

    customer_id, email = resolve(server, principal, email="New@Example.com")
    assert email == "New@Example.com"
    created = client.get(f"/v1/customers/{customer_id}").json()
    assert (created["email"], created["name"], created["metadata"]) == ("New@Example.com", None, {})
    [event] = events_of(client, customer_id)
    assert event["type"] == "customer.created" and event["metadata"]["request_id"] == "req_hooktest"

    # The same email in another case is the same customer; nothing new is created.
    assert resolve(server, principal, email="new@example.COM") == (customer_id, "new@example.COM")
    assert client.get("/v1/customers").json()["pagination"]["total_count"] == 1
    # Another mode has its own customers.
    live_id, _ = resolve(server, principal_of(ws, "live"), email="new@example.com")
    assert live_id != customer_id


def test_the_order_hook_checks_our_ids_and_keeps_external_ones(
    server: ServerProcess, ws: Workspace, other_ws: Workspace
) -> None:
    client, principal = ws.client(), principal_of(ws)
    ann = create(client, {"email": "ann@example.com"})
    assert resolve(server, principal, customer_id=ann["id"]) == (ann["id"], "ann@example.com")
    assert resolve(server, principal, customer_id=ann["id"], email="billing@example.com") == (
        ann["id"],
        "billing@example.com",
    )
    # The client's own ids — even a Stripe-style cus_… — are kept as given, with no look-up.
    for external in ("cust_123", "cus_NffrFeUfNV2Hib", "cus_0"):
        assert resolve(server, principal, customer_id=external, email="x@example.com") == (external, "x@example.com")
    assert client.get("/v1/customers").json()["pagination"]["total_count"] == 1

    theirs = create(other_ws.client(), {"email": "them@example.com"})
    gone = create(client, {"email": "gone@example.com"})
    client.delete(f"/v1/customers/{gone['id']}")
    for missing in ("cus_" + "0" * 22, theirs["id"], gone["id"]):
        with pytest.raises(ApiError) as raised:
            resolve(server, principal, customer_id=missing, email="x@example.com")
        assert (raised.value.status, raised.value.code) == (422, "INVALID_FIELD_FORMAT")
        assert raised.value.details["field"] == "customer_id" and raised.value.details["received"] == missing
    with pytest.raises(ApiError) as raised:
        resolve(server, principal, customer_id=gone["id"], field="customer.id")
    assert raised.value.details["field"] == "customer.id"


def test_racing_email_changes_never_500(ws: Workspace) -> None:
    import asyncio

    import httpx

    client = ws.client()
    ids = [client.post("/v1/customers", json={"email": f"racer{i}@example.com"}).json()["id"] for i in range(20)]

    async def race() -> list[int]:
        async with httpx.AsyncClient(
            base_url=ws.server.base_url, headers={"Authorization": f"Bearer {ws.secret}"}
        ) as c:
            responses = await asyncio.gather(
                *(c.patch(f"/v1/customers/{cid}", json={"email": "winner@example.com"}, timeout=30) for cid in ids)
            )
        return [r.status_code for r in responses]

    codes = asyncio.run(race())
    assert codes.count(200) == 1 and all(code == 409 for code in codes if code != 200), codes
