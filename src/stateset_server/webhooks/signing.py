"""Webhook signatures: the `stateset-signature` header, and the verifier receivers call.

The header format is dictated by the verifier the API reference publishes ("Webhook Security &
Verification"): it splits the header on a single space, takes the `t=` element and every `v1=` element,
and compares each `v1` with hex HMAC-SHA256(secret, "{t}.{raw body}"). So we send exactly

    stateset-signature: t=1700000000 v1=<64 hex> [v1=<64 hex>]

with spaces, never commas (a Stripe-style `t=..,v1=..` would make that verifier read `t` as
"1700000000,v1=..." and fail). A second `v1` is sent while an endpoint's secret is being rotated, so a
receiver still holding the old secret keeps verifying. Each delivery attempt is signed afresh with its
own timestamp, so a retry hours later is not rejected as too old.

`webhook-id` / `webhook-timestamp` (Standard Webhooks names) go alongside: the id is the event id and
stays the same across retries, which is what receivers de-duplicate on.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "SignatureError",
    "sign",
    "signature_header",
    "standard_headers",
    "verify",
]

SIGNATURE_HEADER = "stateset-signature"
# The spec's verifier rejects deliveries older than 5 minutes; we use the same window both ways.
DEFAULT_TOLERANCE = 300

# ASCII digits only (str.isdigit would also accept e.g. Arabic-Indic digits, which int() parses but the
# JS parseInt does not). 15 digits is far beyond any plausible Unix time and keeps int() cheap.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class SignatureError(ValueError):
    """The signature header is missing, malformed, outside the time tolerance, or does not match."""


def _hmac_hex(secret: str, signed: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def _check_timestamp(timestamp: int) -> None:
    # bool is an int subclass; f"{True}" would sign the string "True".
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError(f"timestamp must be a non-negative integer of Unix seconds, got {timestamp!r}")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"{timestamp}." + body` keyed with the UTF-8 bytes of `secret`.

    `body` must be the exact bytes sent on the wire: receivers verify the raw body, so anything that
    re-serialises it afterwards (pretty-printing, key re-ordering) breaks every signature.
    """
    _check_timestamp(timestamp)
    return _hmac_hex(secret, f"{timestamp}.".encode("ascii") + body)


def signature_header(secrets: list[str], timestamp: int, body: bytes) -> str:
    """`t=<timestamp> v1=<hex>[ v1=<hex>...]`, one `v1` per secret, in the order given.

    During rotation pass `[new_secret, old_secret]`: receivers accept the delivery if any `v1` matches.
    """
    if not secrets:
        raise ValueError("at least one secret is required to sign a webhook")
    _check_timestamp(timestamp)
    return " ".join([f"t={timestamp}", *(f"v1={sign(secret, timestamp, body)}" for secret in secrets)])


def standard_headers(event_id: str, timestamp: int) -> dict[str, str]:
    """The Standard Webhooks id/timestamp headers; receivers de-duplicate retries on `webhook-id`."""
    _check_timestamp(timestamp)
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp)}


def verify(
    header: str,
    body: bytes,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: int | None = None,
) -> int:
    """Check a `stateset-signature` header against the raw request body; return its timestamp.

    Parses like the published JavaScript verifier (split on a single space, first `t=`, every `v1=`),
    so whatever one accepts the other does, with two deliberate differences: a timestamp more than
    `tolerance` seconds in the future is rejected too (otherwise a captured delivery signed with a
    skewed clock could be replayed for longer), and the timestamp must be plain decimal digits.
    Raises `SignatureError` with the reason otherwise.
    """
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")
    if not secret:
        raise SignatureError("no webhook secret configured: cannot verify the signature")
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")

    elements = header.split(" ")
    t_text = next((element[2:] for element in elements if element.startswith("t=")), None)
    if t_text is None:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: no t= element")
    if not _TIMESTAMP.fullmatch(t_text):
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: t={t_text!r} is not Unix seconds")
    candidates = [element[3:] for element in elements if element.startswith("v1=")]
    if not candidates:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: no v1= signature")

    timestamp = int(t_text)
    current = int(time.time()) if now is None else now
    if current - timestamp > tolerance:
        raise SignatureError(
            f"timestamp too old: signed {current - timestamp} s ago, more than the {tolerance} s tolerance "
            "(a replayed delivery, or this machine's clock is wrong)"
        )
    if timestamp - current > tolerance:
        raise SignatureError(
            f"timestamp too far in the future: {timestamp - current} s ahead, more than the {tolerance} s "
            "tolerance (check this machine's clock)"
        )

    # Sign the t text exactly as received, as the JS verifier does (it only differs from str(timestamp)
    # for leading zeros, which we never send).
    expected = _hmac_hex(secret, t_text.encode("ascii") + b"." + body).encode("ascii")
    # Compare against every candidate without stopping early, each in constant time, so response timing
    # says nothing about which (if any) signature was close.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode("utf-8", "replace"), expected)
    if not matched:
        raise SignatureError(
            "no v1 signature matches: wrong secret, or the body was changed in transit "
            "(verify the raw request bytes, before any JSON parsing)"
        )
    return timestamp
