"""The hot-path shortcuts are exact: the route index picks what Starlette's router picks, the stored
document round-trips, ids keep their shape, and the key-cache epoch is shared between processes."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Match

from stateset_server.app import API_ROUTES
from stateset_server.core.fastpath import RouteIndex
from stateset_server.core.ids import _base62, _digits, new_id, random_token
from stateset_server.orders.document import enclosed, render, respond, response_of
from stateset_server.orders.schemas import CustomerRef, OrderOut, ShippingDetails, TimelineEntry
from stateset_server.storage.epoch import FileEpochs
from stateset_server.storage.packing import Packed, unpack
from tests.support import from_base62

PAIRS = [(api, api.starlette_route()) for api in API_ROUTES]


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}


def _starlette_choice(method: str, path: str) -> object | None:
    scope = _scope(method, path)
    for _api, route in PAIRS:
        match, _child = route.matches(scope)
        if match is Match.FULL:
            return route
    return None


def _samples() -> list[tuple[str, str]]:
    concrete = [(api.method, re.sub(r"\{[^}]+\}", "x_1", api.path)) for api in API_ROUTES]
    # Static segments that also fit a parameter of another route (e.g. /v1/orders/bulk), wrong methods,
    # unknown paths and a trailing slash: the index must agree with Starlette on every one.
    extra = [(m, p) for _m, p in concrete for m in ("GET", "POST", "DELETE")]
    extra += [("GET", "/v1/nothing"), ("GET", "/v1/orders/"), ("GET", "/"), ("GET", "/v1/orders/a/b/c/d")]
    return concrete + extra


@pytest.mark.parametrize(("method", "path"), _samples())
def test_the_route_index_picks_what_the_router_picks(method: str, path: str) -> None:
    found = RouteIndex(PAIRS).find(_scope(method, path))
    expected = _starlette_choice(method, path)
    if expected is None:
        assert found is None
        return
    assert found is not None
    api, child = found
    assert (api.method, api.path) == (method, expected.path)
    assert child["path_params"] == expected.matches(_scope(method, path))[1]["path_params"]


def test_a_parameter_in_the_first_two_segments_is_refused() -> None:
    api = API_ROUTES[0]
    with pytest.raises(ValueError, match="must be fixed"):
        RouteIndex([(replace(api, path="/v1/{x}"), replace(api, path="/v1/{x}").starlette_route())])


def _order(metadata: dict) -> OrderOut:
    return OrderOut(
        id="ord_1", order_number=1001, status="CREATED", livemode=False, currency="USD", customer_id=None,
        customer_email="a@b.c", customer=CustomerRef(None, "a@b.c"), items=[], line_items=[], subtotal="1.00",
        tax="0.00", shipping="0.00", total="1.00", total_amount="1.00", shipping_address=None,
        shipping_method=None, billing_address=None, metadata=metadata, notes='"}', created_at="t",
        updated_at="t", amount_paid="0.00", amount_refunded="0.00", amount_due="1.00", payment=None,
        payments=[], shipping_details=ShippingDetails(None, None, None, None, None, None), status_reason=None,
        resume_status=None, paid_at=None, fulfilled_at=None, cancelled_at=None,
        timeline=[TimelineEntry("CREATED", "t", "order.created", "evt_1")],
        payment_url="http://old/pay/ord_1",
    )  # fmt: skip


@pytest.mark.parametrize("metadata", [{}, {"k": ',"payment_url":"http://evil"}'}, {',"payment_url":': "v"}])
def test_a_document_is_the_order_with_the_payment_url_of_the_request(metadata: dict) -> None:
    shown = _order(metadata)
    body = msgspec.json.decode(respond(unpack(render(shown).document), "https://shop.example", "ord_1"))
    expected = msgspec.to_builtins(shown) | {"payment_url": "https://shop.example/pay/ord_1"}
    assert body == expected


@pytest.mark.parametrize(
    "metadata", [{}, {"timeline": [1], ',"timeline":': ',"payment_url":'}, {"k": ',"timeline":[],"payment_url":"x"}'}]
)
def test_one_encoding_cut_three_ways_equals_three_encodings(metadata: dict) -> None:
    shown = _order(metadata)
    body, document, snapshot = render(shown)
    assert body == msgspec.json.encode(shown)
    assert unpack(document) == body[: body.rindex(b',"payment_url":')]
    assert snapshot == msgspec.json.encode(msgspec.structs.replace(shown, timeline=msgspec.UNSET))
    # The response is the body as is, with its stored form for idempotency: the document's frame
    # again, with the payment_url in clear.
    whole = response_of(shown)
    assert isinstance(whole, Packed) and whole.body == body and unpack(whole.stored) == body
    assert document[1:] in whole.stored and len(whole.stored) < len(document) + 100
    # Inside a larger body (pay's response): the same frame, the fields before it in clear.
    fields = {"object": "payment", "amount": "1.00", "payment": None}
    inside = enclosed(fields, "order", shown)
    assert isinstance(inside, Packed) and inside.body == msgspec.json.encode({**fields, "order": shown})
    assert unpack(inside.stored) == inside.body and document[1:] in inside.stored
    assert enclosed({}, "order", shown).body == b'{"order":' + body + b"}"
    # A changed copy carries nothing of the original: it is encoded afresh.
    changed = msgspec.structs.replace(shown, status="PAID")
    assert response_of(changed) is changed and enclosed(fields, "order", changed) == {**fields, "order": changed}


def test_ids_keep_their_shape_and_do_not_repeat() -> None:
    ids = [new_id("ord") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"ord_[0-9A-Za-z]{22}", i) for i in ids)
    assert _base62(0, 22) == "0" * 22 and _base62(61, 3) == "00z" and _base62(62, 3) == "010"
    assert re.fullmatch(r"[0-9A-Za-z]{33}", random_token())


@settings(max_examples=2000, deadline=None)
@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1))
def test_id_digits_are_the_base62_of_time_then_randomness(millis: int, random: int) -> None:
    # The per-millisecond split must give exactly the 22 digits of the whole 128-bit value.
    assert _digits(millis, random) == _base62((millis << 80) | random, 22)
    assert _digits(millis, 0) == _base62(millis << 80, 22)  # the cached split, reused
    assert _digits(millis, 2**80 - 1) == _base62((millis << 80) | (2**80 - 1), 22)


def test_the_epoch_is_shared_by_every_opener_of_the_database(tmp_path: Path) -> None:
    first, second = FileEpochs.beside(str(tmp_path / "s.db")), FileEpochs.beside(str(tmp_path / "s.db"))
    assert first is not None and second is not None
    before, other = second.read("access"), second.read("catalog")
    assert first.read("access") == before
    first.bump("access")
    assert second.read("access") != before and second.read("access") == first.read("access")
    assert second.read("catalog") == other  # markers move independently
    assert FileEpochs.beside(":memory:") is None
    assert FileEpochs.beside(str(tmp_path / "missing-dir" / "s.db")) is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ warns about fork with threads
def test_request_ids_are_unique_in_a_process_and_across_forked_workers() -> None:
    import multiprocessing

    from stateset_server.core.ids import request_id

    ours = [request_id() for _ in range(10_000)]
    assert len(set(ours)) == len(ours) and all(re.fullmatch(r"req_[0-9A-Za-z]{22}", i) for i in ours)
    counters = [from_base62(i[16:]) for i in ours]
    assert counters == list(range(counters[0], counters[0] + 10_000))  # the counter, in base62, in order
    with multiprocessing.get_context("fork").Pool(2) as pool:
        theirs = pool.map(_ids_in_a_worker, range(2))
    assert ours[0][:16] not in {i[:16] for batch in theirs for i in batch}  # a new prefix in every worker
    assert not set(ours) & {i for batch in theirs for i in batch}


def _ids_in_a_worker(_: int) -> list[str]:
    from stateset_server.core.ids import request_id

    return [request_id() for _ in range(100)]


def test_a_marked_cache_serves_an_entry_only_under_the_marker_it_was_read_with(tmp_path: Path) -> None:
    from stateset_server.storage.epoch import MarkedCache

    epochs = FileEpochs.beside(str(tmp_path / "s.db"))
    assert epochs is not None
    cache: MarkedCache[str, int | None] = MarkedCache("catalog", limit=2)
    marker = cache.marker(epochs)
    cache.put(epochs, marker, "known", 1)
    cache.put(epochs, marker, "unknown", None)  # "not there" is an answer too
    assert cache.get(epochs, cache.marker(epochs), "known") == (True, 1)
    assert cache.get(epochs, cache.marker(epochs), "unknown") == (True, None)
    epochs.bump("access")  # another marker: still good
    assert cache.get(epochs, cache.marker(epochs), "known") == (True, 1)
    epochs.bump("catalog")
    assert cache.get(epochs, cache.marker(epochs), "known") == (False, None)
    assert cache.marker(None) is None
    cache.put(None, None, "x", 3)  # no markers: nothing is kept
    assert cache.get(None, None, "x") == (False, None)
    marker = cache.marker(epochs)
    for key in ("a", "b", "c"):  # full: starts over
        cache.put(epochs, marker, key, 0)
    assert cache.get(epochs, marker, "a") == (False, None) and cache.get(epochs, marker, "c") == (True, 0)


def test_a_served_worker_collects_garbage_less_often_and_never_walks_what_it_loaded() -> None:
    """`app_from_environment` (each worker's factory) freezes what is loaded and raises the first
    generation's threshold; cycles made afterwards are still found."""
    import gc

    from stateset_server.app import _collect_garbage_less_often

    threshold = gc.get_threshold()
    try:
        _collect_garbage_less_often()
        assert gc.get_threshold()[0] == 20_000 and gc.get_freeze_count() > 1_000

        class Node:
            pass

        node = Node()
        node.self = node  # type: ignore[attr-defined]
        del node
        assert gc.collect() >= 1  # a cycle made after the freeze is collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
