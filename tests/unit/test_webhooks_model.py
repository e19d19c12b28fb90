"""Webhook rules without I/O: patterns, the event type list against the source, headers, the retry
schedule, Retry-After, how answers are judged, and the address-pinned request URL."""

from __future__ import annotations

import ipaddress
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from stateset_server.core.errors import ApiError
from stateset_server.returns.model import ReturnStatus
from stateset_server.webhooks import model
from stateset_server.webhooks.dispatcher import _pinned
from stateset_server.webhooks.model import Outcome

SOURCE = Path(__file__).resolve().parents[2] / "src" / "stateset_server"


def test_every_event_type_the_server_emits_is_known() -> None:
    """Literal event types anywhere in the code (`"order.paid"`, `type="inventory.transfer"`) must be
    subscribable; the f-string families (customer.{kind}, product.{kind}, return.{status}) are listed
    in model.EVENT_TYPES by hand."""
    # As a `type=` argument, appended to a list, or in a list (`["order.fulfilled", "order.processing"]`).
    name = r"""["']((?:order|customer|product|inventory|return|payment)\.[a-z_.]+)["']"""
    single, listed = re.compile(rf"(?:type=|append\(){name}"), re.compile(r"\[([^\[\]]*)\]")
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        if "webhooks" in path.parts:
            continue
        text = path.read_text()
        found |= set(single.findall(text))
        for inside in listed.findall(text):
            found |= set(re.findall(name, inside))
    assert {"order.paid", "order.processing", "inventory.transfer", "inventory.low_stock"} <= found
    # The return family is built from the statuses (returns/service.py).
    found |= {"return.created" if s is ReturnStatus.REQUESTED else f"return.{s.value}" for s in ReturnStatus}
    unknown = found - model.EVENT_TYPES
    assert not unknown, f"emitted but not in webhooks/model.EVENT_TYPES: {sorted(unknown)}"


def test_patterns() -> None:
    assert model.check_patterns(["order.*", " order.paid ", "order.*", "*"]) == ["order.*", "order.paid", "*"]
    assert model.check_patterns(["customer.subscription.*", "payment.*"]) == ["customer.subscription.*", "payment.*"]
    for bad in (["order.exploded"], ["nothing.*"], ["order..*"], [], ["*"] * 101, ["order"]):
        with pytest.raises(ApiError):
            model.check_patterns(bad)
    assert model.matches(["order.*"], "order.created")
    assert not model.matches(["order.*"], "orders.created")
    assert model.matches(["customer.*"], "customer.subscription.created")
    assert model.matches(["*"], "webhook_endpoint.disabled")
    assert model.matches(["return.approved"], "return.approved")
    assert not model.matches(["return.approved"], "return.rejected")


def test_headers_and_secrets() -> None:
    assert model.check_headers({"X-Token": "abc", "Authorization": "Bearer x"}) == {
        "X-Token": "abc",
        "Authorization": "Bearer x",
    }
    assert model.check_headers(None) == {}
    for bad in (
        {f"X-{i}": "v" for i in range(21)},
        {"Stateset-Signature": "forged"},
        {"webhook-id": "evt_1"},
        {"content-type": "text/plain"},
        {"User-Agent": "me"},
        {"Bad Name": "v"},
        {"X-Split": "a\r\nInjected: yes"},
        {"X-Accent": "café"},
        {"X-A": "1", "x-a": "2"},
    ):
        with pytest.raises(ApiError):
            model.check_headers(bad)
    assert model.new_secret().startswith("whsec_") and model.new_secret() != model.new_secret()
    with pytest.raises(ApiError):
        model.check_secret("short")
    with pytest.raises(ApiError):
        model.check_secret("has a space in it, long enough")


def test_url_shape() -> None:
    assert model.check_url_shape(" https://example.com/hook ") == "https://example.com/hook"
    for bad in ("ftp://example.com", "example.com/hook", "https://", "https://example.com:99999/", "http://x/#frag"):
        with pytest.raises(ApiError):
            model.check_url_shape(bad)


def test_retry_schedule_grows_with_jitter_and_ends() -> None:
    rng = random.Random(7)
    delays = [model.retry_delay(n, 5.0, rng) for n in range(1, 11)]
    nominal = [5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 57600]
    for delay, expected in zip(delays, nominal, strict=True):
        assert delay is not None and 0.8 * expected <= delay <= 1.2 * expected
    assert delays == sorted(delays)  # type: ignore[type-var]
    assert model.retry_delay(11, 5.0) is None  # 11 attempts, then failed
    assert model.retry_delay(1, 0.1, rng) < 0.13  # type: ignore[operator]


def test_retry_after() -> None:
    now = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert model.retry_after_seconds("120", now.timestamp()) == 120
    assert model.retry_after_seconds(format_datetime(now + timedelta(seconds=90), usegmt=True), now.timestamp()) == 90
    assert model.retry_after_seconds(format_datetime(now - timedelta(days=1), usegmt=True), now.timestamp()) == 0
    assert model.retry_after_seconds("9999999", now.timestamp()) == 24 * 3600
    assert model.retry_after_seconds(None, 0) is None
    assert model.retry_after_seconds("soon", 0) is None
    assert model.retry_after_seconds("-5", 0) is None


def test_judging_answers() -> None:
    assert model.judge(200) is Outcome.SUCCEEDED and model.judge(204) is Outcome.SUCCEEDED
    for retry in (None, 429, 500, 502, 503, 504):
        assert model.judge(retry) is Outcome.RETRY
    for final in (301, 302, 400, 401, 404, 422):
        assert model.judge(final) is Outcome.FAILED
    assert model.judge(410) is Outcome.GONE


def test_disable_rules() -> None:
    now = 10 * model.FAILING_WINDOW_US
    assert model.disable_reason(19, now - 1, now) is None
    assert "20 consecutive" in (model.disable_reason(20, now, now) or "")
    assert "3 days" in (model.disable_reason(1, now - model.FAILING_WINDOW_US, now) or "")
    assert model.disable_reason(0, None, now) is None


def test_rotation_secrets_order() -> None:
    endpoint = model.Endpoint(
        id="we_1",
        workspace_id="ws_1",
        mode="test",
        url="https://example.com",
        description=None,
        events=["*"],
        secret="whsec_new",
        previous_secret="whsec_old",
        previous_secret_expires_at=100,
        headers={},
        metadata={},
        enabled=True,
        disabled_reason=None,
        disabled_at=None,
        failure_streak=0,
        failing_since=None,
        created_at=0,
        updated_at=0,
    )
    assert endpoint.signing_secrets(99) == ["whsec_new", "whsec_old"]
    assert endpoint.signing_secrets(100) == ["whsec_new"]


def test_requests_go_to_the_checked_address_with_the_original_host() -> None:
    target, host, extensions = _pinned("https://exämple.com:8443/a?b=1", ipaddress.ip_address("93.184.215.14"))
    assert target == "https://93.184.215.14:8443/a?b=1"
    assert host == {"Host": "xn--exmple-cua.com:8443"}
    assert extensions == {"sni_hostname": "xn--exmple-cua.com"}
    target, host, extensions = _pinned("http://example.com/hook", ipaddress.ip_address("2001:db8::1"))
    assert target == "http://[2001:db8::1]/hook" and host == {"Host": "example.com"} and extensions == {}
