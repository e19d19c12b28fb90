"""Acknowledged writes survive SIGKILL: every 201 is on disk before it is sent."""

from __future__ import annotations

import asyncio

import httpx

from tests.support import ServerProcess


async def burst(base_url: str, key: str, count: int, concurrency: int) -> list[str]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits
    ) as client:

        async def one(i: int) -> str | None:
            body = {
                "customer_email": f"c{i}@example.com",
                "items": [{"sku": f"SKU-{i}", "quantity": 2, "price": "9.99"}],
            }
            response = await client.post("/v1/orders", json=body, timeout=30)
            return response.json()["id"] if response.status_code == 201 else None

        results = await asyncio.gather(*(one(i) for i in range(count)))
    return [r for r in results if r is not None]


def test_sigkill_right_after_a_burst_of_201s_loses_nothing(fresh_database: str) -> None:
    server = ServerProcess(fresh_database).start()
    try:
        key = server.first_key
        assert key is not None
        acknowledged = asyncio.run(burst(server.base_url, key, count=300, concurrency=32))
        assert len(acknowledged) == 300
    finally:
        server.kill()  # SIGKILL the whole process group: no shutdown hook runs

    restarted = ServerProcess(fresh_database).start()
    try:
        with httpx.Client(base_url=restarted.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
            for order_id in acknowledged:
                response = client.get(f"/v1/orders/{order_id}")
                assert response.status_code == 200, order_id
                assert response.json()["total"] == "19.98"
            events = client.get("/v1/events", params={"type": "order.created", "limit": 1}).json()
            assert events["data"][0]["data"]["object"]["id"] in acknowledged
    finally:
        restarted.stop()


def test_sigkill_during_a_burst_keeps_every_acknowledged_order(fresh_database: str) -> None:
    server = ServerProcess(fresh_database).start()
    key = server.first_key
    assert key is not None

    async def burst_then_kill() -> list[str]:
        acknowledged: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as client:

            async def one(i: int) -> None:
                body = {"items": [{"sku": f"SKU-{i}", "quantity": 1, "price": "1.00"}]}
                try:
                    response = await client.post("/v1/orders", json=body, timeout=30)
                except httpx.HTTPError:
                    return
                if response.status_code == 201:
                    acknowledged.append(response.json()["id"])

            tasks = [asyncio.create_task(one(i)) for i in range(400)]
            while len(acknowledged) < 100:
                await asyncio.sleep(0.001)
            server.kill()  # mid-burst: some requests are in flight, some already answered
            await asyncio.gather(*tasks)
        return acknowledged

    try:
        acknowledged = asyncio.run(burst_then_kill())
    finally:
        server.kill()
    assert len(acknowledged) >= 100

    restarted = ServerProcess(fresh_database).start()
    try:
        with httpx.Client(base_url=restarted.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
            missing = [oid for oid in acknowledged if client.get(f"/v1/orders/{oid}").status_code != 200]
        assert missing == []
    finally:
        restarted.stop()
