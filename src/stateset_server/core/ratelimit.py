"""Rate limits per API key, shared by every server process: per-second burst, per-minute, per-day
fixed windows (aligned to the Unix clock, UTC) and concurrent in-flight requests.

Why it is built this way: the server answers 10,000+ requests/s, so a store round trip per request
is not affordable, yet limits must hold across processes and nodes. Each process therefore:

- counts requests locally and flushes the counts to the shared store (core/ratelimit_store.py: the
  database, or Redis) at most every 100 ms in one operation, reading back the global counts;
- admits a request locally while `last known global count + this process's unflushed count` stays
  below 80 % of every window's limit;
- checks a request *exactly* in the store (one atomic check-and-count) when a window is at or above
  80 %, when a window's limit is small (at most 1,000: the cost is bounded by the limit itself and
  small plans must be exact), or when the bucket has not been read from the store for a second;
- refuses locally, without the store, once the global count read from the store is at the limit:
  counts never go down within a window, so the refusal is certain.

Refused requests are not counted. Concurrency: with Redis every request INCRs/DECRs a counter (exact);
with the database each process publishes its in-flight counts at every flush and adds the other
processes' last published counts to its own (exact within a process, ~100 ms behind across them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from stateset_server.core.clock import iso
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import new_id
from stateset_server.core.ratelimit_store import CounterStore, Delta, Probe, Window, open_counter_store
from stateset_server.storage import Database
from stateset_server.workspaces.plans import Limits

__all__ = [
    "FLUSH_INTERVAL",
    "PERIODS",
    "SYNC_AT_MOST",
    "SYNC_FRACTION",
    "Admission",
    "RateLimited",
    "RateLimiter",
    "open_limiter",
    "retry_after",
    "window_at",
]

log = logging.getLogger("stateset_server.ratelimit")

# (store code, length in seconds, Limits field): the fixed windows.
PERIODS: tuple[tuple[str, int, str], ...] = (("s", 1, "per_second"), ("m", 60, "per_minute"), ("d", 86_400, "per_day"))
_LENGTH = {code: length for code, length, _ in PERIODS}
_FIELD = {code: name for code, _, name in PERIODS}
FLUSH_INTERVAL = 0.1  # seconds between flushes to the shared store
SYNC_FRACTION = 0.8  # from this share of a window's limit on, every request is checked in the store
SYNC_AT_MOST = 1_000  # windows with a limit this small are always checked in the store
COLD_AFTER = 1.0  # seconds without a store read before a bucket's next request checks the store
IDLE_EVICT = 120.0  # seconds after which an idle bucket's local state is dropped
PURGE_EVERY = 60.0  # seconds between deletions of ended windows
WARN_EVERY = 30.0  # seconds between repeated warnings about an unreachable store

Header = tuple[bytes, bytes]
_LIMIT, _REMAINING, _RESET = b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset"


def window_at(now: int, period: str) -> Window:
    """The fixed window of `period` that contains Unix second `now`."""
    length = _LENGTH[period]
    return Window(period, now - now % length, length)


def retry_after(reset: int, now: float) -> int:
    """Whole seconds until `reset` (Unix seconds), at least 1: clients must never be told to retry now."""
    return max(1, math.ceil(reset - now))


class RateLimited(ApiError):
    """429 with the spec's fields beside code and message (`fields`) and the retry headers."""

    def __init__(self, limit_name: str, limit: int, reset: int, now: float) -> None:
        wait = retry_after(reset, now)
        super().__init__(
            "RATE_LIMITED",
            f"Rate limit exceeded. Please retry after {wait} seconds.",
            {"limit_type": limit_name, "limit": limit, "scope": "api_key"},
            headers={
                "Retry-After": str(wait),
                "X-RateLimit-Retry-After": str(wait),
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            },
        )
        self.fields = {"retry_after": wait, "limit": limit, "remaining": 0, "reset_at": iso(reset * 1_000_000)}


@dataclass(slots=True)
class Admission:
    """An admitted request: the headers its response carries, and the concurrency slot it holds."""

    headers: list[Header]
    slot: str | None = None  # the bucket whose in-flight count this request holds


@dataclass(frozen=True, slots=True)
class _Plan:
    """The limited windows of one set of limits during one second."""

    second: int
    # window, limit, count key, "check exactly above this estimate", encoded (limit, reset) headers
    checks: tuple[tuple[Window, int, tuple[str, int], float, tuple[Header, Header]], ...]
    windows: list[tuple[Window, int]]
    periods: tuple[str, ...]


class _Bucket:
    """One API key's state in this process. Keys of the count dicts are (period, window_start)."""

    __slots__ = (
        "inflight",
        "known",
        "others",
        "pending",
        "periods",
        "reported",
        "synced_at",
        "transit",
        "used",
        "watch_conc",
    )

    def __init__(self) -> None:
        self.known: dict[tuple[str, int], int] = {}  # global hits as last read from the store
        self.transit: dict[tuple[str, int], int] = {}  # sent to the store, answer not yet back
        self.pending: dict[tuple[str, int], int] = {}  # admitted here, not yet sent
        self.periods: tuple[str, ...] = ()  # the limited windows at the last request
        self.inflight = 0  # requests of this key running in this process
        self.others = 0  # requests of this key running in other processes (database store)
        self.watch_conc = False  # the key has a concurrency limit: publish and read in-flight counts
        self.reported = 0  # the in-flight count this process last published (database store)
        self.synced_at = -math.inf  # monotonic time of the last store read
        self.used = -math.inf  # monotonic time of the last request

    def estimate(self, key: tuple[str, int]) -> int:
        return self.known.get(key, 0) + self.transit.get(key, 0) + self.pending.get(key, 0)

    def idle(self) -> bool:
        return not (self.pending or self.transit or self.inflight or self.reported)


def _add(counts: dict[tuple[str, int], int], key: tuple[str, int], n: int) -> None:
    value = counts.get(key, 0) + n
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


class RateLimiter:
    def __init__(
        self,
        store: CounterStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        self.store = store
        self._clock = clock
        self._monotonic = monotonic
        self._interval = flush_interval
        self._buckets: dict[str, _Bucket] = {}
        self._plans: dict[Limits, _Plan] = {}
        self._task: asyncio.Task[None] | None = None
        self._last_purge = monotonic()
        self._last_warning = -math.inf

    # -- the request path ------------------------------------------------------------------------

    async def admit(self, bucket_key: str, limits: Limits) -> Admission:
        """Count one request of `bucket_key` (an API key id), or raise RateLimited without counting it."""
        now = self._clock()
        second = int(now)
        bucket = self._buckets.get(bucket_key)
        if bucket is None:
            bucket = self._buckets[bucket_key] = _Bucket()
        mono = self._monotonic()
        bucket.used = mono
        plan = self._plans.get(limits)
        if plan is None or plan.second != second:
            plan = self._plan(limits, second)
        bucket.periods = plan.periods
        windows = plan.windows

        slot = None
        if limits.concurrent is not None and await self._acquire(bucket_key, bucket, limits.concurrent, now):
            slot = bucket_key
        try:
            exact = mono - bucket.synced_at > COLD_AFTER
            certain: list[tuple[Window, int]] = []
            known, transit, pending = bucket.known, bucket.transit, bucket.pending
            fewest, binding = 0, None
            for window, limit, key, exact_above, fixed in plan.checks:
                count = known.get(key, 0)
                if count >= limit:
                    certain.append((window, limit))
                    continue
                estimate = count + transit.get(key, 0) + pending.get(key, 0)
                if estimate + 1 > exact_above:
                    exact = True
                # Checks go from the shortest window to the longest: "<=" gives ties to the longer one.
                if binding is None or limit - estimate - 1 <= fewest:
                    fewest, binding = limit - estimate - 1, fixed
            if certain:
                raise self._refusal(certain, now)
            if exact and windows:
                await self._check(bucket_key, bucket, windows, now)
                headers = self._headers(bucket, plan)
            else:
                for check in plan.checks:
                    pending[check[2]] = pending.get(check[2], 0) + 1
                headers = [] if binding is None else [binding[0], (_REMAINING, str(fewest).encode()), binding[1]]
        except BaseException:
            if slot is not None:
                await self._release(bucket_key)
            raise
        return Admission(headers, slot)

    def _plan(self, limits: Limits, second: int) -> _Plan:
        """The limited windows of `limits` at `second`; cached, as every request of the second shares them."""
        checks = []
        for code, _, name in PERIODS:
            limit = getattr(limits, name)
            if limit is not None:
                window = window_at(second, code)
                exact_above = 0.0 if limit <= SYNC_AT_MOST else limit * SYNC_FRACTION
                fixed = ((_LIMIT, str(limit).encode()), (_RESET, str(window.end).encode()))
                checks.append((window, limit, (code, window.start), exact_above, fixed))
        windows = [(window, limit) for window, limit, *_ in checks]
        plan = _Plan(second, tuple(checks), windows, tuple(window.period for window, _ in windows))
        if len(self._plans) > 4096:  # many distinct custom limits: start over rather than grow
            self._plans.clear()
        self._plans[limits] = plan
        return plan

    async def release(self, admission: Admission) -> None:
        """The request finished: give back its concurrency slot."""
        if admission.slot is not None:
            await self._release(admission.slot)

    async def _acquire(self, bucket_key: str, bucket: _Bucket, limit: int, now: float) -> bool:
        """Take a concurrency slot or raise RateLimited; False when admitted without one (store down)."""
        bucket.watch_conc = True
        if self.store.exact_concurrency:
            try:
                granted = await self.store.acquire(bucket_key, limit)
            except Exception as exc:  # fail open: an unreachable store must not take the API down
                self._warn("rate limit store unreachable for a concurrency check", exc)
                return False
        else:
            granted = bucket.inflight + bucket.others < limit
        if not granted:
            raise RateLimited("concurrent", limit, int(now) + 1, now)
        bucket.inflight += 1
        return True

    async def _release(self, bucket_key: str) -> None:
        bucket = self._buckets.get(bucket_key)
        if bucket is not None and bucket.inflight > 0:
            bucket.inflight -= 1
        if self.store.exact_concurrency:
            try:
                await self.store.release(bucket_key)
            except Exception as exc:  # the key's TTL repairs the count
                self._warn("rate limit store unreachable when releasing a concurrency slot", exc)

    async def _check(self, bucket_key: str, bucket: _Bucket, windows: list[tuple[Window, int]], now: float) -> None:
        """The exact path: this request (and the bucket's unflushed counts) checked and counted atomically."""
        taken: list[tuple[tuple[str, int], int]] = []
        probes = []
        for window, limit in windows:
            key = (window.period, window.start)
            pending = bucket.pending.pop(key, 0)
            taken.append((key, pending))
            _add(bucket.transit, key, pending)
            probes.append(Probe(window, pending, limit))
        hits: list[int] | None = None
        try:
            allowed, hits = await self.store.check_and_add(bucket_key, probes, int(now))
        except Exception as exc:  # fail open, keeping the counts for the next flush
            self._warn("rate limit store unreachable; admitting without an exact check", exc)
            allowed = True
            for key, pending in taken:
                _add(bucket.pending, key, pending + 1)
        finally:
            for key, pending in taken:
                _add(bucket.transit, key, -pending)
        if hits is None:
            return
        for (key, _), count in zip(taken, hits, strict=True):
            if count > bucket.known.get(key, 0):
                bucket.known[key] = count
        bucket.synced_at = self._monotonic()
        if not allowed:
            full = [(w, limit) for (w, limit), count in zip(windows, hits, strict=True) if count + 1 > limit]
            raise self._refusal(full or windows, now)

    @staticmethod
    def _refusal(full: list[tuple[Window, int]], now: float) -> RateLimited:
        # The window that frees up last decides when a retry can succeed.
        window, limit = max(full, key=lambda item: item[0].end)
        return RateLimited(_FIELD[window.period], limit, window.end, now)

    @staticmethod
    def _headers(bucket: _Bucket, plan: _Plan) -> list[Header]:
        """X-RateLimit-* of the binding window: the one with the fewest requests left (ties: the longer
        window). With no limited window (custom "unlimited" everywhere) there is nothing to report.
        (admit computes the same inline on its fast path.)"""
        fewest, binding = 0, None
        for _, limit, key, _, fixed in plan.checks:
            remaining = max(0, limit - bucket.estimate(key))
            if binding is None or remaining <= fewest:
                fewest, binding = remaining, fixed
        if binding is None:
            return []
        return [binding[0], (_REMAINING, str(fewest).encode()), binding[1]]

    # -- the background flush --------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rate-limit-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            for bucket in self._buckets.values():
                bucket.inflight = 0
            await self.flush()  # this process's last counts still count
            await self.store.close()
        except Exception as exc:
            self._warn("could not flush rate limit counts at shutdown", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
                if self._monotonic() - self._last_purge >= PURGE_EVERY:
                    self._last_purge = self._monotonic()
                    await self.store.purge(int(self._clock()))
            except Exception as exc:  # the next round tries again
                self._warn("rate limit flush failed", exc)

    async def flush(self) -> None:
        """Send every bucket's unflushed counts and in-flight numbers in one store operation and read
        back the global counts of the buckets used in the last second. Does nothing when idle."""
        mono = self._monotonic()
        now = int(self._clock())
        deltas: list[Delta] = []
        sent: list[tuple[_Bucket, dict[tuple[str, int], int]]] = []
        watch: dict[str, list[Window]] = {}
        inflight: dict[str, int] = {}
        for key, bucket in self._buckets.items():
            if bucket.pending:
                moved, bucket.pending = bucket.pending, {}
                for (period, start), hits in moved.items():
                    deltas.append(Delta(key, Window(period, start, _LENGTH[period]), hits))
                    _add(bucket.transit, (period, start), hits)
                sent.append((bucket, moved))
            recent = mono - bucket.used <= COLD_AFTER
            if recent:
                watch[key] = [window_at(now, period) for period in bucket.periods]
            if bucket.watch_conc and (recent or bucket.inflight or bucket.reported):
                inflight[key] = bucket.inflight
        publish = None if self.store.exact_concurrency else inflight
        try:
            result = await self.store.sync(deltas, watch, publish, now) if deltas or watch or publish else None
        except BaseException:
            for bucket, moved in sent:  # not counted yet: the next flush sends them again
                for key, hits in moved.items():
                    _add(bucket.pending, key, hits)
            raise
        finally:
            for bucket, moved in sent:
                for key, hits in moved.items():
                    _add(bucket.transit, key, -hits)
        if result is None:
            self._evict(mono, now)
            return
        for (key, period, start), hits in result.counts.items():
            bucket = self._buckets.get(key)
            if bucket is not None and hits > bucket.known.get((period, start), 0):
                bucket.known[(period, start)] = hits
        for key in watch:
            self._buckets[key].synced_at = mono
        if publish is not None:
            for key, count in publish.items():
                self._buckets[key].others = result.others_inflight.get(key, 0)
                self._buckets[key].reported = count
        self._evict(mono, now)

    def _evict(self, mono: float, now: int) -> None:
        """Forget ended windows and buckets idle for a while (their next request reads the store)."""
        for key in list(self._buckets):
            bucket = self._buckets[key]
            if mono - bucket.used > IDLE_EVICT and bucket.idle():
                del self._buckets[key]
                continue
            stale = [k for k in bucket.known if k[1] + _LENGTH[k[0]] <= now]
            for k in stale:
                del bucket.known[k]

    def _warn(self, message: str, exc: BaseException) -> None:
        if self._monotonic() - self._last_warning >= WARN_EVERY:
            self._last_warning = self._monotonic()
            log.warning("%s: %s", message, exc)


async def open_limiter(db: Database) -> RateLimiter:
    """The limiter for this process: Redis when STATESET_REDIS_URL is set, else the database."""
    store = await open_counter_store(db, new_id("node"), os.environ.get("STATESET_REDIS_URL") or None)
    return RateLimiter(store)
