"""Rate limits over real HTTP: headers, the Free plan's per-minute limit, bursts, concurrency, limits
shared by two server processes (database store and Redis store), and changing plans (CLI and API).

Windows are fixed and aligned to the clock, so tests that count to a limit first make sure the
current minute (or second) has room left for the whole burst.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest

from stateset_server.cli import main as cli
from stateset_server.storage import with_database
from stateset_server.workspaces import repository, service
from tests.support import ServerProcess, Workspace, new_workspace, run

REDIS_URL = os.environ.get("STATESET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SMALL_ORDER = {"items": [{"sku": "RL-1", "quantity": 1, "price": "1.00"}]}


def set_plan(ws: Workspace, plan: str, **custom: int) -> None:
    run(with_database(ws.server.database_url, lambda db: service.set_plan(db, ws.id, plan, custom)))


def room_in_this_minute(seconds: float = 6.0) -> None:
    """Wait for the next minute when fewer than `seconds` are left in this one."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def start_of_a_second() -> None:
    time.sleep(1 - time.time() % 1 + 0.01)


def rate_headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["x-ratelimit-limit"]), int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])


def assert_rate_limited(response: httpx.Response, limit: int, limit_type: str, *, sent_at: float | None = None) -> dict:
    """The API reference's 429: its exact fields inside "error", plus the usual envelope fields."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert set(error) == {
        "code",
        "message",
        "retry_after",
        "limit",
        "remaining",
        "reset_at",
        "details",
        "request_id",
        "timestamp",
        "documentation_url",
    }
    wait = error["retry_after"]
    assert isinstance(wait, int) and wait >= 1
    assert error["code"] == "RATE_LIMITED"
    assert error["message"] == f"Rate limit exceeded. Please retry after {wait} seconds."
    assert (error["limit"], error["remaining"]) == (limit, 0)
    assert error["details"]["limit_type"] == limit_type
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["documentation_url"].endswith("/docs/errors/RATE_LIMITED")
    h = response.headers
    assert int(h["retry-after"]) == int(h["x-ratelimit-retry-after"]) == wait
    assert rate_headers(response)[:2] == (limit, 0)
    reset = int(h["x-ratelimit-reset"])
    assert datetime.fromisoformat(error["reset_at"].replace("Z", "+00:00")) == datetime.fromtimestamp(reset, UTC)
    sent_at = time.time() if sent_at is None else sent_at  # when the server decided, give or take
    assert sent_at - 1 < reset <= sent_at + wait + 1
    return error


# -- headers ------------------------------------------------------------------------------------


def test_every_authenticated_response_carries_rate_limit_headers(ws: Workspace) -> None:
    client = ws.client()
    responses = [
        client.post("/v1/orders", json=SMALL_ORDER),  # 201
        client.get("/v1/orders/ord_doesnotexist"),  # 404
        client.post("/v1/orders", json={"items": []}),  # 422
        ws.client(ws.key("restricted", scopes=["events:read"])).post("/v1/orders", json=SMALL_ORDER),  # 403
    ]
    assert [r.status_code for r in responses] == [201, 404, 422, 403]
    for response in responses:
        limit, remaining, reset = rate_headers(response)
        assert 0 <= remaining < limit
        assert time.time() - 1 < reset <= time.time() + 86_400
    # Unauthenticated requests are not rate limited (nor counted).
    for response in (ws.client("").get("/v1/orders"), httpx.get(f"{ws.server.base_url}/health")):
        assert "x-ratelimit-limit" not in response.headers


def test_the_workspace_endpoint_shows_the_plan_and_its_limits(ws: Workspace) -> None:
    body = ws.client().get("/v1/workspace").json()
    assert (body["id"], body["object"], body["plan"], body["operator"]) == (ws.id, "workspace", "enterprise", False)
    assert body["limits"] == {"per_second": 50_000, "per_minute": 2_000_000, "per_day": None, "concurrent": None}
    set_plan(ws, "free")
    response = ws.client().get("/v1/workspace")
    assert response.json()["plan"] == "free"
    assert response.json()["limits"] == {"per_second": 100, "per_minute": 60, "per_day": 1000, "concurrent": 10}
    assert rate_headers(response)[0] == 60  # the per-minute window binds on Free
    # Secret keys only: restricted and publishable keys cannot read the plan.
    for kind, scopes in (("restricted", ["orders:write"]), ("publishable", None)):
        refused = ws.client(ws.key(kind, scopes=scopes)).get("/v1/workspace")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "INSUFFICIENT_PERMISSIONS"


# -- windows ------------------------------------------------------------------------------------


def test_free_plan_the_61st_request_in_a_minute_is_refused_and_runs_nothing(ws: Workspace) -> None:
    set_plan(ws, "free")
    client = ws.client()
    room_in_this_minute()
    remaining = []
    for _ in range(60):
        response = client.post("/v1/orders", json=SMALL_ORDER)
        assert response.status_code == 201, response.text
        remaining.append(rate_headers(response)[1])
    assert remaining == list(range(59, -1, -1))
    refused = client.post("/v1/orders", json=SMALL_ORDER, headers={"Idempotency-Key": "rl-61"})
    assert_rate_limited(refused, 60, "per_minute")
    assert int(refused.headers["retry-after"]) <= 60
    # Another key of the workspace has its own limits: it sees exactly the 60 orders.
    orders = ws.client(ws.key()).get("/v1/orders", params={"limit": 100}).json()["data"]
    assert len(orders) == 60


def test_a_burst_above_the_per_second_limit_is_refused_for_the_rest_of_the_second(ws: Workspace) -> None:
    set_plan(ws, "enterprise", per_second=5)
    client = ws.client()
    client.get("/v1/workspace")  # warm the connection
    start_of_a_second()
    codes = [client.get("/v1/orders/ord_doesnotexist") for _ in range(8)]
    assert [r.status_code for r in codes] == [404] * 5 + [429] * 3
    assert rate_headers(codes[0])[0] == 5  # the per-second window binds
    error = assert_rate_limited(codes[5], 5, "per_second")
    assert error["retry_after"] == 1
    time.sleep(1.05)
    assert client.get("/v1/workspace").status_code == 200


def test_the_concurrency_limit_refuses_requests_beyond_those_in_flight(ws: Workspace) -> None:
    set_plan(ws, "enterprise", concurrent=1)
    batch = [SMALL_ORDER] * 1000
    start = threading.Barrier(4)
    sent_at = time.time()

    def bulk(_: int) -> httpx.Response:
        with httpx.Client(base_url=ws.server.base_url, headers={"Authorization": f"Bearer {ws.secret}"}) as c:
            c.get("/health")  # connect before the race
            start.wait()
            return c.post("/v1/orders/bulk", json=batch, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(bulk, range(4)))
    codes = sorted(r.status_code for r in responses)
    assert 201 in codes and 429 in codes and set(codes) <= {201, 429}, codes
    error = assert_rate_limited(next(r for r in responses if r.status_code == 429), 1, "concurrent", sent_at=sent_at)
    assert error["retry_after"] == 1
    created = codes.count(201) * 1000
    client = ws.client()
    assert client.post("/v1/orders", json=SMALL_ORDER).json()["order_number"] == 1001 + created  # slot given back


# -- across processes ---------------------------------------------------------------------------


def _alternate(servers: list[ServerProcess], key: str, count: int) -> list[int]:
    clients = [httpx.Client(base_url=s.base_url, headers={"Authorization": f"Bearer {key}"}) for s in servers]
    try:
        for client in clients:
            client.get("/health")
        room_in_this_minute()
        return [clients[i % len(clients)].get("/v1/workspace").status_code for i in range(count)]
    finally:
        for client in clients:
            client.close()


def _shared_limit(database_url: str, env: dict[str, str] | None = None) -> list[int]:
    servers = [ServerProcess(database_url, env=env).start()]
    try:
        servers.append(ServerProcess(database_url, env=env).start())
        ws = new_workspace(servers[0])
        set_plan(ws, "free")
        return _alternate(servers, ws.secret, 70)
    finally:
        for server in servers:
            server.stop()


def test_two_server_processes_share_the_per_minute_limit_exactly(fresh_database: str) -> None:
    codes = _shared_limit(fresh_database)
    assert codes.count(200) == 60 and codes.count(429) == 10, codes
    assert codes[:60] == [200] * 60


def _redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def test_two_server_processes_share_the_limit_through_redis(fresh_database: str) -> None:
    if not _redis_reachable():
        message = f"Redis is not reachable at {REDIS_URL} (set STATESET_TEST_REDIS_URL to point elsewhere)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true requires the Redis tests to run", pytrace=False)
        pytest.skip(message)
    codes = _shared_limit(fresh_database, {"STATESET_REDIS_URL": REDIS_URL})
    assert codes.count(200) == 60 and codes.count(429) == 10, codes

    async def counted_in_database(db) -> int:
        return int(await db.read(lambda tx: tx.fetchval("SELECT count(*) FROM rate_limit_counters")))

    assert run(with_database(fresh_database, counted_in_database)) == 0  # the counts lived in Redis


# -- changing plans -----------------------------------------------------------------------------


def test_set_plan_and_create_with_a_plan_through_the_cli(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--database-url", ws.server.database_url]
    assert cli(["workspaces", "set-plan", ws.id, "--plan", "starter", *url]) == 0
    assert "plan=starter per_second=200 per_minute=100 per_day=10000 concurrent=25" in capsys.readouterr().out
    assert rate_headers(ws.client().get("/v1/workspace"))[0] == 100

    assert cli(["workspaces", "set-plan", ws.id, "--plan", "growth", "--per-minute", "5", *url]) == 2
    assert "only available on the enterprise plan" in capsys.readouterr().err

    custom = ["--per-minute", "unlimited", "--per-second", "7", "--concurrent", "0"]
    assert cli(["workspaces", "set-plan", ws.id, "--plan", "enterprise", *custom, *url]) == 0
    assert "per_second=7 per_minute=unlimited per_day=unlimited concurrent=unlimited" in capsys.readouterr().out
    limits = ws.client().get("/v1/workspace").json()["limits"]
    assert limits == {"per_second": 7, "per_minute": None, "per_day": None, "concurrent": None}

    assert cli(["workspaces", "create", "--name", "Shop", "--plan", "scale", *url]) == 0
    created = capsys.readouterr().out.strip()
    row = run(
        with_database(ws.server.database_url, lambda db: db.read(lambda tx: repository.get_workspace(tx, created)))
    )
    assert (row["plan"], row["operator"]) == ("scale", 0)


def test_only_the_operator_workspace_can_change_plans_over_the_api(ws: Workspace, other_ws: Workspace) -> None:
    operator = httpx.Client(base_url=ws.server.base_url, headers={"Authorization": f"Bearer {ws.server.first_key}"})
    try:
        assert operator.get("/v1/workspace").json()["operator"] is True
        changed = operator.put(f"/v1/workspaces/{ws.id}/plan", json={"plan": "free"})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["id"], changed.json()["plan"]) == (ws.id, "free")
        assert rate_headers(ws.client().get("/v1/workspace"))[0] == 60  # in force at once

        custom = {"plan": "enterprise", "per_minute": 1234, "concurrent": "unlimited"}
        replayed = [
            operator.put(f"/v1/workspaces/{ws.id}/plan", json=custom, headers={"Idempotency-Key": "plan-1"})
            for _ in range(2)
        ]
        assert replayed[0].json()["limits"]["per_minute"] == 1234
        assert replayed[0].json()["custom_limits"] == {
            "per_second": None,
            "per_minute": 1234,
            "per_day": None,
            "concurrent": 0,
        }
        assert replayed[1].headers.get("idempotent-replayed") == "true"
        assert replayed[1].json() == replayed[0].json()

        refused = operator.put(f"/v1/workspaces/{ws.id}/plan", json={"plan": "scale", "per_day": 5})
        assert refused.status_code == 422 and refused.json()["error"]["details"]["field"] == "per_day"
        unknown = operator.put(f"/v1/workspaces/{ws.id}/plan", json={"plan": "platinum"})
        assert unknown.status_code == 422 and unknown.json()["error"]["details"]["field"] == "plan"
        missing = operator.put("/v1/workspaces/ws_doesnotexist/plan", json={"plan": "free"})
        assert missing.status_code == 404
    finally:
        operator.close()

    for client in (other_ws.client(), ws.client(), ws.client(ws.key("restricted", scopes=["orders:write"]))):
        forbidden = client.put(f"/v1/workspaces/{other_ws.id}/plan", json={"plan": "enterprise"})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "INSUFFICIENT_PERMISSIONS"
    assert other_ws.client().get("/v1/workspace").json()["plan"] == "enterprise"
