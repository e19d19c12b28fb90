"""Form-encoded request bodies, read as the JSON document a JSON client would have sent.

Why: `curl -d key=value` sends `application/x-www-form-urlencoded`, and the API takes nested bodies.
Rather than a second validation path, the form is rewritten to JSON here and then goes through the
same typed decoder as every JSON body. This module is pure (bytes in, bytes out, no I/O).

Rules:

- JSON passthrough. A body whose first non-whitespace byte is `{` or `[` is JSON already (that is
  what `curl -d @order.json` sends, with the form content type); it is returned unchanged and left
  to the JSON decoder to validate.
- Form syntax. Otherwise the body is UTF-8 `application/x-www-form-urlencoded`: pairs split on `&`,
  `+` is a space, percent-escapes are decoded (an escape that is not valid UTF-8 is an error, not a
  silent U+FFFD). Surrounding ASCII whitespace is ignored; an empty body is `{}`.
- Keys use Stripe-style brackets: `name`, `name[key]`, `name[key][sub]`, `items[0][sku]`, `tags[]`.
  Names (top level and in brackets) are `[A-Za-z0-9_.-]+`. An all-digit segment is a list index
  (`0`, or no leading zero, at most 9,999); an empty segment `[]` appends and must be the last one.
  List indices may arrive in any order but must end up contiguous from 0. A repeated key, mixing
  `x[]` with `x[0]`, or one name used as both a value and a container (`a=1&a[b]=2`) is ambiguous
  and refused.
- Values stay strings, exactly as sent: nothing is guessed here. The server decodes form bodies in
  msgspec's lax mode, where the *field's* type decides (`quantity=2` fills an int field, `true` a
  bool, while `postal_code=94105` and `sku=007` stay text and `19.99` stays a decimal string).
- Limits against abuse: at most 10,000 pairs and at most 8 bracket segments per key.

Every refusal is a `FormError` naming the offending key (or `body`).
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import parse_qsl

import msgspec

__all__ = ["MAX_DEPTH", "MAX_INDEX", "MAX_PAIRS", "FormError", "form_to_json"]

MAX_PAIRS = 10_000
MAX_DEPTH = 8  # bracket segments after the top-level name
MAX_INDEX = 9_999

_WHITESPACE = b" \t\n\r\f\v"
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_PAIR = re.compile(rb"[^&]+")


class FormError(ValueError):
    """A form body that cannot be read as one unambiguous JSON document; `field` names the key."""

    def __init__(self, field: str, issue: str) -> None:
        super().__init__(f"{field}: {issue}")
        self.field = field
        self.issue = issue


class _List:
    """A list being assembled: either by explicit index or by `[]` appends, never both."""

    __slots__ = ("appended", "indexed", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.indexed: dict[int, Any] = {}
        self.appended: list[Any] = []


def form_to_json(body: bytes) -> bytes:
    """The JSON document `body` stands for: JSON bodies unchanged, form bodies converted (see module doc)."""
    stripped = body.strip(_WHITESPACE)
    if stripped[:1] in (b"{", b"["):
        return body
    # Count before parsing, so a huge body of tiny pairs is refused without building them all.
    if sum(1 for _ in itertools.islice(_PAIR.finditer(stripped), MAX_PAIRS + 1)) > MAX_PAIRS:
        raise FormError("body", f"more than {MAX_PAIRS:,} key=value pairs")
    try:
        text = stripped.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError:
        raise FormError("body", "not valid UTF-8 (raw or percent-encoded)") from None
    root: dict[str, Any] = {}
    for key, value in pairs:
        _insert(root, key, _parse_key(key), value)
    return msgspec.json.encode(_finish(root))


def _parse_key(key: str) -> list[str]:
    """`items[0][sku]` -> `["items", "0", "sku"]`; malformed keys are refused."""
    if not key:
        raise FormError("body", "a pair has an empty key")
    head = _NAME.match(key)
    if head is None:
        raise FormError(key, "a key must start with a name made of letters, digits, '_', '.' or '-'")
    segments = [head.group()]
    position = head.end()
    while position < len(key):
        match = _SEGMENT.match(key, position)
        if match is None:
            raise FormError(key, "malformed brackets; expected name, name[key], name[0] or name[]")
        segment = match.group(1)
        if segment and not _NAME.fullmatch(segment):
            raise FormError(key, f"bracket segment {segment!r} is not a name, a list index or empty")
        segments.append(segment)
        position = match.end()
    if len(segments) - 1 > MAX_DEPTH:
        raise FormError(key, f"nested deeper than {MAX_DEPTH} brackets")
    if "" in segments[1:-1]:
        raise FormError(key, "'[]' (append) is only allowed as the last segment")
    for segment in segments[1:]:
        if segment.isdigit():
            if not _INDEX.fullmatch(segment):
                raise FormError(key, f"list index {segment!r} has a leading zero")
            if int(segment) > MAX_INDEX:
                raise FormError(key, f"list index {segment} is above {MAX_INDEX:,}")
    return segments


def _insert(root: dict[str, Any], key: str, segments: list[str], value: str) -> None:
    """Put `value` where `segments` point, creating objects and lists on the way; refuse ambiguity."""
    container: dict[str, Any] | _List = root
    path = segments[0]
    for depth, segment in enumerate(segments):
        if depth:
            path += f"[{segment}]"
        slots: dict[Any, Any]
        if isinstance(container, _List):
            # Parents choose a list only when this segment is "" or an index ("" is always last).
            if segment == "":
                if container.indexed:
                    raise FormError(key, f"{container.path} mixes '[]' with explicit indices")
                container.appended.append(value)
                return
            if container.appended:
                raise FormError(key, f"{container.path} mixes '[]' with explicit indices")
            slot_key: str | int = int(segment)
            slots = container.indexed
        else:
            slot_key = segment
            slots = container
        is_container = isinstance(slots.get(slot_key), dict | _List)
        if depth == len(segments) - 1:
            if is_container:
                raise FormError(key, f"{path} is both a value and an object or list")
            if slot_key in slots:
                raise FormError(key, f"{path} is given more than once; use {path}[] for a list of values")
            slots[slot_key] = value
            return
        wants_list = segments[depth + 1] == "" or segments[depth + 1].isdigit()
        if slot_key not in slots:
            slots[slot_key] = _List(path) if wants_list else {}
        elif not is_container:
            raise FormError(key, f"{path} is both a value and an object or list")
        elif isinstance(slots[slot_key], _List) != wants_list:
            raise FormError(key, f"{path} is used both as a list and as an object")
        container = slots[slot_key]


def _finish(node: Any) -> Any:
    """Replace the assembly nodes with plain dicts and lists, checking list indices are contiguous."""
    if isinstance(node, dict):
        return {name: _finish(child) for name, child in node.items()}
    if isinstance(node, _List):
        if node.appended:
            return [_finish(child) for child in node.appended]
        for expected in range(len(node.indexed)):
            if expected not in node.indexed:
                missing = f"{node.path}[{expected}]"
                raise FormError(missing, f"list indices must be contiguous from 0; {missing} is missing")
        return [_finish(node.indexed[index]) for index in range(len(node.indexed))]
    return node
