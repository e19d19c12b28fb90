"""The stored order document: the order's JSON as the API shows it, minus its payment_url, packed
(storage/packing.py).

Every change to an order rewrites it in the change's own transaction (`repository.insert_order`,
`repository.update_order`), so a GET is one indexed row read and a byte copy. `payment_url` depends on
the address the request came to, so it is the last field of `OrderOut` and is cut off here and put
back per request: the cut is exact because `,"payment_url":` can only occur in the JSON as that key
(inside a JSON string every quote is escaped).
"""

from __future__ import annotations

import msgspec

from stateset_server.orders.schemas import OrderOut
from stateset_server.storage.packing import pack

__all__ = ["document_of", "listed", "respond", "timeline_json"]

_encode = msgspec.json.encode
_KEY = b',"payment_url":'
_TIMELINE = b',"timeline":'  # the document's last field


def document_of(shown: OrderOut) -> bytes:
    """The document for `shown` as stored (packed), which must carry its timeline. The repository
    gives it back unpacked (`Order.document`, `repository.get_document`)."""
    assert shown.timeline is not msgspec.UNSET, "an order document includes the timeline"
    raw = _encode(shown)
    return pack(raw[: raw.rindex(_KEY)])


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
