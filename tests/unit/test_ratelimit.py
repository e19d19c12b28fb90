"""Rate limits without a server: window arithmetic, plans and custom limits, the limiter's batching
and exact modes (on an in-memory store and on the real SQLite store)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis

from stateset_server.core.ratelimit import RateLimited, RateLimiter, retry_after, window_at
from stateset_server.core.ratelimit_store import (
    DatabaseCounterStore,
    Delta,
    Probe,
    RedisCounterStore,
    SyncResult,
    Window,
    WindowKey,
)
from stateset_server.storage import open_database
from stateset_server.storage.migrate import migrate
from stateset_server.workspaces.plans import (
    PLANS,
    Limits,
    PlanError,
    default_plan,
    effective_limits,
    parse_limit,
    validate_plan,
)

T0 = 1_700_000_040.25  # 0.25 s into a minute (1_700_000_040 is a multiple of 60)


# -- windows ------------------------------------------------------------------------------------


def test_windows_are_fixed_and_aligned_to_the_unix_clock() -> None:
    assert window_at(1_700_000_059, "m") == Window("m", 1_700_000_040, 60)
    assert window_at(1_700_000_040, "m").start == 1_700_000_040
    assert window_at(1_700_000_099, "m").end == 1_700_000_100
    assert window_at(1_700_000_000, "d") == Window("d", 1_699_920_000, 86_400)  # midnight UTC
    assert window_at(1_700_000_000, "s") == Window("s", 1_700_000_000, 1)


def test_retry_after_rounds_up_and_is_never_zero() -> None:
    assert retry_after(100, 99.2) == 1
    assert retry_after(100, 100.0) == 1
    assert retry_after(100, 101.0) == 1
    assert retry_after(160, 100.5) == 60
    assert retry_after(160, 100.0) == 60


def test_rate_limited_has_the_spec_fields_and_headers() -> None:
    error = RateLimited("per_minute", 60, 1_700_000_100, 1_700_000_058.5)
    assert error.status == 429 and error.code == "RATE_LIMITED"
    assert error.message == "Rate limit exceeded. Please retry after 42 seconds."
    assert error.fields == {"retry_after": 42, "limit": 60, "remaining": 0, "reset_at": "2023-11-14T22:15:00.000Z"}
    assert error.headers["Retry-After"] == error.headers["X-RateLimit-Retry-After"] == "42"
    assert error.headers["X-RateLimit-Reset"] == "1700000100"
    assert error.details["limit_type"] == "per_minute"


# -- plans --------------------------------------------------------------------------------------


def test_the_plan_table_is_the_api_references() -> None:
    assert PLANS["free"] == Limits(100, 60, 1_000, 10)
    assert PLANS["starter"] == Limits(200, 100, 10_000, 25)
    assert PLANS["growth"] == Limits(1_000, 1_000, 100_000, 100)
    assert PLANS["scale"] == Limits(5_000, 5_000, 500_000, 500)
    enterprise = PLANS["enterprise"]
    assert enterprise.per_day is None and enterprise.concurrent is None
    assert enterprise.per_minute is not None and enterprise.per_minute >= 20_000 * 60  # benchmarks fit


def test_custom_limits_replace_the_plans_window_by_window_and_zero_is_unlimited() -> None:
    assert effective_limits("free") == PLANS["free"]
    assert effective_limits("enterprise", None, 100, None, 1) == Limits(50_000, 100, None, 1)
    assert effective_limits("enterprise", 0, 0, 5, 0) == Limits(None, None, 5, None)
    assert effective_limits("no-such-plan") == PLANS["enterprise"]


def test_validate_plan_accepts_custom_limits_on_enterprise_only() -> None:
    assert validate_plan("Enterprise", {"per_minute": 10}) == (
        "enterprise",
        {"per_second": None, "per_minute": 10, "per_day": None, "concurrent": None},
    )
    assert validate_plan("free", {})[0] == "free"
    with pytest.raises(PlanError, match="only available on the enterprise plan") as refused:
        validate_plan("starter", {"concurrent": 5})
    assert refused.value.field == "concurrent"
    with pytest.raises(PlanError, match="unknown plan") as unknown:
        validate_plan("platinum", {})
    assert unknown.value.field == "plan"
    with pytest.raises(PlanError):
        validate_plan("enterprise", {"per_day": -1})


def test_parse_limit_reads_numbers_and_unlimited() -> None:
    assert parse_limit("unlimited") == 0
    assert parse_limit(" Unlimited ") == 0
    assert parse_limit("1,000") == 1000
    assert parse_limit("0") == 0
    assert parse_limit(25) == 25
    assert parse_limit(None) is None
    for bad in ("-1", "ten", "1.5", -3, True):
        with pytest.raises(PlanError):
            parse_limit(bad, "per_day")


def test_the_default_plan_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATESET_DEFAULT_PLAN", raising=False)
    assert default_plan() == "enterprise"
    monkeypatch.setenv("STATESET_DEFAULT_PLAN", "Growth")
    assert default_plan() == "growth"
    monkeypatch.setenv("STATESET_DEFAULT_PLAN", "gold")
    with pytest.raises(PlanError):
        default_plan()


# -- the limiter --------------------------------------------------------------------------------


class MemoryStore:
    """The store contract in memory, counting how often each path is used."""

    exact_concurrency = False

    def __init__(self) -> None:
        self.hits: dict[WindowKey, int] = defaultdict(int)
        self.inflight: dict[tuple[str, str], int] = {}
        self.syncs = 0
        self.checks = 0
        self.fail = False

    async def sync(self, deltas: list[Delta], watch: dict[str, list[Window]], inflight, now: int) -> SyncResult:
        if self.fail:
            raise ConnectionError("store down")
        self.syncs += 1
        for d in deltas:
            self.hits[(d.bucket, d.window.period, d.window.start)] += d.hits
        counts = {k: v for k, v in self.hits.items() if k[0] in watch}
        return SyncResult(counts, {})

    async def check_and_add(self, bucket: str, probes: list[Probe], now: int) -> tuple[bool, list[int]]:
        if self.fail:
            raise ConnectionError("store down")
        self.checks += 1
        keys = [(bucket, p.window.period, p.window.start) for p in probes]
        for key, p in zip(keys, probes, strict=True):
            self.hits[key] += p.pending
        allowed = all(p.limit is None or self.hits[k] + 1 <= p.limit for k, p in zip(keys, probes, strict=True))
        if allowed:
            for key in keys:
                self.hits[key] += 1
        return allowed, [self.hits[k] for k in keys]

    async def purge(self, now: int) -> None:
        return None

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(store: object, clock: Clock) -> RateLimiter:
    return RateLimiter(store, clock=clock, monotonic=clock)  # type: ignore[arg-type]


ENTERPRISE = PLANS["enterprise"]


def test_a_busy_key_is_counted_locally_and_flushed_in_one_batch() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        for _ in range(500):
            await rl.admit("key_a", ENTERPRISE)
        assert store.checks == 1  # only the first request of a cold key goes to the store
        await rl.flush()
        assert store.syncs == 1
        assert store.hits[("key_a", "m", 1_700_000_040)] == 500
        assert store.hits[("key_a", "s", 1_700_000_040)] == 500
        await rl.flush()  # counts already sent are not sent again
        assert store.hits[("key_a", "m", 1_700_000_040)] == 500

    asyncio.run(scenario())


def test_a_key_near_its_limit_is_checked_exactly_in_the_store() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        limits = Limits(None, 5_000, None, None)  # large enough to be batched up to 80 %
        for _ in range(4_000):
            await rl.admit("key_a", limits)
        assert store.checks == 1
        for _ in range(1_000):
            await rl.admit("key_a", limits)
        assert store.checks == 1 + 1_000  # from 80 % on, every request is checked in the store
        with pytest.raises(RateLimited) as refused:
            await rl.admit("key_a", limits)
        assert store.checks == 1 + 1_000  # the store said "full": certain, refused locally
        assert refused.value.fields["limit"] == 5_000
        await rl.flush()
        assert store.hits[("key_a", "m", 1_700_000_040)] == 5_000  # the refused request is not counted

    asyncio.run(scenario())


def test_two_processes_sharing_a_store_admit_exactly_the_limit() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        first, second = limiter(store, clock), limiter(store, clock)
        free = PLANS["free"]
        admitted = 0
        for i in range(70):
            process = first if i % 2 else second
            try:
                await process.release(await process.admit("key_a", free))
                admitted += 1
            except RateLimited:
                pass
            if i % 7 == 0:
                await first.flush()
        assert admitted == 60

    asyncio.run(scenario())


def test_a_new_minute_starts_from_zero() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        limits = Limits(None, 2, None, None)
        await rl.admit("key_a", limits)
        await rl.admit("key_a", limits)
        with pytest.raises(RateLimited) as refused:
            await rl.admit("key_a", limits)
        assert refused.value.fields["retry_after"] == 60  # 59.75 s to the next minute, rounded up
        clock.now += 60
        await rl.admit("key_a", limits)

    asyncio.run(scenario())


def test_headers_describe_the_window_with_the_fewest_requests_left() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        free = await rl.admit("key_a", PLANS["free"])
        assert dict(free.headers) == {
            b"x-ratelimit-limit": b"60",
            b"x-ratelimit-remaining": b"59",
            b"x-ratelimit-reset": b"1700000100",
        }
        burst = await rl.admit("key_b", Limits(3, 100, None, None))
        assert dict(burst.headers)[b"x-ratelimit-limit"] == b"3"
        assert dict(burst.headers)[b"x-ratelimit-reset"] == b"1700000041"
        unlimited = await rl.admit("key_c", Limits(None, None, None, None))
        assert unlimited.headers == []

    asyncio.run(scenario())


def test_the_per_second_burst_limit() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        limits = Limits(5, None, None, None)
        for _ in range(5):
            await rl.admit("key_a", limits)
        with pytest.raises(RateLimited) as refused:
            await rl.admit("key_a", limits)
        assert refused.value.fields["retry_after"] == 1
        assert refused.value.details["limit_type"] == "per_second"
        clock.now += 1
        await rl.admit("key_a", limits)

    asyncio.run(scenario())


def test_the_concurrency_limit_counts_requests_in_flight() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        limits = Limits(None, None, None, 2)
        one = await rl.admit("key_a", limits)
        two = await rl.admit("key_a", limits)
        with pytest.raises(RateLimited) as refused:
            await rl.admit("key_a", limits)
        assert refused.value.details["limit_type"] == "concurrent"
        assert refused.value.fields["retry_after"] == 1
        await rl.release(one)
        three = await rl.admit("key_a", limits)
        await rl.release(two)
        await rl.release(three)
        # A refusal by a window gives the slot back at once.
        tight = Limits(None, 1, None, 1)
        await rl.release(await rl.admit("key_b", tight))
        with pytest.raises(RateLimited):
            await rl.admit("key_b", tight)
        assert rl._buckets["key_b"].inflight == 0

    asyncio.run(scenario())


def test_an_unreachable_store_admits_and_keeps_the_counts_for_later() -> None:
    async def scenario() -> None:
        store, clock = MemoryStore(), Clock()
        rl = limiter(store, clock)
        store.fail = True
        await rl.admit("key_a", PLANS["free"])
        with pytest.raises(ConnectionError):
            await rl.flush()  # fails (the flush loop logs it); the count stays pending
        store.fail = False
        await rl.flush()
        assert store.hits[("key_a", "m", 1_700_000_040)] == 1

    asyncio.run(scenario())


# -- the database store, on SQLite --------------------------------------------------------------


def test_the_database_store_checks_and_counts_atomically(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/rl.db"

    async def scenario() -> None:
        await migrate(url)
        db = await open_database(url)
        try:
            one, two = DatabaseCounterStore(db, "node_1"), DatabaseCounterStore(db, "node_2")
            minute = window_at(1_700_000_040, "m")
            assert await one.check_and_add("key_a", [Probe(minute, 3, 5)], 1_700_000_040) == (True, [4])
            assert await two.check_and_add("key_a", [Probe(minute, 0, 5)], 1_700_000_040) == (True, [5])
            assert await two.check_and_add("key_a", [Probe(minute, 0, 5)], 1_700_000_040) == (False, [5])
            result = await one.sync(
                [Delta("key_b", minute, 7)], {"key_a": [minute], "key_b": [minute]}, {"key_a": 2}, 1_700_000_041
            )
            assert result.counts == {("key_a", "m", 1_700_000_040): 5, ("key_b", "m", 1_700_000_040): 7}
            seen = await two.sync([], {"key_a": [minute]}, {"key_a": 0}, 1_700_000_041)
            assert seen.others_inflight == {"key_a": 2}  # node_1's published in-flight requests
            await one.close()  # withdraws node_1's rows
            assert (await two.sync([], {"key_a": [minute]}, {"key_a": 0}, 1_700_000_041)).others_inflight == {}
            await one.purge(1_700_000_100 + 60)  # still kept: clocks of other nodes may lag
            assert (await two.sync([], {"key_a": [minute]}, None, 1_700_000_041)).counts != {}
            await one.purge(1_700_000_100 + 61)  # the minute ended more than a minute ago
            assert (await two.sync([], {"key_a": [minute]}, None, 1_700_000_041)).counts == {}
        finally:
            await db.close()

    asyncio.run(scenario())


def test_the_redis_store_checks_counts_and_holds_slots_atomically() -> None:
    url = os.environ.get("STATESET_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is not reachable at {url}; CI=true requires the Redis tests to run", pytrace=False)
        pytest.skip(f"Redis is not reachable at {url}")

    async def scenario() -> None:
        store = RedisCounterStore(url)
        bucket = f"key_test_{uuid.uuid4().hex}"
        try:
            now = int(T0)
            second, minute = window_at(now, "s"), window_at(now, "m")
            probes = [Probe(second, 0, None), Probe(minute, 2, 3)]
            assert await store.check_and_add(bucket, probes, now) == (True, [1, 3])
            assert await store.check_and_add(bucket, [Probe(second, 0, None), Probe(minute, 0, 3)], now) == (
                False,
                [1, 3],
            )
            result = await store.sync([Delta(bucket, second, 4)], {bucket: [second, minute]}, None, now)
            assert result.counts == {(bucket, "s", second.start): 5, (bucket, "m", minute.start): 3}
            assert await store.acquire(bucket, 1) is True
            assert await store.acquire(bucket, 1) is False
            await store.release(bucket)
            assert await store.acquire(bucket, 1) is True
            await store.release(bucket)
            await store.release(bucket)  # never below zero
            assert await store.acquire(bucket, 1) is True
        finally:
            await store._redis.delete(*[store._key(bucket, w) for w in (second, minute)])
            await store._redis.delete(f"stateset:rl:{{{bucket}}}:inflight")
            await store.close()

    asyncio.run(scenario())
