"""Form-encoded bodies become the JSON a JSON client would send: bracket keys, the value rule, refusals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import quote, quote_plus

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from stateset_server.core.forms import MAX_DEPTH, MAX_INDEX, MAX_PAIRS, FormError, form_to_json
from stateset_server.orders.schemas import CreateOrderIn


def decoded(body: bytes | str) -> Any:
    raw = body.encode() if isinstance(body, str) else body
    return msgspec.json.decode(form_to_json(raw))


def refused(body: bytes | str) -> FormError:
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(FormError) as caught:
        form_to_json(raw)
    assert isinstance(caught.value, ValueError)
    return caught.value


# --- examples ---------------------------------------------------------------------------------------


def test_bracket_notation_example() -> None:
    body = "items[0][sku]=A&items[0][quantity]=2&metadata[channel]=web&customer[email]=a@b.co&tags[]=x&tags[]=y"
    assert decoded(body) == {
        "items": [{"sku": "A", "quantity": "2"}],
        "metadata": {"channel": "web"},
        "customer": {"email": "a@b.co"},
        "tags": ["x", "y"],
    }


def test_webhook_simulator_form_as_curl_sends_it() -> None:
    # curl -X POST .../v1/webhooks/simulate -d event_type="order.created" -d endpoint_url="https://..."
    body = b"event_type=order.created&endpoint_url=https://example.com/hooks/stateset?x=1"
    assert decoded(body) == {"event_type": "order.created", "endpoint_url": "https://example.com/hooks/stateset?x=1"}


def test_full_order() -> None:
    body = (
        "customer_email=a%40b.co&items[0][sku]=LAPTOP-001&items[0][quantity]=1&items[0][unit_price]=999.99"
        "&shipping_address[city]=San+Francisco&metadata[campaign_id]=summer"
    )
    assert form_to_json(body.encode()) == (
        b'{"customer_email":"a@b.co","items":[{"sku":"LAPTOP-001","quantity":"1","unit_price":"999.99"}],'
        b'"shipping_address":{"city":"San Francisco"},"metadata":{"campaign_id":"summer"}}'
    )


def test_percent_encoded_brackets_and_plus_and_utf8() -> None:
    body = "items%5B0%5D%5Bsku%5D=A%2BB&note=caf%C3%A9+%26+cr%C3%A8me&raw=naïve"
    assert decoded(body) == {"items": [{"sku": "A+B"}], "note": "café & crème", "raw": "naïve"}


def test_list_indices_may_arrive_in_any_order() -> None:
    body = "items[2][sku]=C&items[0][sku]=A&items[1][sku]=B&items[0][quantity]=1"
    assert decoded(body) == {"items": [{"sku": "A", "quantity": "1"}, {"sku": "B"}, {"sku": "C"}]}


def test_nested_lists_and_names_with_dots_and_dashes() -> None:
    body = "grid[0][0]=a&grid[0][1]=b&grid[1][0]=c&meta[utm.source-v2]=x&meta[_k]="
    assert decoded(body) == {"grid": [["a", "b"], ["c"]], "meta": {"utm.source-v2": "x", "_k": ""}}


def test_blank_values_and_keys_without_equals_are_empty_strings() -> None:
    assert decoded("a=&b&c[]=&c[]=x") == {"a": "", "b": "", "c": ["", "x"]}


def test_empty_segments_between_ampersands_are_skipped() -> None:
    assert decoded("&&a=1&&&b=2&") == {"a": "1", "b": "2"}


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n", b"&", b"&&&"])
def test_empty_body_is_an_empty_object(body: bytes) -> None:
    assert form_to_json(body) == b"{}"


def test_surrounding_whitespace_is_ignored() -> None:
    assert decoded(b"\n quantity=2\r\n") == {"quantity": "2"}


# --- the value rule: values stay strings --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "2",
        "0",
        "-5",
        "-0",
        "999999999999999999",
        "-999999999999999999",
        "1000000000000000000",
        "12345678901234567890",
        "007",
        "-007",
        "+5",
        "1e3",
        "19.99",
        "1_000",
        "94105",
        "٣",  # a non-ASCII digit
        "true",
        "false",
        "True",
        "FALSE",
        "null",
        "",
        "web",
    ],
)
def test_values_stay_strings(raw: str) -> None:
    result = decoded(f"v={quote(raw)}&l[]={quote(raw)}")
    assert result == {"v": raw, "l": [raw]}
    assert type(result["v"]) is str
    assert type(result["l"][0]) is str


def test_value_with_trailing_newline_is_kept_verbatim() -> None:
    assert decoded("v=2%0A") == {"v": "2\n"}


def test_order_form_decodes_per_field_type_in_lax_mode() -> None:
    # Typing is the decoder's job: lax mode converts "2" for the int field and keeps str fields as text.
    body = form_to_json(
        b"customer_email=a%40b.co&items[0][sku]=007&items[0][quantity]=2&items[0][unit_price]=19.99"
        b"&shipping_address[postal_code]=94105"
    )
    order = msgspec.json.decode(body, type=CreateOrderIn, strict=False)
    assert order.customer_email == "a@b.co"
    item = order.items[0]
    assert item.quantity == 2
    assert type(item.quantity) is int
    assert item.sku == "007"
    assert item.unit_price == Decimal("19.99")
    assert order.shipping_address is not None
    assert order.shipping_address.postal_code == "94105"
    # Strict mode would refuse the form's text quantity, which is why form bodies are decoded lax.
    with pytest.raises(msgspec.ValidationError, match=r"items\[0\]\.quantity"):
        msgspec.json.decode(body, type=CreateOrderIn, strict=True)


# --- JSON passthrough -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"items": [{"sku": "A", "quantity": 2}]}',
        b"[1, 2, 3]",
        b'  \n\t{"a": 1}\n',
        b"\r\n[]",
        b"{not json at all",  # not validated here: the JSON decoder reports it
    ],
)
def test_json_bodies_pass_through_unchanged(body: bytes) -> None:
    assert form_to_json(body) is body


# --- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("items[0]sku=A", "items[0]sku"),
        ("a]b=1", "a]b"),
        ("a[b=1", "a[b"),
        ("a[b]]=1", "a[b]]"),
        ("a[[b]]=1", "a[[b]]"),
        ("a[b]c[d]=1", "a[b]c[d]"),
        ("%5Ba%5D=1", "[a]"),  # a raw `[a]=1` body starts with `[` and is taken as JSON
        ("a[b c]=1", "a[b c]"),
        ("a[b/c]=1", "a[b/c]"),
        ("a b=1", "a b"),
        ("caf%C3%A9=1", "café"),
        ("a[][b]=1", "a[][b]"),
        ("a[01]=1", "a[01]"),
    ],
)
def test_malformed_keys_are_refused_by_name(body: str, field: str) -> None:
    error = refused(body)
    assert error.field == field
    assert error.issue
    assert str(error).startswith(f"{field}: ")


def test_empty_key_is_refused() -> None:
    assert refused("=1").field == "body"


def test_missing_list_index_is_refused() -> None:
    error = refused("items[0][sku]=A&items[2][sku]=C")
    assert error.field == "items[1]"
    assert "contiguous" in error.issue


def test_list_not_starting_at_zero_is_refused() -> None:
    assert refused("tags[1]=x").field == "tags[0]"


def test_missing_index_in_a_nested_list_names_the_full_path() -> None:
    assert refused("items[0][tags][0]=a&items[0][tags][3]=b").field == "items[0][tags][1]"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("tags[]=x&tags[0]=y", "tags[0]"),
        ("tags[0]=y&tags[]=x", "tags[]"),
    ],
)
def test_mixing_append_and_indices_is_refused(body: str, field: str) -> None:
    error = refused(body)
    assert error.field == field
    assert "mixes" in error.issue


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("a=1&a[b]=2", "a[b]"),
        ("a[b]=2&a=1", "a"),
        ("a=1&a[]=2", "a[]"),
        ("a[]=2&a=1", "a"),
        ("a[b]=1&a[b][c]=2", "a[b][c]"),
        ("a[b][c]=2&a[b]=1", "a[b]"),
        ("a[0]=1&a[0][b]=2", "a[0][b]"),
        ("a[0][b]=2&a[0]=1", "a[0]"),
    ],
)
def test_a_name_used_as_value_and_container_is_refused(body: str, field: str) -> None:
    assert refused(body).field == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("a[0]=1&a[b]=2", "a[b]"),
        ("a[b]=1&a[0]=2", "a[0]"),
        ("a[]=1&a[b]=2", "a[b]"),
        ("a[b][]=1&a[b][c]=2", "a[b][c]"),
    ],
)
def test_a_name_used_as_list_and_object_is_refused(body: str, field: str) -> None:
    error = refused(body)
    assert error.field == field
    assert "list" in error.issue


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("a=1&a=2", "a"),
        ("a=1&a=1", "a"),
        ("m[k]=1&m[k]=2", "m[k]"),
        ("items[0]=x&items[0]=y", "items[0]"),
    ],
)
def test_repeated_keys_are_refused(body: str, field: str) -> None:
    error = refused(body)
    assert error.field == field
    assert "[]" in error.issue  # points at the append form


@pytest.mark.parametrize("body", [b"\xff=1", b"a=\xc3", b"a=%FF", b"a[%C3]=1"])
def test_invalid_utf8_raw_or_percent_encoded_is_refused(body: bytes) -> None:
    assert refused(body).field == "body"


def test_pair_limit() -> None:
    at_limit = "&".join(["t[]=x"] * MAX_PAIRS)
    assert len(decoded(at_limit)["t"]) == MAX_PAIRS
    assert len(decoded(at_limit + "&&&")["t"]) == MAX_PAIRS  # empty segments are not pairs
    error = refused(at_limit + "&t[]=y")
    assert error.field == "body"
    assert "10,000" in error.issue


def test_depth_limit() -> None:
    deepest = "a" + "[b]" * MAX_DEPTH
    assert form_to_json(f"{deepest}=1".encode()).count(b"{") == MAX_DEPTH + 1
    assert refused(f"{deepest}[c]=1").field == deepest + "[c]"
    assert refused(f"l{'[0]' * (MAX_DEPTH + 1)}=1").field == "l" + "[0]" * (MAX_DEPTH + 1)


def test_index_limit() -> None:
    assert refused(f"a[{MAX_INDEX + 1}]=1").field == f"a[{MAX_INDEX + 1}]"
    # The largest allowed index is parsed, then refused only because the list has gaps.
    assert refused(f"a[{MAX_INDEX}]=1").field == "a[0]"
    full = "&".join(f"a[{i}]={i}" for i in range(MAX_INDEX, -1, -1))
    assert decoded(full) == {"a": [str(i) for i in range(MAX_INDEX + 1)]}


# --- properties -------------------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_.-][A-Za-z0-9_.-]{0,8}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
INT_LIKE_TEXT = st.integers(min_value=-(10**20), max_value=10**20).map(str) | st.from_regex(
    r"-?0[0-9]{1,3}", fullmatch=True
)
BOOL_LIKE_TEXT = st.sampled_from(["true", "false", "True", "FALSE", "null"])
LEAVES = TEXT | INT_LIKE_TEXT | BOOL_LIKE_TEXT
NESTED = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, min_size=1, max_size=3) | st.dictionaries(NAMES, children, min_size=1, max_size=3)
    ),
    max_leaves=16,
)
DOCUMENTS = st.dictionaries(NAMES, NESTED, max_size=4)


def depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max(map(depth, node.values()))
    if isinstance(node, list):
        return 1 + max(map(depth, node))
    return 0


def flatten(key: str, node: Any, append: bool) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        return [pair for name, child in node.items() for pair in flatten(f"{key}[{name}]", child, append)]
    if isinstance(node, list):
        if append and not any(isinstance(child, dict | list) for child in node):
            return [(f"{key}[]", child) for child in node]
        return [pair for index, child in enumerate(node) for pair in flatten(f"{key}[{index}]", child, append)]
    return [(key, node)]


@given(document=DOCUMENTS, append=st.booleans(), plus=st.booleans(), data=st.data())
def test_round_trip_of_nested_documents(
    document: dict[str, Any], append: bool, plus: bool, data: st.DataObject
) -> None:
    assume(all(depth(value) <= MAX_DEPTH for value in document.values()))
    pairs = [pair for name, value in document.items() for pair in flatten(name, value, append)]
    if not append:  # `[]` relies on arrival order; explicit indices do not
        pairs = data.draw(st.permutations(pairs))
    encode_value = quote_plus if plus else quote
    body = "&".join(f"{quote(key, safe='')}={encode_value(value, safe='')}" for key, value in pairs)
    assert msgspec.json.decode(form_to_json(body.encode("ascii"))) == document


@given(st.binary(max_size=200) | st.text("ab0123[]=&%+{ \n", max_size=40).map(str.encode))
def test_any_body_gives_json_or_a_form_error(body: bytes) -> None:
    try:
        result = form_to_json(body)
    except FormError as error:
        assert error.field
        assert error.issue
        return
    if body.strip()[:1] in (b"{", b"["):
        assert result is body
    else:
        assert isinstance(msgspec.json.decode(result), dict)
