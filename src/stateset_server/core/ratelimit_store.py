"""Where rate-limit counts are shared between server processes and nodes: the database, or Redis.

The limiter (core/ratelimit.py) talks to a store in two ways only:

- `sync`: the batched path, at most once per flush interval per process — add this process's
  counts, publish its in-flight requests (database store), and read back the global counts;
- `check_and_add`: the exact path, for one request of a bucket near (or at a small) limit — add the
  bucket's unflushed counts and, if no window would exceed its limit, count the request, atomically.

Windows are fixed and aligned to the Unix clock: (bucket, period, window_start) with period "s", "m"
or "d" and window_start in Unix seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from stateset_server.storage import Database, Tx

__all__ = [
    "DatabaseCounterStore",
    "Delta",
    "Probe",
    "RedisCounterStore",
    "SyncResult",
    "Window",
    "WindowKey",
    "open_counter_store",
]

WindowKey = tuple[str, str, int]  # (bucket, period, window_start)
_CHUNK = 500  # buckets per IN list: far below both engines' parameter limits


@dataclass(frozen=True, slots=True)
class Window:
    period: str  # "s", "m", "d"
    start: int  # Unix seconds
    length: int  # seconds

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True, slots=True)
class Delta:
    bucket: str
    window: Window
    hits: int


@dataclass(frozen=True, slots=True)
class Probe:
    """One window of one bucket for `check_and_add`: add `pending`, then require `hits + 1 <= limit`."""

    window: Window
    pending: int
    limit: int | None


@dataclass
class SyncResult:
    counts: dict[WindowKey, int]  # global hits of every live window of the watched buckets
    others_inflight: dict[str, int]  # requests in flight in other processes, per bucket (database store)


class CounterStore(Protocol):
    exact_concurrency: bool  # True: acquire/release count in-flight requests in the store itself

    async def sync(
        self, deltas: list[Delta], watch: dict[str, list[Window]], inflight: dict[str, int] | None, now: int
    ) -> SyncResult: ...
    async def check_and_add(self, bucket: str, probes: list[Probe], now: int) -> tuple[bool, list[int]]: ...
    async def acquire(self, bucket: str, limit: int) -> bool: ...
    async def release(self, bucket: str) -> None: ...
    async def purge(self, now: int) -> None: ...
    async def close(self) -> None: ...


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _in_list(first: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + count))


_UPSERT = (
    "INSERT INTO rate_limit_counters (bucket, period, window_start, hits, expires_at) VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (bucket, period, window_start) DO UPDATE SET hits = rate_limit_counters.hits + excluded.hits"
)


class DatabaseCounterStore:
    """Counts in `rate_limit_counters`, in-flight requests in `rate_limit_inflight` (per process).

    Every statement takes row locks in (bucket, period, window_start) order, so concurrent flushes and
    checks on PostgreSQL queue behind each other instead of deadlocking; SQLite's single writer runs
    them one after another anyway.
    """

    exact_concurrency = False
    INFLIGHT_TTL = 5  # seconds: a process that stopped publishing (crashed) no longer counts after this

    def __init__(self, db: Database, node: str) -> None:
        self._db = db
        self._node = node
        self._published = False  # whether this process has in-flight rows to refresh or clear

    async def _read_counts(self, tx: Tx, buckets: list[str], now: int) -> dict[WindowKey, int]:
        counts: dict[WindowKey, int] = {}
        for chunk in _chunks(buckets):
            rows = await tx.fetch(
                "SELECT bucket, period, window_start, hits FROM rate_limit_counters"
                f" WHERE expires_at > $1 AND bucket IN ({_in_list(2, len(chunk))})",
                now,
                *chunk,
            )
            for row in rows:
                counts[(row[0], row[1], int(row[2]))] = int(row[3])
        return counts

    async def _read_others(self, tx: Tx, buckets: list[str], now: int) -> dict[str, int]:
        others: dict[str, int] = {}
        for chunk in _chunks(buckets):
            rows = await tx.fetch(
                "SELECT bucket, SUM(inflight) FROM rate_limit_inflight"
                f" WHERE node <> $1 AND updated_at > $2 AND bucket IN ({_in_list(3, len(chunk))}) GROUP BY bucket",
                self._node,
                now - self.INFLIGHT_TTL,
                *chunk,
            )
            others.update({row[0]: int(row[1]) for row in rows})
        return others

    async def sync(
        self, deltas: list[Delta], watch: dict[str, list[Window]], inflight: dict[str, int] | None, now: int
    ) -> SyncResult:
        """One transaction per flush: upsert the deltas, replace this process's in-flight rows, read back.
        `inflight` lists the buckets with a concurrency limit (their local in-flight counts, zeros too)."""
        buckets = sorted(watch)
        limited = sorted(inflight or {})
        publish = inflight is not None and (self._published or any(inflight.values()))
        rows = sorted((d.bucket, d.window.period, d.window.start, d.hits, d.window.end) for d in deltas if d.hits)

        async def run(tx: Tx) -> SyncResult:
            if rows:
                await tx.executemany(_UPSERT, rows)
            if publish:
                assert inflight is not None
                await tx.execute("DELETE FROM rate_limit_inflight WHERE node = $1", self._node)
                busy = [(self._node, bucket, n, now) for bucket, n in sorted(inflight.items()) if n > 0]
                if busy:
                    await tx.executemany(
                        "INSERT INTO rate_limit_inflight (node, bucket, inflight, updated_at) VALUES ($1, $2, $3, $4)",
                        busy,
                    )
            counts = await self._read_counts(tx, buckets, now)
            others = await self._read_others(tx, limited, now) if limited else {}
            return SyncResult(counts, others)

        if rows or publish:
            result = await self._db.write(run)
            self._published = bool(inflight) and any(inflight.values())
            return result
        if not buckets:
            return SyncResult({}, {})
        return await self._db.read(run)

    async def check_and_add(self, bucket: str, probes: list[Probe], now: int) -> tuple[bool, list[int]]:
        ordered = sorted(probes, key=lambda p: (p.window.period, p.window.start))

        async def run(tx: Tx) -> tuple[bool, list[int]]:
            hits: dict[Window, int] = {}
            for probe in ordered:
                w = probe.window
                # The upsert creates the row if needed and (on PostgreSQL) locks it until commit.
                hits[w] = int(
                    await tx.fetchval(_UPSERT + " RETURNING hits", bucket, w.period, w.start, probe.pending, w.end)
                )
            allowed = all(p.limit is None or hits[p.window] + 1 <= p.limit for p in probes)
            if allowed:
                for probe in ordered:
                    w = probe.window
                    await tx.execute(
                        "UPDATE rate_limit_counters SET hits = hits + 1"
                        " WHERE bucket = $1 AND period = $2 AND window_start = $3",
                        bucket,
                        w.period,
                        w.start,
                    )
                    hits[w] += 1
            return allowed, [hits[p.window] for p in probes]

        return await self._db.write(run)

    async def acquire(self, bucket: str, limit: int) -> bool:  # pragma: no cover - exact_concurrency is False
        raise NotImplementedError

    async def release(self, bucket: str) -> None:  # pragma: no cover
        raise NotImplementedError

    async def purge(self, now: int) -> None:
        """Delete ended windows — a minute after their end, for nodes whose clocks run a little behind."""

        async def run(tx: Tx) -> None:
            await tx.execute("DELETE FROM rate_limit_counters WHERE expires_at < $1", now - 60)
            await tx.execute("DELETE FROM rate_limit_inflight WHERE updated_at < $1", now - self.INFLIGHT_TTL)

        await self._db.write(run)

    async def close(self) -> None:
        """Withdraw this process's in-flight rows so other processes stop counting them at once."""
        if self._published:
            node = self._node

            async def run(tx: Tx) -> None:
                await tx.execute("DELETE FROM rate_limit_inflight WHERE node = $1", node)

            await self._db.write(run)
            self._published = False


# Adds the bucket's unflushed hits to each window, then counts the request only if every window stays
# within its limit. KEYS: one per window. ARGV: per window, pending hits, limit (-1: none), TTL seconds.
_CHECK_AND_ADD = """
local n = #KEYS
local hits = {}
local allowed = 1
for i = 1, n do
  local pending = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local h
  if pending > 0 then
    h = redis.call('INCRBY', KEYS[i], pending)
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 * i]))
  else
    h = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  hits[i] = h
  if limit >= 0 and h + 1 > limit then allowed = 0 end
end
if allowed == 1 then
  for i = 1, n do
    hits[i] = redis.call('INCR', KEYS[i])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3 * i]))
  end
end
table.insert(hits, 1, allowed)
return hits
"""

# In-flight requests: INCR, refused (and undone) above the limit. The TTL is the safety net for a
# process that dies holding slots: its count disappears once the key sees no new request for a while.
_ACQUIRE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return n
"""
_RELEASE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
"""


class RedisCounterStore:
    """Counts in Redis keys `stateset:rl:{bucket}:<period>:<start>` that expire with their window; the
    `{bucket}` hash tag keeps one key's windows in one Redis Cluster slot, so the scripts stay atomic."""

    exact_concurrency = True
    INFLIGHT_TTL = 60  # seconds

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis  # imported only when Redis is configured

        self._redis: Any = redis.from_url(url)
        self._check = self._redis.register_script(_CHECK_AND_ADD)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    @staticmethod
    def _key(bucket: str, window: Window) -> str:
        return f"stateset:rl:{{{bucket}}}:{window.period}:{window.start}"

    @staticmethod
    def _ttl(window: Window, now: int) -> int:
        return max(1, window.end - now) + 5  # a little past the window's end: clocks differ between nodes

    async def sync(
        self, deltas: list[Delta], watch: dict[str, list[Window]], inflight: dict[str, int] | None, now: int
    ) -> SyncResult:
        pipe = self._redis.pipeline(transaction=False)
        for d in deltas:
            if d.hits:
                key = self._key(d.bucket, d.window)
                pipe.incrby(key, d.hits)
                pipe.expire(key, self._ttl(d.window, now))
        watched = [(bucket, w) for bucket, windows in watch.items() for w in windows]
        if watched:
            pipe.mget([self._key(bucket, w) for bucket, w in watched])
        results = await pipe.execute() if len(pipe) else []
        counts: dict[WindowKey, int] = {}
        if watched:
            for (bucket, w), value in zip(watched, results[-1], strict=True):
                counts[(bucket, w.period, w.start)] = int(value or 0)
        return SyncResult(counts, {})

    async def check_and_add(self, bucket: str, probes: list[Probe], now: int) -> tuple[bool, list[int]]:
        args: list[int] = []
        for p in probes:
            args += [p.pending, -1 if p.limit is None else p.limit, self._ttl(p.window, now)]
        reply = await self._check(keys=[self._key(bucket, p.window) for p in probes], args=args)
        return bool(int(reply[0])), [int(h) for h in reply[1:]]

    async def acquire(self, bucket: str, limit: int) -> bool:
        reply = await self._acquire(keys=[f"stateset:rl:{{{bucket}}}:inflight"], args=[limit, self.INFLIGHT_TTL])
        return int(reply) > 0

    async def release(self, bucket: str) -> None:
        await self._release(keys=[f"stateset:rl:{{{bucket}}}:inflight"])

    async def purge(self, now: int) -> None:
        return None  # keys expire by themselves

    async def close(self) -> None:
        await self._redis.aclose()


async def open_counter_store(db: Database, node: str, redis_url: str | None) -> CounterStore:
    """Redis when a URL is configured (checked now, so a wrong URL fails the start), else the database."""
    if not redis_url:
        return DatabaseCounterStore(db, node)
    store = RedisCounterStore(redis_url)
    try:
        await asyncio.wait_for(store._redis.ping(), timeout=5)
    except Exception:
        await store.close()
        raise
    return store
