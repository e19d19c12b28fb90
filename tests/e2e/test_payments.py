"""Payments (USDC on the ledger, test cards), partial payments, refunds and their caps, concurrency."""

from __future__ import annotations

import asyncio
import concurrent.futures
from decimal import Decimal

import httpx
import pytest

from stateset_server.storage import with_database
from tests.e2e.lifecycle_support import EVM_WALLET, WALLET, act, balance, fund, new_order, order_in
from tests.support import Workspace, run


def ledger_sums(ws: Workspace) -> tuple[int, int]:
    """(sum of all entries, number of unbalanced transactions) — read straight from the database."""

    async def sums(tx):
        total = await tx.fetchval("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries")
        unbalanced = await tx.fetch(
            "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id HAVING SUM(amount) <> 0"
        )
        return int(total), len(unbalanced)

    return run(with_database(ws.server.database_url, lambda db: db.read(sums)))


def broken_links(ws: Workspace) -> int:
    """Ledger entries whose account or transaction, and payments whose order, are missing or in
    another workspace or mode. PostgreSQL has no foreign keys on these (its migration 12 says why),
    so the writes themselves must keep the links."""

    links = (
        "SELECT (SELECT count(*) FROM ledger_entries e"
        "   LEFT JOIN ledger_transactions t ON t.id = e.transaction_id"
        "   LEFT JOIN ledger_accounts a ON a.id = e.account_id"
        "   WHERE t.id IS NULL OR a.id IS NULL"
        "   OR a.workspace_id <> t.workspace_id OR a.mode <> t.mode)"
        " + (SELECT count(*) FROM payments p LEFT JOIN orders o ON o.id = p.order_id"
        "   WHERE o.id IS NULL OR o.workspace_id <> p.workspace_id OR o.mode <> p.mode)"
    )
    return int(run(with_database(ws.server.database_url, lambda db: db.read(lambda tx: tx.fetchval(links)))))


def test_usdc_payment_moves_money_on_a_balanced_ledger(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "100")
    order = new_order(client, "40.00")  # 40.00 + 8.75 % tax + 9.99 shipping
    assert order["total"] == "53.49"
    response = act(client, order["id"], "pay", {"payment_method": {"type": "usdc", "wallet_address": WALLET}})
    assert response.status_code == 200, response.text
    paid = response.json()
    assert paid["payment_id"].startswith("pay_") and paid["order_id"] == order["id"]
    assert (paid["status"], paid["amount"], paid["currency"]) == ("PAID", "53.49", "USDC")
    assert paid["fees"] == {"network_fee": "0.01", "processing_fee": "0.00"}
    assert paid["transaction_hash"].startswith("0x") and len(paid["transaction_hash"]) == 66
    assert paid["paid_at"].endswith("Z")
    assert balance(client, WALLET) == "46.51"
    shown = client.get(f"/v1/orders/{order['id']}").json()
    assert shown["payment"] | {"paid_at": None} == {
        "id": paid["payment_id"],
        "status": "PAID",
        "amount": "53.49",
        "method": "USDC",
        "paid_at": None,
        "transaction_hash": paid["transaction_hash"],
    }
    assert shown["payments"][0]["wallet_address"] == WALLET
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_evm_wallets_and_address_validation(ws: Workspace) -> None:
    client = ws.client()
    fund(client, EVM_WALLET.lower(), "20")  # stored under the EIP-55 form
    assert balance(client, EVM_WALLET) == "20.00"
    order = new_order(client, "1.00")
    assert act(client, order["id"], "pay", {"payment_method": {"wallet_address": EVM_WALLET}}).status_code == 200
    for bad in (
        "stateset1vd6hxar0d4jhyh6lta047h6lta047h6ld4snta",  # one character changed: checksum fails
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # wrong EIP-55 case
        "0x123",
        "cosmos1abc",
    ):
        response = act(client, new_order(client)["id"], "pay", {"payment_method": {"wallet_address": bad}})
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"]["field"] == "payment_method.wallet_address"


def test_insufficient_balance_is_402_and_moves_nothing(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "5")
    order = new_order(client, "10.00")
    response = act(client, order["id"], "pay", {"payment_method": {"type": "usdc", "wallet_address": WALLET}})
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == "PAYMENT_FAILED" and error["details"]["reason"] == "insufficient_funds"
    assert error["details"]["available"] == "5.00" and error["details"]["required"] == order["total"]
    assert balance(client, WALLET) == "5.00"
    after = client.get(f"/v1/orders/{order['id']}").json()
    assert (after["status"], after["amount_paid"], after["payments"]) == ("CREATED", "0.00", [])
    assert [e["type"] for e in client.get("/v1/events", params={"object_id": order["id"]}).json()["data"]] == [
        "order.created"
    ]
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_partial_payments_add_up_to_paid(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "100")
    order = new_order(client, "20.00")  # total 31.74
    first = act(client, order["id"], "pay", {"payment_method": {"wallet_address": WALLET, "amount": "10.00"}}).json()
    assert (first["status"], first["amount_paid"], first["amount_due"]) == ("CREATED", "10.00", "21.74")
    assert first["order"]["payment"]["status"] == "PARTIALLY_PAID"
    too_much = act(client, order["id"], "pay", {"amount": "21.75", "payment_method": {"wallet_address": WALLET}})
    assert too_much.status_code == 422 and too_much.json()["error"]["details"]["field"] == "amount"
    second = act(client, order["id"], "pay", {"method": "usdc", "amount": "21.74", "wallet_address": WALLET}).json()
    assert (second["status"], second["amount_paid"], second["amount_due"]) == ("PAID", "31.74", "0.00")
    events = [e["type"] for e in client.get("/v1/events", params={"object_id": order["id"]}).json()["data"]]
    assert events == ["order.paid", "order.updated", "order.created"]
    assert balance(client, WALLET) == "68.26"
    again = act(client, order["id"], "pay", {"payment_method": {"wallet_address": WALLET}})
    assert again.status_code == 409


def test_the_sdk_pay_shape_without_a_wallet_uses_the_sandbox_wallet(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client, "999.99")
    response = act(client, order["id"], "pay", {"payment_method": {"type": "usdc", "amount": order["total"]}})
    assert response.status_code == 200 and response.json()["status"] == "PAID"
    assert response.json()["payment"]["wallet_address"] is None
    live = ws.client(ws.key("secret", "live"))
    live_order = new_order(live)
    refused = act(live, live_order["id"], "pay", {"payment_method": {"type": "usdc"}})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "MISSING_REQUIRED_FIELD"
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


@pytest.mark.parametrize(
    ("card", "status", "reason"),
    [
        ({"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}, 200, None),
        ({"number": "4000000000000002"}, 402, "card_declined"),
        ({"number": "4000000000009995"}, 402, "insufficient_funds"),
        ({"number": "4000000000000127", "cvc": "999"}, 402, "incorrect_cvc"),
        ({"number": "5555555555554444"}, 402, "test_mode_live_card"),
        ({"token": "tok_secure_token", "last4": "4242", "brand": "visa"}, 200, None),
        ({"token": "tok_x", "last4": "0002"}, 402, "card_declined"),
    ],
)
def test_test_cards(ws: Workspace, card: dict, status: int, reason: str | None) -> None:
    client = ws.client()
    order = new_order(client, "12.00", currency="USD")
    response = act(client, order["id"], "pay", {"payment_method": {"type": "card", **card}})
    assert response.status_code == status, response.text
    if status == 200:
        payment = response.json()["payment"]
        assert payment["method"] == "card" and payment["card"]["last4"] == (card.get("last4") or "4242")
        assert response.json()["fees"] == {"network_fee": "0.00", "processing_fee": "0.00"}
    else:
        assert response.json()["error"]["details"]["reason"] == reason
        assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "CREATED"


def test_malformed_cards_and_mismatched_methods_are_422(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client, "12.00", currency="USD")
    for body, field in (
        ({"payment_method": {"type": "card", "number": "4242424242424241"}}, "payment_method.number"),
        ({"payment_method": {"type": "card"}}, "payment_method"),
        ({"payment_method": {"type": "usdc"}}, "payment_method.type"),  # USDC pays USDC orders only
        ({"payment_method": {"type": "bitcoin"}}, "payment_method.type"),
        ({"currency": "EUR", "payment_method": {"type": "card", "number": "4242424242424242"}}, "currency"),
        ({"amount": "1.001", "payment_method": {"type": "card", "number": "4242424242424242"}}, "amount"),
    ):
        response = act(client, order["id"], "pay", body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["details"]["field"] == field


def test_simulated_failure_and_live_cards(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client)
    failed = act(client, order["id"], "pay", {"test_mode": "fail"})
    assert failed.status_code == 402 and failed.json()["error"]["details"]["reason"] == "test_mode_fail"
    live = ws.client(ws.key("secret", "live"))
    live_order = new_order(live, currency="USD")
    declined = act(live, live_order["id"], "pay", {"payment_method": {"type": "card", "number": "4242424242424242"}})
    assert declined.status_code == 402 and declined.json()["error"]["details"]["reason"] == "processor_unavailable"
    assert act(live, live_order["id"], "pay", {"test_mode": "fail"}).status_code == 422


def test_create_and_pay_is_all_or_nothing(ws: Workspace) -> None:
    client = ws.client()
    body = {
        "items": [{"sku": "LAPTOP-001", "quantity": 1, "price": "999.99"}],
        "customer": {"id": "cust_123", "email": "customer@example.com"},
        "payment": {"method": "usdc", "amount": "1097.479125"},
        "shipping": {"address": "123 Main St, San Francisco, CA 94105", "method": "standard"},
    }
    created = client.post("/v1/orders", json=body)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "PAID" and order["payment"]["status"] == "PAID"
    assert [s["status"] for s in order["timeline"]] == ["CREATED", "PAID"]
    before = client.get("/v1/events", params={"limit": 100}).json()["data"]
    for failing in (
        {**body, "payment": {"test_mode": "fail"}},
        {**body, "payment": {"payment_method": {"type": "usdc", "wallet_address": WALLET}}},  # unfunded
        {**body, "currency": "USD", "payment": {"payment_method": {"type": "card", "number": "4000000000000002"}}},
    ):
        response = client.post("/v1/orders", json=failing)
        assert response.status_code == 402, response.text
    assert client.get("/v1/events", params={"limit": 100}).json()["data"] == before
    # The failed creates took no number on SQLite; on PostgreSQL, like a sequence, numbers they took
    # are skipped (the counter's row lock is not held until the order commits).
    next_number = client.post("/v1/orders", json={"items": body["items"]}).json()["order_number"]
    if ws.server.database_url.startswith("sqlite"):
        assert next_number == order["order_number"] + 1
    else:
        assert next_number > order["order_number"]
    wrong_amount = client.post("/v1/orders", json={**body, "payment": {"method": "usdc", "amount": "5000"}})
    assert wrong_amount.status_code == 422 and wrong_amount.json()["error"]["details"]["field"] == "amount"
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_refunds_are_capped_cumulative_and_go_back_to_the_wallet(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "100")
    order = order_in(ws, "DELIVERED")  # paid from the sandbox wallet
    returned = new_order(client, "20.00")
    act(client, returned["id"], "pay", {"payment_method": {"wallet_address": WALLET}})
    for action in ("fulfill", "ship", "deliver"):
        act(client, returned["id"], action)
    assert balance(client, WALLET) == "68.26"

    partial = act(client, returned["id"], "refund", {"amount": "10.00", "reason": "damaged"}).json()
    assert (partial["amount"], partial["order"]["status"], partial["order"]["amount_refunded"]) == (
        "10.00",
        "DELIVERED",
        "10.00",
    )
    assert partial["order"]["payment"]["status"] == "PARTIALLY_REFUNDED"
    over = act(client, returned["id"], "refund", {"amount": "21.75"})
    assert over.status_code == 422 and over.json()["error"]["details"]["expected"] == "at most 21.74"
    # Everything left, but the order is DELIVERED: a full refund needs it RETURNED first.
    assert act(client, returned["id"], "refund").status_code == 409
    act(client, returned["id"], "return", {"reason": "damaged"})
    for amount in ("0.01", "0.02"):
        assert act(client, returned["id"], "refund", {"amount": amount}).status_code == 200
    rest = act(client, returned["id"], "refund").json()
    assert rest["amount"] == "21.71" and rest["order"]["status"] == "REFUNDED"
    assert rest["order"]["amount_refunded"] == rest["order"]["amount_paid"] == "31.74"
    # Several partial refunds return every micro-unit, network fee included.
    assert balance(client, WALLET) == "100.00"
    nothing = act(client, returned["id"], "refund", {"amount": "0.01"})
    assert nothing.status_code == 409
    assert act(client, order["id"], "refund", {"amount": "0"}).status_code == 422
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_cancelling_a_paid_order_returns_the_money(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "50")
    order = new_order(client, "10.00")
    act(client, order["id"], "pay", {"payment_method": {"wallet_address": WALLET, "amount": "5.00"}})
    assert balance(client, WALLET) == "45.00"
    cancelled = act(client, order["id"], "cancel", {"reason": "customer request"}).json()
    assert cancelled["status"] == "CANCELLED" and cancelled["amount_refunded"] == "5.00"
    assert cancelled["status_reason"] == "customer request"
    assert balance(client, WALLET) == "50.00"
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_fifty_concurrent_payments_charge_an_order_once(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "1000")
    order = new_order(client, "10.00")

    def pay(_: int) -> httpx.Response:
        return httpx.post(
            f"{ws.server.base_url}/v1/orders/{order['id']}/pay",
            json={"payment_method": {"type": "usdc", "wallet_address": WALLET}},
            headers={"Authorization": f"Bearer {ws.secret}"},
            timeout=60,
        )

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(pay, range(50)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 49, statuses
    final = client.get(f"/v1/orders/{order['id']}").json()
    assert len(final["payments"]) == 1 and final["amount_paid"] == final["total"]
    assert Decimal(balance(client, WALLET)) == Decimal("1000") - Decimal(final["total"])
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_concurrent_payments_from_one_wallet_never_overdraw_it(ws: Workspace) -> None:
    client = ws.client()
    fund(client, WALLET, "50")
    orders = [new_order(client, "10.00") for _ in range(8)]  # 20.87 each with tax and shipping
    fits = int(Decimal("50") // Decimal(orders[0]["total"]))

    async def pay_all() -> list[int]:
        async with httpx.AsyncClient(
            base_url=ws.server.base_url, headers={"Authorization": f"Bearer {ws.secret}"}
        ) as c:
            responses = await asyncio.gather(
                *(
                    c.post(f"/v1/orders/{o['id']}/pay", json={"payment_method": {"wallet_address": WALLET}}, timeout=60)
                    for o in orders
                )
            )
        return sorted(r.status_code for r in responses)

    assert fits == 2 and run(pay_all()) == [200] * fits + [402] * (8 - fits)
    assert Decimal(balance(client, WALLET)) == 50 - fits * Decimal(orders[0]["total"])
    assert ledger_sums(ws) == (0, 0) and broken_links(ws) == 0


def test_no_card_number_reaches_the_database_or_the_logs(ws: Workspace) -> None:
    client = ws.client()
    numbers = ["4242424242424242", "4000000000000002", "4000000000009995", "4000000000000127"]
    for number in numbers:
        order = new_order(client, "3.00", currency="USD")
        act(client, order["id"], "pay", {"payment_method": {"type": "card", "number": number, "cvc": "737"}})

    async def everything(tx):
        text = []
        for table in ("orders", "order_items", "events", "payments", "refunds", "ledger_transactions"):
            text.extend(repr(tuple(row)) for row in await tx.fetch(f"SELECT * FROM {table}"))
        return "\n".join(text)

    stored = run(with_database(ws.server.database_url, lambda db: db.read(everything)))
    logs = "".join(ws.server.output)
    assert "4242" in stored  # the last four digits are kept, as a check that the dump saw the payments
    for number in numbers:
        assert number not in stored and number not in logs
        assert number[:12] not in stored


def test_a_payment_without_its_order_is_refused_by_sqlite_and_found_by_the_audit(ws: Workspace) -> None:
    """SQLite keeps the foreign keys; PostgreSQL dropped them (migration 12), and `broken_links`
    then finds a payment whose order is missing: the audit the other tests run can fail."""
    order = new_order(ws.client(), "1.00")

    def orphan():
        return with_database(
            ws.server.database_url,
            lambda db: db.write(
                lambda tx: tx.execute(
                    "INSERT INTO payments (workspace_id, mode, id, order_id, method, status, amount,"
                    " amount_refunded, currency, network_fee, processing_fee, created_at)"
                    " SELECT workspace_id, mode, 'pay_orphan', 'ord_missing', 'card', 'succeeded', 100, 0, 'USD',"
                    " 0, 0, created_at FROM orders WHERE id = $1",
                    order["id"],
                )
            ),
        )

    if ws.server.database_url.startswith("sqlite"):
        with pytest.raises(Exception, match="FOREIGN KEY"):
            run(orphan())
        assert broken_links(ws) == 0
    else:
        run(orphan())
        assert broken_links(ws) == 1
