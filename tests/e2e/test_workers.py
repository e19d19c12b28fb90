"""Several server processes on one database (`--workers 2`) behave like one server."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.support import ServerProcess


def test_two_workers_share_one_database_without_losing_or_duplicating(fresh_database: str) -> None:
    server = ServerProcess(fresh_database, workers=2).start()
    try:
        key = server.first_key
        headers = {"Authorization": f"Bearer {key}"}

        def one(i: int) -> httpx.Response:
            body = {"items": [{"sku": f"SKU-{i}", "quantity": 1, "price": "2.50"}]}
            return httpx.post(f"{server.base_url}/v1/orders", json=body, headers=headers, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(one, range(200)))
        assert [r.status_code for r in responses] == [201] * 200
        assert sorted(r.json()["order_number"] for r in responses) == list(range(1001, 1201))
        with httpx.Client(base_url=server.base_url, headers=headers) as client:
            for response in responses[::20]:
                assert client.get(f"/v1/orders/{response.json()['id']}").status_code == 200
            total = 0
            cursor = None
            while True:
                page = client.get("/v1/events", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
                total += len(page["data"])
                cursor = page["pagination"]["next_cursor"]
                if cursor is None:
                    break
            assert total == 200
    finally:
        server.stop()
