"""The OpenAPI 3.1 document, generated from the same route table and msgspec types that serve requests."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from stateset_server import API_VERSION, __version__
from stateset_server.core.errors import CATALOG
from stateset_server.core.http import ApiRoute

__all__ = ["ErrorEnvelope", "build_openapi"]

_AUTH_ERRORS = ("MISSING_API_KEY", "INVALID_API_KEY", "INSUFFICIENT_PERMISSIONS")
_ALWAYS = ("RATE_LIMITED", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE")


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any]
    request_id: str | None
    timestamp: str
    documentation_url: str


class ErrorEnvelope(msgspec.Struct):
    """Every error response: `{"error": {code, message, details, request_id, timestamp, documentation_url}}`."""

    error: ErrorBody


def _operation_id(route: ApiRoute) -> str:
    return route.handler.__name__


def build_openapi(routes: list[ApiRoute]) -> dict[str, Any]:
    types: list[Any] = [ErrorEnvelope]
    for route in routes:
        types.extend(t for t in (route.request_body, route.response) if t is not None)
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(unique, ref_template="#/components/schemas/{name}")
    ref = dict(zip(unique, schemas, strict=True))
    components["ErrorBody"]["properties"]["code"]["enum"] = sorted(CATALOG)

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": _operation_id(route),
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", route.path)
            ]
            + [
                {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}
                for name, kind, text in route.query
            ],
        }
        if route.request_body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref[route.request_body]}},
            }
        responses: dict[str, Any] = {
            str(route.status): {
                "description": "Success",
                **({"content": {"application/json": {"schema": ref[route.response]}}} if route.response else {}),
            }
        }
        codes = [*route.errors, *(_AUTH_ERRORS if route.scope else ()), *_ALWAYS]
        by_status: dict[int, list[str]] = {}
        for code in dict.fromkeys(codes):
            by_status.setdefault(CATALOG[code][0], []).append(code)
        if route.request_body is not None:
            by_status.setdefault(400, []).append("VALIDATION_ERROR (malformed JSON)")
        for status, names in sorted(by_status.items()):
            responses[str(status)] = {
                "description": "Error codes: " + ", ".join(names),
                "content": {"application/json": {"schema": ref[ErrorEnvelope]}},
            }
        operation["responses"] = responses
        if route.scope is not None:
            operation["security"] = [{"apiKey": []}]
            operation["x-required-scope"] = route.scope
        paths.setdefault(route.path, {})[route.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "StateSet API (stateset-server)",
            "version": __version__,
            "description": "Self-hosted implementation of the StateSet API. Money amounts are decimal strings; "
            "every error uses the envelope in components.schemas.ErrorEnvelope.",
            "x-api-version": API_VERSION,
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "sk_test_/sk_live_ secret keys, rk_ restricted keys (scoped), pk_ publishable keys",
                }
            },
        },
        "x-error-codes": [
            {"code": code, "status": status, "description": text} for code, (status, text) in sorted(CATALOG.items())
        ],
    }
