"""Customer rules, pure: id shapes, email keys, drafts and edits, the list query."""

from __future__ import annotations

import msgspec
import pytest
from starlette.datastructures import QueryParams

from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.customers.listing import parse_customer_query
from stateset_server.customers.model import email_key, is_customer_id
from stateset_server.customers.schemas import CreateCustomerIn, UpdateCustomerIn
from stateset_server.customers.service import draft_customer, edit_customer
from stateset_server.workspaces.keys import Principal

PRINCIPAL = Principal(key_id="key_1", workspace_id="ws_1", mode="test", kind="secret", scopes=frozenset())


def test_only_ids_of_our_shape_are_ours() -> None:
    assert is_customer_id(new_id("cus"))
    for external in ("cust_123", "cus_NffrFeUfNV2Hib", "cus_0", "cus_" + "0" * 21 + "-", new_id("ord"), ""):
        assert not is_customer_id(external), external


def test_email_keys_ignore_case_and_surrounding_space() -> None:
    assert email_key(" Ann@Example.COM ") == "ann@example.com"


def draft(**fields: object):
    return draft_customer(CreateCustomerIn(**fields), PRINCIPAL, now=1_000)  # type: ignore[arg-type]


def test_a_draft_is_checked_and_normalized() -> None:
    customer = draft(email=" Ann@Example.com ", first_name=" Ann ", last_name="", tier="gold")
    assert (customer.email, customer.email_key) == ("Ann@Example.com", "ann@example.com")
    assert (customer.first_name, customer.last_name, customer.name) == ("Ann", None, "Ann")
    assert (customer.addresses, customer.metadata, customer.version) == ([], {}, 1)
    with pytest.raises(ApiError) as raised:
        draft(email="nope")
    assert raised.value.details["field"] == "email"
    with pytest.raises(ApiError) as raised:
        draft(email="a@example.com", metadata={"k": [1]})
    assert raised.value.details["field"] == "metadata.k"


def test_an_edit_changes_only_what_is_given() -> None:
    customer = draft(email="ann@example.com", first_name="Ann", tier="gold", metadata={"a": 1, "b": "x"})
    same = edit_customer(
        customer, msgspec.json.decode(b'{"tier": "gold", "metadata": {}}', type=UpdateCustomerIn), now=2
    )
    assert same is customer  # nothing changed: no write, no event
    body = msgspec.json.decode(b'{"tier": null, "metadata": {"a": null, "b": "", "c": true}}', type=UpdateCustomerIn)
    edited = edit_customer(customer, body, now=2_000)
    assert (edited.tier, edited.first_name, edited.metadata) == (None, "Ann", {"c": True})
    assert (edited.version, edited.updated_at, edited.created_at) == (2, 2_000, 1_000)


def test_email_filters_compare_lower_cased() -> None:
    query = parse_customer_query(QueryParams("email=Ann@X.io&email_in=B@X.io,c@x.io&first_name=Ann"))
    assert [c.values for c in query.conditions] == [("ann@x.io",), ("b@x.io", "c@x.io"), ("Ann",)]
    assert [c.column for c in query.conditions] == ["email_key", "email_key", "first_name"]
