"""`/openapi.json`, `/spec/openapi.yaml`, the `/docs` page and one page per error code.

The pages are rendered on the server from the OpenAPI document itself, with no scripts or assets
from the internet, so they work on an offline machine.
"""

from __future__ import annotations

import html
from typing import Any

import msgspec
import yaml
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from stateset_server.core.errors import CATALOG, ApiError
from stateset_server.core.http import error_response

__all__ = ["docs_routes"]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;"
    "vertical-align:top}code{background:#f4f4f4;padding:0 .2rem}.m{font-weight:bold}"
)


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _docs_html(document: dict[str, Any]) -> str:
    rows = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            scope = op.get("x-required-scope", "public")
            body = (
                op.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
                .get("$ref", "")
            )
            rows.append(
                f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td><code>{html.escape(scope)}</code></td>"
                f"<td>{html.escape(body.rsplit('/', 1)[-1])}</td>"
                f"<td>{', '.join(sorted(op['responses']))}</td></tr>"
            )
    errors = "".join(
        f"<tr><td><a href='/docs/errors/{e['code']}'><code>{e['code']}</code></a></td><td>{e['status']}</td>"
        f"<td>{html.escape(e['description'])}</td></tr>"
        for e in document["x-error-codes"]
    )
    return (
        f"<h1>{html.escape(document['info']['title'])} <small>{document['info']['version']}</small></h1>"
        "<p>Authenticate with <code>Authorization: Bearer sk_test_…</code>. Money amounts are decimal strings. "
        "Machine-readable: <a href='/openapi.json'>/openapi.json</a>, "
        "<a href='/spec/openapi.yaml'>/spec/openapi.yaml</a>.</p>"
        "<h2>Endpoints</h2><table><tr><th>Method</th><th>Path</th><th>What it does</th><th>Scope</th>"
        f"<th>Body</th><th>Statuses</th></tr>{''.join(rows)}</table>"
        f"<h2>Errors</h2><table><tr><th>Code</th><th>Status</th><th>Meaning</th></tr>{errors}</table>"
    )


def docs_routes(document: dict[str, Any]) -> list[Route]:
    as_json = msgspec.json.encode(document)
    as_yaml = yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()
    docs_page = _docs_html(document)

    async def openapi_json(_request: Request) -> Response:
        return Response(as_json, media_type="application/json")

    async def openapi_yaml(_request: Request) -> Response:
        return Response(as_yaml, media_type="application/yaml")

    async def docs(_request: Request) -> Response:
        return _page("StateSet API", docs_page)

    async def error_page(request: Request) -> Response:
        code = request.path_params["code"]
        if code not in CATALOG:
            return error_response(request, ApiError("RESOURCE_NOT_FOUND", f"No error code {code}", {"code": code}))
        status, text = CATALOG[code]
        return _page(
            code,
            f"<h1><code>{code}</code></h1><p>HTTP {status}. {html.escape(text)}</p>"
            '<p>Every error response has the shape <code>{"error": {code, message, details, request_id, timestamp, '
            "documentation_url}}</code>; <code>details</code> names the field, what was expected and what was received "
            "where that applies.</p><p><a href='/docs'>All endpoints and errors</a></p>",
        )

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/spec/openapi.yaml", openapi_yaml, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/errors/{code}", error_page, methods=["GET"]),
    ]
