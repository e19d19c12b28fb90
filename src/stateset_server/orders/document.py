"""The stored order document: the order's JSON as the API shows it, minus its payment_url, packed
(storage/packing.py).

Every change to an order rewrites it in the change's own transaction (`repository.insert_order`,
`repository.update_order`), so a GET is one indexed row read and a byte copy. `payment_url` depends on
the address the request came to, so it is the last field of `OrderOut` and is cut off here and put
back per request: the cut is exact because `,"payment_url":` can only occur in the JSON as that key
(inside a JSON string every quote is escaped).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from stateset_server.orders.schemas import OrderOut
from stateset_server.storage.packing import Packed, pack, pack_around

__all__ = ["Rendered", "enclosed", "listed", "render", "respond", "response_of", "timeline_json"]

_encode = msgspec.json.encode
_KEY = b',"payment_url":'
_TIMELINE = b',"timeline":'  # the document's last field


class Rendered(NamedTuple):
    """An order after a change, encoded once and cut three ways."""

    body: bytes  # the order as the API answers with it: timeline and payment_url included
    document: bytes  # as stored (packed): without payment_url; read back unpacked (`Order.document`)
    snapshot: bytes  # its events' data: without the timeline


def render(shown: OrderOut) -> Rendered:
    """`shown` (its timeline set, and final: it is not changed afterwards) as a response, a stored
    document and an event snapshot, from one encoding: the timeline and payment_url are its last two
    fields, so each form is a cut of the same bytes, equal to what encoding it without them gives. The
    result stays on `shown` for the response (`response_of`, `enclosed`)."""
    assert shown.timeline is not msgspec.UNSET, "an order document includes the timeline"
    body = _encode(shown)
    url = body.rindex(_KEY)
    timeline = body.rindex(_TIMELINE, 0, url)
    rendered = Rendered(body, pack(body[:url]), body[:timeline] + body[url:])
    shown.rendered = rendered  # type: ignore[attr-defined]  # OrderOut keeps extra attributes out of its JSON
    return rendered


def _rendered(shown: OrderOut) -> Rendered | None:
    return shown.__dict__.get("rendered")  # type: ignore[no-any-return]


def response_of(shown: OrderOut) -> Packed | OrderOut:
    """What to answer with `shown` as the whole body: as `render` made it, with its stored form for
    the idempotency layer (the packed document and its payment_url in clear: no second compression
    of the same JSON), else itself."""
    rendered = _rendered(shown)
    if rendered is None:
        return shown
    body = rendered.body
    return Packed(body, pack_around(rendered.document, after=body[body.rindex(_KEY) :]))


def enclosed(fields: dict[str, Any], key: str, shown: OrderOut) -> Packed | dict[str, Any]:
    """The body `{**fields, key: shown}` (`shown` last), its stored form around the order's packed
    document as in `response_of`; a dict to encode when `shown` was not rendered."""
    rendered = _rendered(shown)
    if rendered is None:
        return {**fields, key: shown}
    body = rendered.body
    before = b"".join((_encode(fields)[:-1], b"," if fields else b"", _encode(key), b":"))
    after = body[body.rindex(_KEY) :] + b"}"
    return Packed(before + body + b"}", pack_around(rendered.document, before=before, after=after))


def payment_url(base_url: str, order_id: str) -> str:
    return f"{base_url}/pay/{order_id}"


def respond(document: bytes, base_url: str, order_id: str) -> bytes:
    """The response body for a stored document (unpacked), for a request that came to `base_url`."""
    return b"".join((document, _KEY, _encode(payment_url(base_url, order_id)), b"}"))


def listed(document: bytes, base_url: str, order_id: str) -> bytes:
    """The order as a list shows it: the document (unpacked) without its timeline (cut as
    payment_url is)."""
    return b"".join((document[: document.rindex(_TIMELINE)], _KEY, _encode(payment_url(base_url, order_id)), b"}"))


def timeline_json(document: bytes) -> bytes:
    """The JSON of a document's timeline (unpacked), its last field: the cut is exact as above."""
    return document[document.rindex(_TIMELINE) + len(_TIMELINE) :]
