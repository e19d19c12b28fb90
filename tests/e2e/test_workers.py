"""Several server processes on one database (`--workers 2`) behave like one server."""

from __future__ import annotations

import concurrent.futures
import os

import httpx
import pytest

from stateset_server import affinity
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


def _cpus_allowed(status_path: str) -> str:
    """A process's or thread's CPU list, as /proc shows it (e.g. "0-1")."""
    with open(status_path) as status:
        return next(line.split()[1] for line in status if line.startswith("Cpus_allowed_list:"))


def _worker_cpus(server: ServerProcess) -> list[set[str]]:
    """For each worker process of `server`, the CPU lists its threads may run on."""
    assert server.proc is not None
    parent = server.proc.pid
    with open(f"/proc/{parent}/task/{parent}/children") as listing:
        workers = [int(pid) for pid in listing.read().split()]
    return [
        {_cpus_allowed(f"/proc/{pid}/task/{thread}/status") for thread in os.listdir(f"/proc/{pid}/task")}
        for pid in workers
    ]


needs_two_cpus = pytest.mark.skipif(
    not os.path.exists("/proc/self/task") or len(affinity.allowed_cpus()) < 2,
    reason="pinning workers needs Linux and two CPUs",
)


@needs_two_cpus
def test_two_sqlite_workers_each_run_on_a_cpu_of_their_own(tmp_path: object) -> None:
    allowed = [str(cpu) for cpu in affinity.allowed_cpus()]
    server = ServerProcess(f"sqlite:///{tmp_path}/pinned.db", workers=2).start()
    try:
        cpus = _worker_cpus(server)
        assert len(cpus) == 2
        assert cpus == [{allowed[0]}, {allowed[1]}] or cpus == [{allowed[1]}, {allowed[0]}]  # every thread
        headers = {"Authorization": f"Bearer {server.first_key}"}
        body = {"items": [{"sku": "SKU-1", "quantity": 1, "price": "2.50"}]}
        created = [httpx.post(f"{server.base_url}/v1/orders", json=body, headers=headers) for _ in range(20)]
        assert [r.status_code for r in created] == [201] * 20
    finally:
        server.stop()
    assert sum("runs on CPU" in line for line in server.output) == 2


@needs_two_cpus
def test_pinning_can_be_turned_off(tmp_path: object) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/free.db", {affinity.ENV: "false"}, workers=2).start()
    try:
        cpus = _worker_cpus(server)
        assert len(cpus) == 2
        own = {_cpus_allowed("/proc/self/status")}  # what the server inherited from this process
        assert cpus == [own, own]
    finally:
        server.stop()


def test_a_malformed_pinning_setting_stops_the_server(tmp_path: object) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/typo.db", {affinity.ENV: "sometimes"}, workers=2)
    with pytest.raises(RuntimeError, match=affinity.ENV):
        server.start(timeout=20)
