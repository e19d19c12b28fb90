"""The dispatcher: sends the outbox's due deliveries, signed, and records every attempt.

Many dispatchers may run on one database (one per server process, plus `stateset-server worker`
processes); none sends a delivery another one holds. A dispatcher *claims* due deliveries by setting a
lease (`locked_until`, `locked_by`) in one atomic statement — on PostgreSQL the candidate rows are
picked `FOR UPDATE SKIP LOCKED`, on SQLite the single writer makes the UPDATE atomic by itself. While
a request is in flight the lease is renewed every third of its length; a dispatcher that dies stops
renewing, its lease runs out and another dispatcher claims the delivery again. Delivery is therefore
at-least-once: receivers de-duplicate on `webhook-id` (the event id).

After each attempt one transaction records it (status, latency, error, the first KB of the answer),
the delivery's new state (succeeded; pending again after a backoff with jitter; or failed), and the
endpoint's health — 410 Gone, or a long enough failure streak, disables the endpoint and emits
`webhook_endpoint.disabled`.

When idle a dispatcher polls with a cheap read every `poll` seconds (0.2); nothing on the request path
waits for it. Before each attempt the URL is resolved and checked again (ssrf), and the connection is
made to exactly the checked address, so a name that now resolves to a private address (DNS rebinding)
is not reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from stateset_server import __version__
from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.ids import random_token
from stateset_server.events import log
from stateset_server.storage import Database, Row, Tx
from stateset_server.webhooks import repository, ssrf
from stateset_server.webhooks.model import Endpoint, Outcome, disable_reason, judge, retry_after_seconds, retry_delay
from stateset_server.webhooks.signing import SIGNATURE_HEADER, signature_header, standard_headers

__all__ = [
    "TIMEOUT_SECONDS",
    "USER_AGENT",
    "DispatchSettings",
    "Dispatcher",
    "SendResult",
    "delivery_headers",
    "new_client",
    "send",
]

logger = logging.getLogger("stateset_server.webhooks")
# httpx logs every request at INFO; deliveries are recorded as attempts, so that would only be noise.
logging.getLogger("httpx").setLevel(logging.WARNING)
TIMEOUT_SECONDS = 30.0  # the API reference's webhook timeout, for the whole exchange
USER_AGENT = f"stateset-server/{__version__}"
SNIPPET_BYTES = 1024
_encode = msgspec.json.encode


@dataclass(frozen=True)
class DispatchSettings:
    concurrency: int = 16  # deliveries in flight per dispatcher
    retry_base: float = 5.0  # the first retry's delay; later ones are multiples (model.RETRY_STEPS)
    lease: float = 30.0  # seconds a claim holds without renewal: how soon a crashed worker's work resumes
    poll: float = 0.2
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, concurrency: int | None = None) -> DispatchSettings:
        env = os.environ

        def number(name: str, default: float, low: float) -> float:
            raw = env.get(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
            if not value >= low:
                raise ValueError(f"{name} must be at least {low}, got {raw!r}")
            return value

        workers = concurrency if concurrency is not None else int(number("STATESET_WEBHOOK_CONCURRENCY", 16, 1))
        return cls(
            concurrency=workers,
            retry_base=number("STATESET_WEBHOOK_RETRY_BASE_SECONDS", 5.0, 0.001),
            lease=number("STATESET_WEBHOOK_LEASE_SECONDS", 30.0, 0.5),
        )


@dataclass(frozen=True)
class SendResult:
    status_code: int | None  # None: no HTTP answer (network error, timeout, blocked address)
    latency_ms: int
    error: str | None
    response_body: str | None
    retry_after: str | None


def new_client(concurrency: int = 16, timeout: float = TIMEOUT_SECONDS) -> httpx.AsyncClient:
    """The HTTP client deliveries go through. No redirects (a redirect could lead to a private address),
    no proxies from the environment, and no connection reuse: connections go to a checked IP address
    with the endpoint's host name for TLS, and a pooled connection keyed by IP alone could otherwise
    carry another host's request."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
    )


def delivery_headers(
    endpoint_headers: dict[str, str], secrets: list[str], event_id: str, body: bytes
) -> dict[str, str]:
    """Custom headers first, so ours win (model.check_headers already refuses collisions)."""
    timestamp = int(time.time())
    return {
        **endpoint_headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature_header(secrets, timestamp, body),
        **standard_headers(event_id, timestamp),
    }


def _pinned(url: str, address: ssrf.IPAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL rewritten to connect to `address`, with the original Host header and TLS server name."""
    original = httpx.URL(url)
    target = original.copy_with(host=str(address))  # httpx brackets an IPv6 address itself
    host = original.raw_host.decode("ascii")  # IDNA-encoded, as TLS and Host need it
    extensions: dict[str, Any] = {"sni_hostname": host} if original.scheme == "https" else {}
    return str(target), {"Host": original.netloc.decode("ascii")}, extensions


async def _snippet(response: httpx.Response) -> str:
    """The first KB of the answer, without downloading a huge body."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= SNIPPET_BYTES:
            break
    return _storable(data[:SNIPPET_BYTES].decode("utf-8", "replace"))


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; a receiver's binary answer must not make the record fail."""
    return text.replace("\x00", "\ufffd")


async def send(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    policy: ssrf.UrlPolicy,
    timeout: float = TIMEOUT_SECONDS,
) -> SendResult:
    """POST `body` once; never raises for what the receiver or the network does."""
    started = time.perf_counter()

    def elapsed() -> int:
        return round((time.perf_counter() - started) * 1000)

    try:
        async with asyncio.timeout(timeout):
            addresses = await ssrf.resolve_url(url, policy)
            target, host, extensions = _pinned(url, addresses[0])
            async with client.stream(
                "POST", target, content=body, headers={**headers, **host}, extensions=extensions
            ) as response:
                snippet = await _snippet(response)
                return SendResult(response.status_code, elapsed(), None, snippet, response.headers.get("retry-after"))
    except ApiError as refused:
        return SendResult(None, elapsed(), f"blocked: {refused.details.get('issue', refused.message)}", None, None)
    except TimeoutError:
        return SendResult(None, elapsed(), f"timed out after {timeout:g} s", None, None)
    except Exception as exc:  # httpx errors, TLS, anything else: an attempt that failed, recorded and retried
        return SendResult(None, elapsed(), _storable(f"{type(exc).__name__}: {exc}"[:500]), None, None)


class Dispatcher:
    """Claims and sends due deliveries until stopped. `start`/`stop` in a server's lifespan, or `run`."""

    def __init__(
        self, db: Database, settings: DispatchSettings | None = None, policy: ssrf.UrlPolicy | None = None
    ) -> None:
        self.db = db
        self.settings = settings or DispatchSettings.from_env()
        self.policy = policy or ssrf.UrlPolicy.from_env()
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{random_token(6)}"
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """In-flight deliveries get a moment to finish (`_drain`); the rest are released for others."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def run(self) -> None:
        async with new_client(self.settings.concurrency, self.settings.timeout) as client:
            self._client = client
            heartbeat = asyncio.create_task(self._heartbeat())
            try:
                await self._loop()
            finally:
                heartbeat.cancel()
                await self._drain()

    async def _loop(self) -> None:
        while True:
            free = self.settings.concurrency - len(self._inflight)
            claimed = 0
            if free > 0:
                try:
                    claimed = await self._claim_and_start(free)
                except Exception:  # the database may be restarting; try again shortly
                    logger.exception("claiming webhook deliveries failed")
                    await asyncio.sleep(1.0)
                    continue
                if claimed == free:
                    continue  # at capacity: the next round waits for one to finish
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll)

    async def _drain(self, grace: float = 2.0) -> None:
        if not self._inflight:
            return
        await asyncio.wait(list(self._inflight.values()), timeout=grace)
        leftover = list(self._inflight)
        for task in list(self._inflight.values()):
            task.cancel()
        if leftover:
            # Cancelled mid-request: whether the receiver got it is unknown, so it is sent again.
            with contextlib.suppress(Exception):
                await self.db.write(lambda tx: self._release(tx, leftover))

    async def _release(self, tx: Tx, ids: list[str]) -> None:
        marks = ", ".join(f"${n}" for n in range(2, len(ids) + 2))
        await tx.execute(
            "UPDATE webhook_deliveries SET locked_until = NULL, locked_by = NULL"
            f" WHERE locked_by = $1 AND id IN ({marks})",
            self.worker,
            *ids,
        )

    async def _heartbeat(self) -> None:
        """Renew the leases of in-flight deliveries, so a slow receiver (up to 30 s) keeps its claim."""
        interval = self.settings.lease / 3
        while True:
            await asyncio.sleep(interval)
            ids = list(self._inflight)
            if not ids:
                continue
            until = now_us() + int(self.settings.lease * 1_000_000)
            marks = ", ".join(f"${n}" for n in range(3, len(ids) + 3))

            async def renew(tx: Tx, ids: list[str] = ids, until: int = until, marks: str = marks) -> None:
                await tx.execute(
                    f"UPDATE webhook_deliveries SET locked_until = $1 WHERE locked_by = $2 AND id IN ({marks})",
                    until,
                    self.worker,
                    *ids,
                )

            try:
                await self.db.write(renew)
            except Exception:
                logger.exception("renewing webhook delivery leases failed")

    async def _claim_and_start(self, limit: int) -> int:
        now = now_us()

        async def due(tx: Tx) -> bool:
            row = await tx.fetchrow(
                "SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1"
                " AND (locked_until IS NULL OR locked_until < $1) LIMIT 1",
                now,
            )
            return row is not None

        # A read first: on SQLite an empty claim would still take the database's write lock every poll.
        if not await self.db.read(due):
            return 0
        until = now + int(self.settings.lease * 1_000_000)

        async def claim(tx: Tx) -> list[Row]:
            skip = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
            return await tx.fetch(
                "UPDATE webhook_deliveries SET locked_until = $1, locked_by = $2"
                " WHERE id IN (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3"
                f" AND (locked_until IS NULL OR locked_until < $3) ORDER BY next_attempt_at LIMIT $4{skip})"
                " RETURNING id, endpoint_id, event_id, failures",
                until,
                self.worker,
                now,
                limit,
            )

        rows = await self.db.write(claim)
        for row in rows:
            claimed = _Claim(row["id"], row["endpoint_id"], row["event_id"], int(row["failures"]))
            task = asyncio.create_task(self._deliver(claimed))
            self._inflight[claimed.id] = task
        return len(rows)

    async def _deliver(self, claimed: _Claim) -> None:
        try:
            await self._attempt(claimed)
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease runs out and the delivery is tried again
            logger.exception("webhook delivery %s failed unexpectedly", claimed.id)
        finally:
            self._inflight.pop(claimed.id, None)
            self._wake.set()

    async def _attempt(self, claimed: _Claim) -> None:
        async def load(tx: Tx) -> tuple[Endpoint | None, Row | None]:
            endpoint = await repository.get_endpoint(tx, None, None, claimed.endpoint_id)
            event = await tx.fetchrow(f"SELECT {log.COLUMNS} FROM events WHERE id = $1", claimed.event_id)
            return endpoint, event

        endpoint, event = await self.db.read(load)
        if endpoint is None or not endpoint.enabled or event is None:
            reason = "event not found" if event is None else "endpoint disabled or deleted"
            await self.db.write(lambda tx: self._abandon(tx, claimed, reason))
            return
        body = _encode(log.event_out(event))
        started = now_us()
        headers = delivery_headers(endpoint.headers, endpoint.signing_secrets(started), claimed.event_id, body)
        assert self._client is not None
        result = await send(
            self._client, endpoint.url, body, headers, policy=self.policy, timeout=self.settings.timeout
        )
        await self.db.write(lambda tx: self._record(tx, claimed, started, result))

    async def _abandon(self, tx: Tx, claimed: _Claim, reason: str) -> None:
        now = now_us()
        await tx.execute(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, locked_until = NULL,"
            " locked_by = NULL, last_error = $3, completed_at = $4, updated_at = $4 WHERE id = $1 AND locked_by = $2",
            claimed.id,
            self.worker,
            reason,
            now,
        )

    async def _record(self, tx: Tx, claimed: _Claim, started: int, result: SendResult) -> None:
        now = now_us()
        outcome = judge(result.status_code)
        failures = claimed.failures + int(outcome is not Outcome.SUCCEEDED)
        next_at: int | None = None
        if outcome is Outcome.RETRY:
            delay = retry_delay(failures, self.settings.retry_base)
            if delay is not None:
                # The receiver's own Retry-After (429, 503) wins over the schedule.
                asked = retry_after_seconds(result.retry_after, time.time())
                next_at = now + int((asked if asked is not None else delay) * 1_000_000)
        status = "succeeded" if outcome is Outcome.SUCCEEDED else "pending" if next_at is not None else "failed"
        recorded = "failed" if outcome is Outcome.RETRY and next_at is None else outcome.value
        error = result.error
        if error is None and outcome is not Outcome.SUCCEEDED:
            error = f"HTTP {result.status_code}"
        number = await tx.fetchval(
            "UPDATE webhook_deliveries SET status = $3, failures = $4, next_attempt_at = $5, attempt_count ="
            " attempt_count + 1, locked_until = NULL, locked_by = NULL, last_status_code = $6, last_error = $7,"
            " last_attempt_at = $8, completed_at = $9, updated_at = $10 WHERE id = $1 AND locked_by = $2"
            " RETURNING attempt_count",
            claimed.id,
            self.worker,
            status,
            failures,
            next_at,
            result.status_code,
            error,
            started,
            None if status == "pending" else now,
            now,
        )
        if number is None:  # the lease was lost (this worker stalled): record the attempt, leave the state
            number = await tx.fetchval(
                "UPDATE webhook_deliveries SET attempt_count = attempt_count + 1 WHERE id = $1 RETURNING attempt_count",
                claimed.id,
            )
        await tx.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, error,"
            " response_body, outcome, worker) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            claimed.id,
            number,
            started,
            result.status_code,
            result.latency_ms,
            error,
            result.response_body,
            recorded,
            self.worker,
        )
        await self._endpoint_health(tx, claimed.endpoint_id, outcome, final=status == "failed", now=now)

    async def _endpoint_health(self, tx: Tx, endpoint_id: str, outcome: Outcome, *, final: bool, now: int) -> None:
        if outcome is Outcome.SUCCEEDED:
            await tx.execute(
                "UPDATE webhook_endpoints SET failure_streak = 0, failing_since = NULL"
                " WHERE id = $1 AND (failure_streak <> 0 OR failing_since IS NOT NULL)",
                endpoint_id,
            )
            return
        if outcome is Outcome.GONE:
            await repository.disable_endpoint(tx, endpoint_id, "the endpoint answered 410 Gone", now)
            return
        row = await tx.fetchrow(
            "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2),"
            " failure_streak = failure_streak + $3 WHERE id = $1 AND enabled = 1"
            " RETURNING failure_streak, failing_since",
            endpoint_id,
            now,
            int(final),
        )
        if row is not None:
            reason = disable_reason(int(row["failure_streak"]), row["failing_since"], now)
            if reason is not None:
                await repository.disable_endpoint(tx, endpoint_id, reason, now)


@dataclass(frozen=True)
class _Claim:
    id: str
    endpoint_id: str
    event_id: str
    failures: int
