"""Decoding request bodies into typed structs, with errors that name the field.

msgspec validates while it parses (the fast path). When it refuses, its message is turned into the
documented details: `field`, `issue`, `expected` and what was `received` (read back from the body).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from stateset_server.core.errors import ApiError

__all__ = ["decode_body", "decode_optional_body", "field_error"]

T = TypeVar("T")
_MESSAGE = re.compile(r"^(?P<issue>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\.\.\.\]")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_EXPECTED = re.compile(r"^Expected `(?P<expected>[^`]+)`(?P<rest>.*?)(?:, got `(?P<got>[^`]+)`)?$")


def _walk(document: Any, path: str) -> Any:
    node = document
    for match in _PATH_PART.finditer(path):
        key, index = match.group(1), match.group(2)
        try:
            node = node[key] if key is not None else node[int(index)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return node


def _field_name(path: str) -> str:
    return path.lstrip(".") or "body"


def field_error(exc: msgspec.ValidationError, body: bytes) -> ApiError:
    match = _MESSAGE.match(str(exc))
    issue = match.group("issue") if match else str(exc)
    path = (match.group("path") if match else "") or ""
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        document = None

    missing = _MISSING.match(issue)
    if missing:
        name = _field_name(f"{path}.{missing.group('name')}")
        return ApiError.field(
            name, "required field is missing", expected="a value", received=None, code="MISSING_REQUIRED_FIELD"
        )
    unknown = _UNKNOWN.match(issue)
    if unknown:
        name = _field_name(f"{path}.{unknown.group('name')}")
        return ApiError.field(
            name,
            "unknown field",
            expected="only the documented fields",
            received=_walk(document, f"{path}.{unknown.group('name')}"),
            code="VALIDATION_ERROR",
        )
    expected = _EXPECTED.match(issue)
    received = _walk(document, path)
    if expected:
        wanted = (expected.group("expected") + expected.group("rest")).strip()
        code = "VALIDATION_ERROR" if expected.group("got") else "INVALID_FIELD_FORMAT"
        return ApiError.field(_field_name(path), issue, expected=wanted, received=received, code=code)
    return ApiError.field(
        _field_name(path), issue, expected="a valid value", received=received, code="INVALID_FIELD_FORMAT"
    )


def decode_body(body: bytes, into: type[T], *, strict: bool = True) -> T:
    if not body.strip():
        raise ApiError(
            "VALIDATION_ERROR",
            "The request body is empty; send a JSON object.",
            {"field": "body", "issue": "empty body", "expected": "a JSON object", "received": None},
            status=400,
        )
    try:
        decoded = msgspec.json.decode(body, type=into, strict=strict)
    except RecursionError:
        raise ApiError(
            "VALIDATION_ERROR",
            "The request body is nested too deeply.",
            {"field": "body", "issue": "nested too deeply", "expected": "a JSON object", "received": None},
            status=400,
        ) from None
    except msgspec.ValidationError as exc:
        # msgspec may report a field before it reaches trailing garbage: check well-formedness first.
        _well_formed(body)
        raise field_error(exc, body) from None
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None
    if b"\\u0000" in body:  # the only way a NUL reaches a string; PostgreSQL text cannot hold one
        _refuse_nul(msgspec.json.decode(body))
    return decoded


def _refuse_nul(node: Any, path: str = "") -> None:
    if isinstance(node, str):
        if "\x00" in node:
            raise ApiError.field(
                _field_name(path), "contains a NUL character", expected="text without NUL (\\u0000)", received=node
            )
    elif isinstance(node, dict):
        for key, value in node.items():
            _refuse_nul(key, path)
            _refuse_nul(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _refuse_nul(value, f"{path}[{index}]")


def _malformed(exc: msgspec.DecodeError) -> ApiError:
    return ApiError(
        "VALIDATION_ERROR",
        "The request body is not valid JSON.",
        {"field": "body", "issue": str(exc), "expected": "a JSON object", "received": None},
        status=400,
    )


def _well_formed(body: bytes) -> None:
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _malformed(exc) from None


def decode_optional_body(body: bytes, into: type[T], *, strict: bool = True) -> T:
    """Like decode_body, but an empty body means "no options" (as SDKs send for ship, release, …)."""
    return decode_body(body if body.strip() else b"{}", into, strict=strict)
