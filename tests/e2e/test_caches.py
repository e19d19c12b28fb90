"""Per-process caches (API keys and plans, the catalogue) never serve what another process changed:
two servers on one database, a change through one, the next request through the other."""

from __future__ import annotations

import time

import httpx

from stateset_server.storage import with_database
from stateset_server.workspaces import service
from tests.conftest import PRICING_ENV, servers_on_new_database
from tests.support import run


def _eventually(engine: str, check, seconds: float = 1.0):
    """SQLite's markers change at the commit; PostgreSQL's when the NOTIFY arrives (allowed a second)."""
    deadline = time.monotonic() + (seconds if engine == "postgres" else 0)
    while True:
        result = check()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(0.005)


def _new_key(url: str) -> str:
    async def setup(db):
        workspace_id = await service.create_workspace(db, "caches")
        return (await service.create_key(db, workspace_id=workspace_id, mode="test", kind="secret")).secret

    return run(with_database(url, setup))


def test_a_product_made_through_one_server_prices_the_next_order_on_another(engine: str, tmp_path) -> None:
    with servers_on_new_database(engine, str(tmp_path), PRICING_ENV, count=2) as (one, other):
        auth = {"Authorization": f"Bearer {_new_key(one.database_url)}"}
        with (
            httpx.Client(base_url=one.base_url, headers=auth) as a,
            httpx.Client(base_url=other.base_url, headers=auth) as b,
        ):
            item = {"sku": "CACHED-1", "quantity": 1}
            for _ in range(20):  # the SKU is unknown: a price is needed, and server A caches "unknown"
                assert a.post("/v1/orders", json={"currency": "USD", "items": [item]}).status_code == 422
                time.sleep(0.02)
            made = b.post(
                "/v1/products",
                json={
                    "sku": "CACHED-1",
                    "name": "Cached",
                    "price": "7.00",
                    "currency": "USD",
                    "track_inventory": False,
                },
            )
            assert made.status_code == 201, made.text

            def priced() -> bool:
                response = a.post("/v1/orders", json={"currency": "USD", "items": [item]})
                return response.status_code == 201 and response.json()["items"][0]["unit_price"] == "7.00"

            assert _eventually(engine, priced)
            changed = b.patch("/v1/products/CACHED-1", json={"price": "8.00"})
            assert changed.status_code == 200, changed.text

            def repriced() -> bool:
                response = a.post("/v1/orders", json={"currency": "USD", "items": [item]})
                return response.status_code == 201 and response.json()["items"][0]["unit_price"] == "8.00"

            assert _eventually(engine, repriced)


def test_an_endpoint_made_through_one_server_receives_the_next_event_on_another(engine: str, tmp_path) -> None:
    env = {**PRICING_ENV, "STATESET_WEBHOOK_ALLOW_PRIVATE": "true", "STATESET_WEBHOOK_WORKER": "external"}
    with servers_on_new_database(engine, str(tmp_path), env, count=2) as (one, other):
        auth = {"Authorization": f"Bearer {_new_key(one.database_url)}"}
        order = {"currency": "USD", "items": [{"sku": "A", "quantity": 1, "price": "1.00"}]}
        with (
            httpx.Client(base_url=one.base_url, headers=auth) as a,
            httpx.Client(base_url=other.base_url, headers=auth) as b,
        ):
            for _ in range(20):  # server A caches "no endpoints" for the workspace
                assert a.post("/v1/orders", json=order).status_code == 201
                time.sleep(0.02)
            made = b.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["order.created"]})
            assert made.status_code == 201, made.text
            endpoint = made.json()["id"]

            def deliveries() -> set[str]:
                listed = b.get(f"/v1/webhooks/{endpoint}/deliveries", params={"limit": 100}).json()["data"]
                return {d["event_id"] for d in listed}

            def delivered() -> bool:  # the next order's event is queued for the new endpoint
                event = a.post("/v1/orders", json=order).json()["timeline"][0]["event_id"]
                return event in deliveries()

            assert _eventually(engine, delivered)
            disabled = b.patch(f"/v1/webhooks/{endpoint}", json={"enabled": False})
            assert disabled.status_code == 200, disabled.text

            def stopped() -> bool:  # and once it is disabled, no longer
                event = a.post("/v1/orders", json=order).json()["timeline"][0]["event_id"]
                return event not in deliveries()

            assert _eventually(engine, stopped)


def test_an_email_whose_customer_changed_through_one_server_links_the_right_customer_on_another(
    engine: str, tmp_path
) -> None:
    with servers_on_new_database(engine, str(tmp_path), PRICING_ENV, count=2) as (one, other):
        auth = {"Authorization": f"Bearer {_new_key(one.database_url)}"}

        def order(email: str) -> dict:
            return {"currency": "USD", "customer_email": email, "items": [{"sku": "A", "quantity": 1, "price": "1.00"}]}

        with (
            httpx.Client(base_url=one.base_url, headers=auth) as a,
            httpx.Client(base_url=other.base_url, headers=auth) as b,
        ):
            first = a.post("/v1/orders", json=order("Ann@Example.com")).json()["customer_id"]
            for _ in range(5):  # server A now knows which customer the email belongs to
                assert a.post("/v1/orders", json=order("ann@example.com")).json()["customer_id"] == first
            moved = b.patch(f"/v1/customers/{first}", json={"email": "ann.new@example.com"})
            assert moved.status_code == 200, moved.text

            def linked(email: str, expected) -> bool:
                return expected(a.post("/v1/orders", json=order(email)).json()["customer_id"])

            # The old email is nobody's now: a new customer; the new one is the first customer's.
            assert _eventually(engine, lambda: linked("ann@example.com", lambda got: got != first))
            second = a.post("/v1/orders", json=order("ann@example.com")).json()["customer_id"]
            assert second != first
            assert linked("ann.new@example.com", lambda got: got == first)
            deleted = b.delete(f"/v1/customers/{second}")
            assert deleted.status_code == 200, deleted.text
            assert _eventually(engine, lambda: linked("ann@example.com", lambda got: got not in (first, second)))
