"""Health, the OpenAPI document and the human docs, served by a real server."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from stateset_server.core.errors import CATALOG
from tests.support import ServerProcess


def test_health_reports_the_database(server: ServerProcess, engine: str) -> None:
    body = httpx.get(f"{server.base_url}/health").json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "healthy"
    assert body["checks"]["database"]["engine"] == engine
    assert re.match(r"^\d+(\.\d+)?ms$", body["checks"]["database"]["response_time"])


def test_openapi_31_document_describes_every_route_with_its_types(server: ServerProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    create = document["paths"]["/v1/orders"]["post"]
    assert create["x-required-scope"] == "orders:write"
    body_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schemas = document["components"]["schemas"]
    request_schema = schemas[body_ref.rsplit("/", 1)[1]]
    assert request_schema["required"] == ["items"]
    assert {"customer_id", "customer_email", "customer", "shipping", "shipping_address"} <= set(
        request_schema["properties"]
    )
    item_schema = schemas["ItemIn"]
    assert {"sku", "quantity", "unit_price", "price", "description"} <= set(item_schema["properties"])
    assert item_schema["properties"]["quantity"]["minimum"] == 1
    assert set(create["responses"]) >= {"201", "400", "401", "403", "422", "413", "429", "500"}
    assert "/v1/orders/{order_id}" in document["paths"]
    assert "/v1/events" in document["paths"] and "/health" in document["paths"]
    assert schemas["ErrorBody"]["properties"]["code"]["enum"] == sorted(CATALOG)
    assert {e["code"] for e in document["x-error-codes"]} == set(CATALOG)

    def refs(node: object) -> set[str]:
        if isinstance(node, dict):
            found = {node["$ref"]} if "$ref" in node else set()
            return found.union(*(refs(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    for ref in refs(document):
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_the_yaml_document_is_the_same_document(server: ServerProcess) -> None:
    as_json = httpx.get(f"{server.base_url}/openapi.json").json()
    response = httpx.get(f"{server.base_url}/spec/openapi.yaml")
    assert response.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(response.text) == as_json


def test_the_docs_page_lists_every_endpoint_and_error(server: ServerProcess) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    page = httpx.get(f"{server.base_url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in document["paths"]:
        assert path in page.text
    for code in CATALOG:
        assert f"/docs/errors/{code}" in page.text
        assert httpx.get(f"{server.base_url}/docs/errors/{code}").status_code == 200
    assert httpx.get(f"{server.base_url}/docs/errors/NOPE").status_code == 404


def test_the_readme_lists_every_error_code() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for code, (status, _text) in CATALOG.items():
        assert f"| `{code}` | {status} |" in readme, code


def test_an_unreachable_database_is_a_503_not_a_500(engine: str, fresh_database: str) -> None:
    if engine != "postgres":
        pytest.skip("needs a database server that can vanish under a running process")
    from tests.support import drop_pg_database

    server = ServerProcess(fresh_database).start()
    try:
        key = server.first_key
        headers = {"Authorization": f"Bearer {key}"}
        order = {"items": [{"sku": "A", "quantity": 1, "price": "1.00"}]}
        assert httpx.post(f"{server.base_url}/v1/orders", json=order, headers=headers).status_code == 201
        drop_pg_database(fresh_database)  # terminates the server's connections and removes the database
        health = httpx.get(f"{server.base_url}/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        for response in (
            httpx.post(f"{server.base_url}/v1/orders", json=order, headers=headers),
            httpx.get(f"{server.base_url}/v1/events", headers=headers),
        ):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    finally:
        server.stop()
