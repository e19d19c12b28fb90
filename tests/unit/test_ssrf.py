"""SSRF guard for webhook URLs: every refused address class, URL syntax, and the operator's opt-outs.

IP literals and "localhost" resolve without a network, so these tests need none; names that would need
DNS are either reserved to never resolve (".invalid") or answered by a patched resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from asyncio.base_events import BaseEventLoop
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.core.errors import ApiError
from stateset_server.webhooks import ssrf
from stateset_server.webhooks.ssrf import MAX_URL_LENGTH, UrlPolicy, check_address, check_url, resolve_url

STRICT = UrlPolicy()


def refused(url: str, policy: UrlPolicy = STRICT, field: str = "url") -> ApiError:
    with pytest.raises(ApiError) as info:
        asyncio.run(check_url(url, policy, field=field))
    error = info.value
    assert (error.status, error.code) == (422, "INVALID_FIELD_FORMAT")
    assert error.details["field"] == field
    assert error.details["expected"] == "a public http(s) URL"
    return error


def accepted(url: str, policy: UrlPolicy = STRICT) -> None:
    assert asyncio.run(check_url(url, policy)) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.8.9.10:8080/", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://100.64.0.1/", "shared"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://0.1.2.3/", "0.0.0.0/8"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64 form of 127.0.0.1
        ("http://[2002:a00:1::1]/", "private"),  # 6to4 form of 10.0.0.1
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[fd00::1]/", "private"),
        ("http://[fec0::1]/", "site-local"),
        ("http://240.0.0.1/", "reserved"),
        ("http://255.255.255.255/", "reserved"),
        ("http://192.0.2.10/", "private"),  # documentation range
        ("http://198.18.0.1/", "private"),  # benchmarking range
        # Forms the resolver (and so the HTTP client) normalises to 127.0.0.1.
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://127.1/", "loopback"),
        ("https://localhost/", "loopback"),
        ("https://LOCALHOST:8443/hook", "loopback"),
    ],
)
def test_refused_addresses(url: str, reason: str) -> None:
    error = refused(url)
    assert reason in error.message
    assert "host resolves to" in error.details["issue"]
    assert error.details["received"] == url


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/",
        "https://93.184.216.34:8443/hooks/stateset?x=1#frag",
        "HTTPS://93.184.216.34/",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/",
        "http://[::ffff:93.184.216.34]/",  # the mapped form of a public address is public
        "http://[64:ff9b::5db8:d822]/",  # NAT64 form of 93.184.216.34 (IPv6-only networks with DNS64)
        "http://1572395042/",  # 93.184.216.34 in decimal
    ],
)
def test_public_literals_are_accepted(url: str) -> None:
    accepted(url)


def test_unresolvable_host() -> None:
    error = refused("https://nonexistent.invalid/hook")
    assert error.details["issue"] == "host does not resolve"


@pytest.mark.parametrize(
    ("url", "issue"),
    [
        ("ftp://93.184.216.34/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://93.184.216.34:70/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("93.184.216.34/hook", "scheme"),
        ("//93.184.216.34/hook", "scheme"),
        ("http:///hook", "a host is required"),
        ("https://", "a host is required"),
        ("http://93.184.216.34:99999/", "not a valid URL"),
        ("http://93.184.216.34:http/", "not a valid URL"),
        ("http://93.184.216.34:0/", "port 0"),
        ("http://[::1/", "not a valid URL"),
        ("http://93.184.216.34/a b", "whitespace"),
        ("http://93.184.216.34\t/", "whitespace"),
        ("http://127.0.0.1\n.example.com/", "whitespace"),
        ("http://93.184.216.34\\@127.0.0.1/", "backslash"),
    ],
)
def test_refused_syntax(url: str, issue: str) -> None:
    assert issue in refused(url).details["issue"]


@pytest.mark.parametrize(
    "url",
    [
        "http://user:secret@93.184.216.34/",
        "http://user@93.184.216.34/",
        "http://93.184.216.34@127.0.0.1/",
        "https://:secret@93.184.216.34/",
    ],
)
def test_userinfo_is_refused_without_echoing_it(url: str) -> None:
    error = refused(url)
    assert "credentials" in error.details["issue"]
    assert "secret" not in str(error.details["received"])
    assert error.details["received"].startswith(url.split("://")[0] + "://***@")


def test_length_limit() -> None:
    base = "https://93.184.216.34/"
    accepted(base + "a" * (MAX_URL_LENGTH - len(base)))
    error = refused(base + "a" * (MAX_URL_LENGTH - len(base) + 1))
    assert "2,048" in error.details["issue"]
    assert len(error.details["received"]) < 200  # not the whole oversized value


def test_field_name_is_reported() -> None:
    error = refused("http://127.0.0.1/", field="endpoints[0].url")
    assert error.details["field"] == "endpoints[0].url"
    assert error.message.startswith("Invalid value for 'endpoints[0].url': host resolves to 127.0.0.1")


def test_non_string_is_refused() -> None:
    assert refused(None).details["issue"] == "must be a string"  # type: ignore[arg-type]


# --- the operator's opt-outs -------------------------------------------------------------------------------


def test_allow_private() -> None:
    policy = UrlPolicy(allow_private=True)
    for url in (
        "http://127.0.0.1:9000/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:192.168.1.1]/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
    ):
        accepted(url, policy)
    # Credentials for the cloud account are not "a private network": still refused.
    assert "metadata" in refused("http://169.254.169.254/", policy).message
    assert "metadata" in refused("http://[::ffff:169.254.169.254]/", policy).message
    # allow_private does not relax URL syntax.
    refused("ftp://10.0.0.1/", policy)
    refused("http://u:p@10.0.0.1/", policy)


def test_allowed_networks() -> None:
    policy = UrlPolicy(
        allowed_networks=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd12:3456::/32")),
    )
    accepted("http://10.1.2.3/", policy)
    accepted("http://[::ffff:10.1.2.3]/", policy)
    accepted("http://[fd12:3456::7]/", policy)
    assert "private" in refused("http://192.168.1.1/", policy).message
    assert "loopback" in refused("http://127.0.0.1/", policy).message
    assert "private" in refused("http://[fd00::1]/", policy).message
    # Only an explicit entry admits the metadata address.
    metadata = UrlPolicy(allowed_networks=(ipaddress.ip_network("169.254.169.254/32"),))
    accepted("http://169.254.169.254/", metadata)


def test_policy_from_env() -> None:
    assert UrlPolicy.from_env({}) == UrlPolicy()
    assert UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOW_PRIVATE": "true"}).allow_private
    assert UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOW_PRIVATE": "1"}).allow_private
    assert UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOW_PRIVATE": " TRUE "}).allow_private
    assert not UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOW_PRIVATE": "false"}).allow_private
    assert not UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOW_PRIVATE": "0"}).allow_private
    policy = UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8, fd12::/16,192.168.1.5,"})
    assert policy.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd12::/16"),
        ipaddress.ip_network("192.168.1.5/32"),
    )
    for bad in ("10.0.0.0/33", "not-a-cidr", "10.0.0.1/8", "10.0.0.0/8;192.168.0.0/16"):
        with pytest.raises(ValueError, match="STATESET_WEBHOOK_ALLOWED_NETWORKS"):
            UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOWED_NETWORKS": bad})
    with pytest.raises(ValueError, match="STATESET_WEBHOOK_ALLOW_PRIVATE"):
        UrlPolicy.from_env({"STATESET_WEBHOOK_ALLOW_PRIVATE": "maybe"})


def test_policy_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATESET_WEBHOOK_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("STATESET_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8")
    assert UrlPolicy.from_env() == UrlPolicy(True, (ipaddress.ip_network("10.0.0.0/8"),))


# --- names, through a patched resolver ----------------------------------------------------------------------


def _fake_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    async def getaddrinfo(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "slow.example":
            await asyncio.sleep(10)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(BaseEventLoop, "getaddrinfo", getaddrinfo)


def test_every_resolved_address_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_resolver(
        monkeypatch,
        {
            "hooks.example": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"],
            "mixed.example": ["93.184.216.34", "10.0.0.7"],
            "zoned.example": ["fe80::1%eth0"],
        },
    )
    addresses = asyncio.run(resolve_url("https://hooks.example/x", STRICT))
    assert addresses == [  # de-duplicated, in resolver order: what a dispatcher may pin to
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"),
    ]
    accepted("https://hooks.example/x")
    assert "host resolves to 10.0.0.7, a private address" in refused("https://mixed.example/").message
    assert "link-local" in refused("https://zoned.example/").message


def test_resolver_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_resolver(monkeypatch, {})
    monkeypatch.setattr(ssrf, "RESOLVE_TIMEOUT", 0.05)
    assert "no answer within" in refused("https://slow.example/").details["issue"]


# --- check_address, as the dispatcher uses it on the connected peer -----------------------------------------


def test_check_address() -> None:
    assert check_address("93.184.216.34") is None
    assert check_address(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946")) is None
    assert check_address("127.0.0.1") == "a loopback address"
    assert check_address("fe80::1%eth0") == "a link-local address"
    assert check_address("169.254.169.254") == "the cloud metadata address"
    assert check_address("::ffff:127.0.0.1") == "a loopback address (::ffff:7f00:1 is 127.0.0.1 in IPv6 form)"
    assert check_address("10.0.0.1", UrlPolicy(allow_private=True)) is None
    assert check_address("169.254.169.254", UrlPolicy(allow_private=True)) == "the cloud metadata address"
    with pytest.raises(ValueError):
        check_address("not an ip")


@given(st.integers(min_value=0, max_value=2**32 - 1), st.booleans())
def test_mapped_and_nat64_forms_are_judged_as_their_ipv4(value: int, allow_private: bool) -> None:
    policy = UrlPolicy(allow_private=allow_private)
    ipv4 = ipaddress.IPv4Address(value)
    verdict = check_address(ipv4, policy) is None
    assert (check_address(ipaddress.IPv6Address(0xFFFF_0000_0000 | value), policy) is None) == verdict
    assert (check_address(ipaddress.IPv6Address((0x64FF9B << 96) | value), policy) is None) == verdict


@given(st.ip_addresses())
def test_allow_private_admits_everything_but_metadata(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    reason = check_address(address, UrlPolicy(allow_private=True))
    assert reason is None or "metadata" in reason
    if check_address(address) is None:  # strict never admits what allow_private refuses
        assert reason is None
