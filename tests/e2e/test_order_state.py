"""An order's stored state (`orders.state`, `repository.state_of`): a command prepared ahead of its
transaction decodes it instead of reading the order's columns, items and payments. Whatever happened
to the order, it must be exactly the order those give, on both engines; an order without a state,
or with one left behind by an older version, is read from its rows."""

from __future__ import annotations

import pytest

from stateset_server.orders import repository
from stateset_server.orders.model import Order
from stateset_server.storage import with_database
from tests.e2e.lifecycle_support import PATHS, WALLET, act, execute, fund, new_order, order_in
from tests.e2e.test_inventory import product
from tests.support import Workspace, run


def _both_reads(ws: Workspace, order_id: str) -> tuple[Order | None, Order | None]:
    """The order as a prepared command reads it, and as a command inside its transaction does (the
    row held, everything read from the rows)."""

    async def reads(db) -> tuple[Order | None, Order | None]:
        prepared = await repository.read_order(db, ws.id, "test", order_id)
        held = await db.write(lambda tx: repository.get_order(tx, ws.id, "test", order_id, for_update=True))
        return prepared, held

    return run(with_database(ws.server.database_url, reads))


def _state(ws: Workspace, order_id: str) -> bytes | None:
    async def read(db) -> bytes | None:
        return await db.read(lambda tx: tx.fetchval("SELECT state FROM orders WHERE id = $1", order_id))

    return run(with_database(ws.server.database_url, read))


@pytest.mark.parametrize("status", sorted(PATHS))
def test_the_stored_state_is_the_order_read_from_its_rows(ws: Workspace, status: str) -> None:
    order = order_in(ws, status)
    prepared, held = _both_reads(ws, order["id"])
    assert prepared is not None and prepared == held
    assert prepared.status.value == status and prepared.document is not None
    state = _state(ws, order["id"])  # the read above took it: it is there, at the row's version
    assert state is not None and repository._order_of_state(state, None, []).version == prepared.version


def test_states_follow_partial_payments_refunds_edits_and_reservations(ws: Workspace) -> None:
    client = ws.client()
    product(client, "LAMP", stock=5, track_inventory=True)
    created = client.post(
        "/v1/orders",
        json={
            "currency": "USDC",
            "items": [{"sku": "LAMP", "quantity": 2, "price": "15.00", "metadata": {"colour": "red", "n": 1.5}}],
            "shipping_address": {"city": "Oslo", "country": "no"},
        },
    )
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]
    fund(client, WALLET, "100")
    paid = act(client, order_id, "pay", {"payment_method": {"type": "usdc", "wallet_address": WALLET}, "amount": "10"})
    assert paid.status_code == 200, paid.text
    prepared, held = _both_reads(ws, order_id)
    assert prepared == held and prepared is not None
    assert prepared.held and prepared.amount_paid == 10_000_000 and len(prepared.payments) == 1
    edited = client.patch(f"/v1/orders/{order_id}", json={"metadata": {"gift": "yes"}, "notes": "ring twice"})
    assert edited.status_code == 200, edited.text
    rest = act(client, order_id, "pay", {"payment_method": {"type": "usdc", "wallet_address": WALLET}})
    assert rest.status_code == 200, rest.text
    refunded = act(client, order_id, "refund", {"amount": "5"})
    assert refunded.status_code == 200, refunded.text
    prepared, held = _both_reads(ws, order_id)
    assert prepared == held and prepared is not None
    assert prepared.metadata == {"gift": "yes"} and prepared.notes == "ring twice"
    assert [p.amount_refunded for p in prepared.payments] == [0, 5_000_000]


def test_an_order_without_a_state_is_read_from_its_rows_until_its_next_change(ws: Workspace) -> None:
    client = ws.client()
    order = new_order(client)
    execute(ws, "UPDATE orders SET state = NULL WHERE id = $1", order["id"])  # as before migration 16
    prepared, held = _both_reads(ws, order["id"])
    assert prepared == held and prepared is not None
    assert act(client, order["id"], "cancel").status_code == 200
    assert _state(ws, order["id"]) is not None
    prepared, held = _both_reads(ws, order["id"])
    assert prepared == held and prepared is not None and prepared.status.value == "CANCELLED"


def test_a_state_behind_the_rows_version_is_not_used(ws: Workspace) -> None:
    """A state written by an older version of the order (as a writer that changed the row but not its
    state would leave it) is told by its version, and the order is read from its rows."""
    client = ws.client()
    order = order_in(ws, "PAID")
    paid_state = _state(ws, order["id"])
    assert paid_state is not None
    assert act(client, order["id"], "hold", {"reason": "check"}).status_code == 200
    execute(ws, "UPDATE orders SET state = $2 WHERE id = $1", order["id"], paid_state)
    prepared, held = _both_reads(ws, order["id"])
    assert prepared == held and prepared is not None and prepared.status.value == "HELD"
    released = act(client, order["id"], "release")  # decided on the order read from its rows
    assert released.status_code == 200, released.text


def test_another_workspaces_order_reads_as_absent(ws: Workspace, other_ws: Workspace) -> None:
    order = new_order(other_ws.client())

    async def read(db) -> Order | None:
        return await repository.read_order(db, ws.id, "test", order["id"])

    assert run(with_database(ws.server.database_url, read)) is None


def test_a_damaged_state_is_not_used(ws: Workspace) -> None:
    order = order_in(ws, "PAID")
    state = _state(ws, order["id"])
    assert state is not None
    for damaged in (state[: len(state) // 2], state[:4] + b"\xc1" + state[5:]):  # cut short; 0xc1: never valid
        execute(ws, "UPDATE orders SET state = $2 WHERE id = $1", order["id"], damaged)
        prepared, held = _both_reads(ws, order["id"])
        assert prepared == held and prepared is not None and prepared.status.value == "PAID"


def test_a_state_of_another_shape_is_not_used(ws: Workspace) -> None:
    """A state written when the domain's types had other fields (another version of the server) is
    told by its first 4 bytes, and the order is read from its rows."""
    order = order_in(ws, "PAID")
    state = _state(ws, order["id"])
    assert state is not None
    execute(ws, "UPDATE orders SET state = $2 WHERE id = $1", order["id"], b"\x00\x00\x00\x00" + state[4:])
    prepared, held = _both_reads(ws, order["id"])
    assert prepared == held and prepared is not None and prepared.status.value == "PAID"
    assert act(ws.client(), order["id"], "fulfill").status_code == 200
    assert _state(ws, order["id"])[:4] == state[:4]  # written again in the current shape
