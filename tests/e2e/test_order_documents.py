"""Stored order documents: a GET reads the document every change rewrote; it must be exactly the order
rendered from its rows, whatever happened to the order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from stateset_server.core.errors import ApiError
from stateset_server.orders import lifecycle
from stateset_server.payments import ledger
from stateset_server.payments import service as payments
from stateset_server.payments.fees import FeeSchedule
from stateset_server.storage import with_database
from stateset_server.storage.packing import unpack
from stateset_server.workspaces.keys import Principal
from tests.e2e.lifecycle_support import PATHS, WALLET, act, balance, execute, fund, new_order, order_in
from tests.support import Workspace, run


def _forget_document(ws: Workspace, order_id: str) -> None:
    """Make the order look like one written before documents existed: GET then renders it from rows."""
    execute(ws, "UPDATE orders SET document = NULL WHERE id = $1", order_id)


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


def test_concurrent_commands_on_one_order_apply_once(ws: Workspace) -> None:
    """Commands decided ahead of the write transaction (lifecycle._prepare) are written only if the
    order is still the one they were decided on; the others are decided again in the transaction."""
    order = order_in(ws, "PAID")
    actions = ["fulfill"] * 8 + ["hold"] * 4
    with ThreadPoolExecutor(len(actions)) as pool:
        responses = list(pool.map(lambda action: act(ws.client(), order["id"], action), actions))
    assert sorted({r.status_code for r in responses}) in ([200], [200, 409]), [r.text for r in responses]
    won = [(action, r) for action, r in zip(actions, responses, strict=True) if r.status_code == 200]
    # PAID → FULFILLED and PAID → HELD are both legal, FULFILLED → HELD too, HELD → FULFILLED not: at
    # most one fulfil and one hold can succeed, and the first success is always legal.
    assert 1 <= len(won) <= 2 and len({action for action, _r in won}) == len(won)
    events = ws.client().get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"]
    types = [e["type"] for e in events]
    assert types.count("order.fulfilled") == sum(1 for a, _ in won if a == "fulfill")
    assert types.count("order.held") == sum(1 for a, _ in won if a == "hold")
    stored, rendered = _both_ways(ws, order["id"])
    assert stored == rendered
    assert [step["status"] for step in stored["timeline"]][-1] == stored["status"]


def test_a_command_decided_on_a_stale_order_writes_nothing(ws: Workspace) -> None:
    """A prepared command's version-checked write (Tx.guard) finds the order changed: on SQLite as the
    statement runs (None: nothing written); PostgreSQL, which sends the whole write as one statement
    at the end, fails that statement and runs the transaction function again."""
    order = order_in(ws, "PAID")
    principal = Principal("key_test", ws.id, "test", "secret", frozenset())
    calls: list[int] = []

    async def scenario(db):
        prepared = await lifecycle._prepare(db, principal, order["id"], lifecycle.fulfill(), "http://x")
        assert prepared is not None and prepared.after.status.value == "FULFILLED"
        await lifecycle.run(db, principal, order["id"], lifecycle.hold("check"), base_url="http://x", request_id=None)

        async def attempt(tx):
            calls.append(1)
            if len(calls) > 1:
                return "decided again"
            written = await lifecycle._write_prepared(tx, principal, prepared, None)
            return "stale" if written is None else "written"

        return await db.write(attempt)

    outcome = run(with_database(ws.server.database_url, scenario))
    if ws.server.database_url.startswith("postgresql"):
        assert (outcome, len(calls)) == ("decided again", 2)
    else:
        assert (outcome, len(calls)) == ("stale", 1)
    got = ws.client().get(f"/v1/orders/{order['id']}").json()
    assert got["status"] == "HELD"
    events = ws.client().get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"]
    assert "order.fulfilled" not in [e["type"] for e in events]


def test_a_command_prepared_on_a_stale_order_is_decided_again(ws: Workspace, monkeypatch) -> None:
    """`lifecycle.run` given a prepared command whose order changed meanwhile decides it again on the
    order as it is now, in the same request: the change made meanwhile is kept."""
    order = order_in(ws, "PAID")
    principal = Principal("key_test", ws.id, "test", "secret", frozenset())
    edit = lifecycle.update(principal, metadata={"gift": "yes"}, addresses={}, notes=None, status=None, reason=None)

    async def scenario(db):
        stale = await lifecycle._prepare(db, principal, order["id"], lifecycle.fulfill(), "http://x")
        assert stale is not None
        await lifecycle.run(db, principal, order["id"], edit, base_url="http://x", request_id=None)

        async def prepare_stale(*_args):
            return stale

        monkeypatch.setattr(lifecycle, "_prepare", prepare_stale)
        shown, _ = await lifecycle.run(
            db, principal, order["id"], lifecycle.fulfill(), base_url="http://x", request_id=None
        )
        return shown

    shown = run(with_database(ws.server.database_url, scenario))
    assert shown.status == "FULFILLED" and shown.metadata == {"gift": "yes"}
    got = ws.client().get(f"/v1/orders/{order['id']}").json()
    assert got["status"] == "FULFILLED" and got["metadata"] == {"gift": "yes"}
    events = ws.client().get("/v1/events", params={"object_id": order["id"], "limit": 100}).json()["data"]
    assert [e["type"] for e in events].count("order.fulfilled") == 1
    stored, rendered = _both_ways(ws, order["id"])
    assert stored == rendered


def test_concurrent_payments_move_money_once(ws: Workspace) -> None:
    """Payments predicted ahead of the write transaction (lifecycle.predicted) still charge exactly
    once, and a wallet that runs dry meanwhile refuses the rest."""
    client = ws.client()
    pay = {"payment_method": {"type": "usdc", "wallet_address": WALLET}}
    warm = new_order(client, "1.00")  # creates the ledger accounts, so the next payments are predicted
    fund(client, WALLET, warm["total"])
    assert act(client, warm["id"], "pay", pay).status_code == 200
    first, second = new_order(client, "10.00"), new_order(client, "10.00")
    fund(client, WALLET, first["total"])  # enough for one of them
    attempts = [first["id"], second["id"]] * 5
    with ThreadPoolExecutor(len(attempts)) as pool:
        responses = list(pool.map(lambda order_id: act(ws.client(), order_id, "pay", pay), attempts))
    paid = [r.json() for r in responses if r.status_code == 200]
    assert len(paid) == 1, [r.text for r in responses]
    refused = {r.json()["error"]["code"] for r in responses if r.status_code != 200}
    assert refused <= {"RESOURCE_CONFLICT", "PAYMENT_FAILED"}, refused
    assert balance(client, WALLET) == "0.00"
    order_id = paid[0]["order_id"]
    events = client.get("/v1/events", params={"type": "order.paid", "limit": 100}).json()["data"]
    assert sorted(e["data"]["object"]["id"] for e in events) == sorted([warm["id"], order_id])
    stored, rendered = _both_ways(ws, order_id)
    assert stored == rendered and stored["status"] == "PAID"
    assert stored["payments"][0]["transaction_hash"] == paid[0]["transaction_hash"]


def _pay_request() -> payments.PaymentRequest:
    return payments.PaymentRequest("usdc", None, wallet_address=WALLET)


def test_a_predicted_payment_records_the_ledger_rows_it_predicted(ws: Workspace, monkeypatch) -> None:
    """A payment predicted ahead (`Outcome.writes`) is written as predicted: its ledger transaction
    carries the payment's hash, its entries balance, and the wallet is debited once."""
    client = ws.client()
    warm = new_order(client, "1.00")  # creates the ledger accounts, so the next payment is predicted
    fund(client, WALLET, warm["total"])
    assert act(client, warm["id"], "pay", {"payment_method": {"type": "usdc", "wallet_address": WALLET}}).is_success
    order = new_order(client, "10.00")
    fund(client, WALLET, order["total"])
    principal = Principal("key_test", ws.id, "test", "secret", frozenset())

    async def scenario(db):
        accounts = await ledger.committed_account_ids(db, principal, payments.charge_accounts(_pay_request()))
        decide = lifecycle.pay(principal, _pay_request(), FeeSchedule(), accounts=accounts)
        prepare, seen = lifecycle._prepare, []

        async def spy(*args):
            seen.append(await prepare(*args))
            return seen[-1]

        monkeypatch.setattr(lifecycle, "_prepare", spy)
        shown, outcome = await lifecycle.run(db, principal, order["id"], decide, base_url="http://x", request_id=None)
        rows = await db.read(
            lambda tx: tx.fetch(
                "SELECT t.hash, e.amount FROM ledger_transactions t JOIN ledger_entries e ON e.transaction_id = t.id"
                " WHERE t.reference = $1",
                outcome.payment.id,
            )
        )
        [prepared] = seen
        assert prepared is not None and prepared.outcome.writes is not None
        return shown, outcome, prepared.outcome.payment, rows

    shown, outcome, predicted, rows = run(with_database(ws.server.database_url, scenario))
    assert shown.status == "PAID" and outcome.payment == predicted
    assert {row[0] for row in rows} == {predicted.transaction_hash} and sum(row[1] for row in rows) == 0
    assert len(rows) == 3 and balance(client, WALLET) == "0.00"
    stored, rendered = _both_ways(ws, order["id"])
    assert stored == rendered and stored["payments"][0]["id"] == predicted.id


def test_a_payment_predicted_before_its_wallet_ran_dry_is_refused_and_writes_nothing(
    ws: Workspace, monkeypatch
) -> None:
    """A payment prepared while its wallet held enough, written after another payment emptied it:
    the prepared write's guard fails, the command is decided again in the same request and refused
    (PAYMENT_FAILED), and neither the order, the ledger nor the payments change."""
    client = ws.client()
    pay = {"payment_method": {"type": "usdc", "wallet_address": WALLET}}
    warm = new_order(client, "1.00")
    fund(client, WALLET, warm["total"])
    assert act(client, warm["id"], "pay", pay).is_success
    late, first = new_order(client, "10.00"), new_order(client, "10.00")
    fund(client, WALLET, late["total"])  # enough for one of them
    principal = Principal("key_test", ws.id, "test", "secret", frozenset())

    async def scenario(db):
        accounts = await ledger.committed_account_ids(db, principal, payments.charge_accounts(_pay_request()))
        decide = lifecycle.pay(principal, _pay_request(), FeeSchedule(), accounts=accounts)
        stale = await lifecycle._prepare(db, principal, late["id"], decide, "http://x")
        assert stale is not None and stale.outcome.writes is not None
        assert act(ws.client(), first["id"], "pay", pay).is_success  # empties the wallet meanwhile

        async def prepare_stale(*_args):
            return stale

        monkeypatch.setattr(lifecycle, "_prepare", prepare_stale)
        with pytest.raises(ApiError) as refused:
            await lifecycle.run(db, principal, late["id"], decide, base_url="http://x", request_id=None)
        written = await db.read(
            lambda tx: tx.fetchval(
                "SELECT count(*) FROM ledger_transactions WHERE reference = $1", stale.outcome.payment.id
            )
        )
        return refused.value, written

    refused, written = run(with_database(ws.server.database_url, scenario))
    assert refused.code == "PAYMENT_FAILED" and refused.details["reason"] == "insufficient_funds", refused
    assert written == 0 and balance(client, WALLET) == "0.00"
    got = client.get(f"/v1/orders/{late['id']}").json()
    assert (got["status"], got["payments"], got["amount_paid"]) == ("CREATED", [], late["amount_paid"])
    events = client.get("/v1/events", params={"object_id": late["id"], "limit": 100}).json()["data"]
    assert [e["type"] for e in events] == ["order.created"]


def _stored(ws: Workspace, sql: str, *args: object) -> bytes | str:
    async def read(db):
        return await db.read(lambda tx: tx.fetchval(sql, *args))

    return run(with_database(ws.server.database_url, read))


def _restore(ws: Workspace, sql: str, value: bytes, *args: object) -> None:
    """Write `value` (plain JSON) as a row written before packing holds it: TEXT on SQLite, its
    bytes on PostgreSQL (what migration 13 made of the text)."""
    execute(ws, sql, value if ws.server.database_url.startswith("postgresql") else value.decode(), *args)


def test_documents_are_stored_packed_and_those_stored_before_packing_read_the_same(ws: Workspace) -> None:
    client = ws.client()
    created = client.post(
        "/v1/orders",
        json={"currency": "USD", "items": [{"sku": "A", "quantity": 2, "price": "4.50"}], "metadata": {"k": "é"}},
        headers={"Idempotency-Key": "packed-create"},
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    order = client.get(f"/v1/orders/{order_id}").json()
    event = client.get("/v1/events", params={"limit": 1}).json()["data"][0]
    assert event["data"]["object"]["id"] == order_id

    document = _stored(ws, "SELECT document FROM orders WHERE id = $1", order_id)
    for sql, form in (
        ("SELECT document FROM orders WHERE id = $1", b"\x01"),
        ("SELECT data FROM events WHERE object_id = $1", b"\x01"),
        # The response: the document's packed frame again, then its payment_url in clear.
        ("SELECT response FROM idempotency_keys WHERE key = 'packed-create' AND $1 <> ''", b"\x02"),
    ):
        stored = _stored(ws, sql, order_id)
        assert isinstance(stored, bytes) and stored[:1] == form, sql
        assert len(stored) < len(unpack(stored)) / 2, sql
    response = _stored(ws, "SELECT response FROM idempotency_keys WHERE key = 'packed-create' AND $1 <> ''", order_id)
    assert document[1:] in response and unpack(response) == created.content

    for table, column, where in (
        ("orders", "document", "id = $2"),
        ("events", "data", "object_id = $2"),
        ("idempotency_keys", "response", "key = 'packed-create' AND $2 <> ''"),
    ):
        plain = unpack(_stored(ws, f"SELECT {column} FROM {table} WHERE {where.replace('$2', '$1')}", order_id))
        _restore(ws, f"UPDATE {table} SET {column} = $1 WHERE {where}", plain, order_id)

    assert client.get(f"/v1/orders/{order_id}").json() == order
    assert client.get(f"/v1/events/{event['id']}").json() == event
    replayed = client.post(
        "/v1/orders",
        json={"currency": "USD", "items": [{"sku": "A", "quantity": 2, "price": "4.50"}], "metadata": {"k": "é"}},
        headers={"Idempotency-Key": "packed-create"},
    )
    assert replayed.status_code == 201 and replayed.content == created.content
    cancelled = act(client, order_id, "cancel", {})  # a change reads the old document, packs the new one
    assert cancelled.status_code == 200, cancelled.text
    assert isinstance(_stored(ws, "SELECT document FROM orders WHERE id = $1", order_id), bytes)
    assert [s["status"] for s in client.get(f"/v1/orders/{order_id}").json()["timeline"]] == ["CREATED", "CANCELLED"]
