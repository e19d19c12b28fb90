"""SSRF guard for webhook endpoint URLs: only public http(s) destinations, unless the operator says so.

A webhook URL is chosen by an API client but fetched by this server, from inside its network. Without
this check a client could point deliveries at the database, an admin port on localhost, or the cloud
metadata service (169.254.169.254), and learn from delivery results what answers there.

What is checked is the set of addresses the host RESOLVES to, not the text of the URL: "2130706433",
"0177.0.0.1" and "127.1" are all 127.0.0.1 to the resolver (and so to the HTTP client), and a DNS name
can point anywhere. Every resolved address must pass, since the client may connect to any of them.

DNS rebinding: a name can resolve to a public address now and to 127.0.0.1 a minute later, so a check
at registration time proves nothing about a later delivery. The dispatcher MUST call `check_url` (or
`resolve_url`) again before EVERY delivery attempt, and should also run `check_address` on the peer
address of the connection it actually made (or connect to an address `resolve_url` returned), which
closes the gap between our lookup and the client's own.

Operators running receivers on a private network opt out with STATESET_WEBHOOK_ALLOW_PRIVATE=true, or
allow just some networks with STATESET_WEBHOOK_ALLOWED_NETWORKS=10.1.0.0/16,fd12::/48.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from stateset_server.core.errors import ApiError
from stateset_server.settings import flag

__all__ = [
    "MAX_URL_LENGTH",
    "RESOLVE_TIMEOUT",
    "UrlPolicy",
    "check_address",
    "check_url",
    "resolve_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2_048
# A resolver that hangs must not hang an API request (or a delivery worker) with it.
RESOLVE_TIMEOUT = 5.0
_EXPECTED = "a public http(s) URL"

# AWS/GCP/Azure/OpenStack metadata (IPv4) and the AWS Nitro IPv6 endpoint. They hand out credentials,
# so they stay refused even with allow_private; only an explicit allowed_networks entry admits them.
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this host on this network": Linux connects it locally
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; not is_private in the stdlib
# IPv6 forms that carry an IPv4 address the packet really goes to: checked as that IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class UrlPolicy:
    """What destinations webhook URLs may have. The default refuses everything non-public."""

    allow_private: bool = False
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UrlPolicy:
        """Read STATESET_WEBHOOK_ALLOW_PRIVATE and STATESET_WEBHOOK_ALLOWED_NETWORKS.

        Raises ValueError on a value it cannot read, so a typo stops the server at start-up rather than
        silently leaving the guard stricter or looser than intended.
        """
        env = os.environ if environ is None else environ
        allow_private = bool(flag("STATESET_WEBHOOK_ALLOW_PRIVATE", env.get("STATESET_WEBHOOK_ALLOW_PRIVATE")))

        networks: list[IPNetwork] = []
        for item in (env.get("STATESET_WEBHOOK_ALLOWED_NETWORKS") or "").split(","):
            cidr = item.strip()
            if not cidr:
                continue  # tolerate "a, b," and an empty variable
            try:
                # strict: "10.0.0.1/8" has host bits set and is more likely a typo than a network.
                networks.append(ipaddress.ip_network(cidr, strict=True))
            except ValueError as exc:
                raise ValueError(f"STATESET_WEBHOOK_ALLOWED_NETWORKS: {cidr!r} is not a CIDR network ({exc})") from None
        return cls(allow_private=allow_private, allowed_networks=tuple(networks))


_STRICT = UrlPolicy()


def _as_address(ip: IPAddress | str) -> IPAddress:
    if isinstance(ip, str):
        # getaddrinfo reports link-local IPv6 with a zone ("fe80::1%eth0"); the zone does not matter here.
        return ipaddress.ip_address(ip.split("%", 1)[0])
    return ip


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1 on a dual-stack socket
        return address.ipv4_mapped
    if address in _NAT64:  # DNS64/NAT64 translates to the embedded IPv4 address
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour  # 2002:AABB:CCDD::/48 routes to AA.BB.CC.DD via 6to4 relays


def _classify(address: IPAddress) -> str | None:
    """Why an address is not public, or None. Ordered most specific first, for a useful message."""
    if address.is_unspecified:
        return "the unspecified address (it reaches this machine)"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address):
        if address in _THIS_NETWORK:
            return "in 0.0.0.0/8 (this network)"
        if address in _SHARED:
            return "a shared (carrier-grade NAT, 100.64.0.0/10) address"
    elif address.is_site_local:  # deprecated fec0::/10, which the stdlib calls global
        return "a site-local address"
    if address.is_reserved:  # before is_private, which also covers 240.0.0.0/4 in the stdlib
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:  # documentation, benchmarking, protocol-assignment ranges and the like
        return "not a globally routable address"
    return None


def check_address(ip: IPAddress | str, policy: UrlPolicy | None = None) -> str | None:
    """The reason webhooks may not be delivered to `ip` under `policy` (default: strict), or None.

    Also what the dispatcher runs on the peer address of each delivery connection (DNS rebinding).
    """
    address = _as_address(ip)
    policy = policy or _STRICT
    if any(address in network for network in policy.allowed_networks):
        return None
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = check_address(embedded, policy)
        return None if reason is None else f"{reason} ({address} is {embedded} in IPv6 form)"
    if address in _METADATA:
        return "the cloud metadata address"
    reason = _classify(address)
    if reason is None or policy.allow_private:
        return None
    return reason


def _refuse(field: str, issue: str, received: str) -> ApiError:
    return ApiError.field(field, issue, expected=_EXPECTED, received=received)


def _redacted(parts: SplitResult) -> str:
    # Do not echo a password back into error bodies (and from there into logs).
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"***@{host}").geturl()


def _parse(url: str, field: str) -> tuple[str, int]:
    """Syntax checks; returns (host, port) to resolve."""
    if not isinstance(url, str):
        raise _refuse(field, "must be a string", repr(url))
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(field, f"is longer than {MAX_URL_LENGTH:,} characters", url[:100] + "…")
    # Whitespace, control characters and backslashes are where URL parsers disagree with each other
    # (urlsplit silently drops tabs and newlines; browsers read "\" as "/"), so a URL that looks
    # public to this check could reach another host through the HTTP client. Refuse them outright.
    if any(ch <= " " or ch == "\x7f" or ch == "\\" for ch in url):
        raise _refuse(field, "contains whitespace, control characters or a backslash", url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(field, f"is not a valid URL ({exc})", url) from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise _refuse(field, "scheme must be http or https", url)
    if "@" in parts.netloc:
        raise _refuse(field, "must not contain credentials (user:pass@); use the signing secret", _redacted(parts))
    host = parts.hostname
    if not host:
        raise _refuse(field, "a host is required", url)
    if port == 0:
        raise _refuse(field, "port 0 is not a valid port", url)
    return host, port or (443 if parts.scheme.lower() == "https" else 80)


async def resolve_url(url: str, policy: UrlPolicy, *, field: str = "url") -> list[IPAddress]:
    """Check `url` as `check_url` does and return the addresses it resolved to, all of them allowed.

    A dispatcher can connect to one of these addresses directly (sending the original Host header and
    TLS server name), so the address it uses is exactly the one that was checked.
    """
    host, port = _parse(url, field)
    loop = asyncio.get_running_loop()
    try:
        # Resolve IP literals too: the resolver is what turns "2130706433" or "0x7f.1" into 127.0.0.1,
        # exactly as it will for the HTTP client when it connects.
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise _refuse(field, f"host does not resolve (no answer within {RESOLVE_TIMEOUT:g} s)", url) from None
    except (OSError, UnicodeError):  # socket.gaierror is an OSError; UnicodeError from IDNA encoding
        raise _refuse(field, "host does not resolve", url) from None

    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        address = _as_address(str(sockaddr[0]))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _refuse(field, "host does not resolve", url)
    for address in addresses:
        reason = check_address(address, policy)
        if reason is not None:
            raise _refuse(field, f"host resolves to {address}, {reason}", url)
    return addresses


async def check_url(url: str, policy: UrlPolicy, *, field: str = "url") -> None:
    """Raise ApiError (422 INVALID_FIELD_FORMAT on `field`) unless `url` is an allowed webhook target.

    Only http and https, a host, no userinfo, at most 2,048 characters, and every address the host
    resolves to public (or allowed by `policy`). Not a one-time check: call it again before every
    delivery, because what a name resolves to can change (DNS rebinding).
    """
    await resolve_url(url, policy, field=field)
