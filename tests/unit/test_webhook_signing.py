"""Webhook signatures: the documented test vectors, the spec's JavaScript verifier (ported, and run in
Node when available), tolerance, tampering, rotation, and a sign -> verify round trip."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateset_server.webhooks.signing import (
    DEFAULT_TOLERANCE,
    SIGNATURE_HEADER,
    SignatureError,
    sign,
    signature_header,
    standard_headers,
    verify,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhook-signatures.md"


# --- the test vectors, read from the docs so the docs cannot drift from the code -------------------------


@dataclass(frozen=True)
class Vector:
    number: int
    secrets: list[str]
    timestamp: int
    body: bytes
    length: int
    header: str


def _doc_vectors() -> list[Vector]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Test vectors", 1)[1]
    vectors = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].isdigit():
            continue  # header, separator and prose lines
        code = [re.findall(r"`([^`]*)`", cell) for cell in cells]
        vectors.append(
            Vector(
                number=int(cells[0]),
                secrets=code[1],
                timestamp=int(code[2][0]),
                body=code[3][0].encode("utf-8"),
                length=int(cells[4]),
                header=code[5][0],
            )
        )
    return vectors


VECTORS = _doc_vectors()


def test_docs_have_the_required_vectors() -> None:
    assert len(VECTORS) >= 4
    assert [v.number for v in VECTORS] == list(range(1, len(VECTORS) + 1))
    assert any(len(v.secrets) == 2 for v in VECTORS), "a rotation vector (two secrets)"
    assert any(not v.body.isascii() for v in VECTORS), "a non-ASCII UTF-8 body"


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"vector{v.number}")
def test_doc_vector_matches_the_code(vector: Vector) -> None:
    assert len(vector.body) == vector.length  # catches an editor re-normalising the body text
    assert signature_header(vector.secrets, vector.timestamp, vector.body) == vector.header
    for secret in vector.secrets:
        assert verify(vector.header, vector.body, secret, now=vector.timestamp) == vector.timestamp
        assert js_verify(vector.body, vector.header, secret, now=vector.timestamp)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"vector{v.number}")
def test_doc_vector_matches_an_independent_hmac(vector: Vector) -> None:
    # Built from the documented recipe, not from sign(): "<t>." + raw body, keyed with the UTF-8 secret.
    expected = " ".join(
        [f"t={vector.timestamp}"]
        + [
            "v1=" + hmac.new(s.encode(), f"{vector.timestamp}.".encode() + vector.body, hashlib.sha256).hexdigest()
            for s in vector.secrets
        ]
    )
    assert vector.header == expected


# --- an independent port of the API reference's JavaScript verifier ---------------------------------------


class JsError(Exception):
    """Any exception the JavaScript function would throw."""


def _js_parse_int(text: str) -> float:
    match = re.match(r"\s*([+-]?[0-9]+)", text)
    return float(int(match.group(1))) if match else math.nan


def js_verify(payload: bytes, signature: str, secret: str, *, now: int) -> bool:
    """verifyWebhook from stateset-api-reference.md, line for line, including its quirks."""
    elements = signature.split(" ")
    found = next((e for e in elements if e.startswith("t=")), None)
    if found is None:  # elements.find(...) is undefined; .slice(2) throws a TypeError
        raise JsError("TypeError: Cannot read properties of undefined (reading 'slice')")
    timestamp = found[2:]
    signatures = [e[3:] for e in elements if e.startswith("v1=")]
    if now - _js_parse_int(timestamp) > 300:  # NaN compares false, as in JS
        raise JsError("Webhook timestamp too old")
    # `${timestamp}.${payload}` with a Buffer payload decodes it as UTF-8 (invalid bytes -> U+FFFD)
    signed_payload = f"{timestamp}.{payload.decode('utf-8', errors='replace')}"
    expected = hmac.new(secret.encode(), signed_payload.encode(), hashlib.sha256).hexdigest()

    def timing_safe_equal(a: bytes, b: bytes) -> bool:
        if len(a) != len(b):
            raise JsError("RangeError: Input buffers must have the same byte length")
        return a == b

    if not any(timing_safe_equal(sig.encode(), expected.encode()) for sig in signatures):
        raise JsError("Invalid webhook signature")
    return True


def test_js_port_rejects_what_the_js_rejects() -> None:
    body = b'{"id":"evt_1"}'
    header = signature_header(["s"], 1000, body)
    with pytest.raises(JsError, match="too old"):
        js_verify(body, header, "s", now=1301)
    with pytest.raises(JsError, match="Invalid"):
        js_verify(body + b" ", header, "s", now=1000)
    with pytest.raises(JsError, match="TypeError"):
        js_verify(body, header.replace("t=", "x="), "s", now=1000)
    # Stripe's comma format would not work with this verifier: t reads as "1000,v1=...".
    comma = header.replace(" ", ",")
    with pytest.raises(JsError):
        js_verify(body, comma, "s", now=1000)


@given(
    secret=st.text(min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=2**40),
    body=st.text(max_size=200).map(lambda s: s.encode("utf-8")),
)
def test_js_port_accepts_our_headers(secret: str, timestamp: int, body: bytes) -> None:
    assert js_verify(body, signature_header([secret], timestamp, body), secret, now=timestamp)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_javascript_runs_in_node() -> None:
    # The JS block in the docs, executed as is, against a header signed now (it uses the real clock).
    js = re.search(r"```javascript\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert js is not None
    body = '{"id":"evt_9","note":"café ☕"}'.encode()
    now = int(time.time())
    cases = {
        "fresh": (signature_header(["whsec_a"], now, body), body, "whsec_a"),
        "rotated_old": (signature_header(["whsec_new", "whsec_a"], now, body), body, "whsec_a"),
        "tampered": (signature_header(["whsec_a"], now, body), body + b" ", "whsec_a"),
        "old": (signature_header(["whsec_a"], now - 3600, body), body, "whsec_a"),
        "wrong_secret": (signature_header(["whsec_a"], now, body), body, "whsec_b"),
    }
    payload = {k: [h, base64.b64encode(b).decode(), s] for k, (h, b, s) in cases.items()}
    script = (
        js.group(1)
        + """
const cases = JSON.parse(process.argv[1]);
const out = {};
for (const [name, [header, body, secret]] of Object.entries(cases)) {
  try { out[name] = verifyWebhook(Buffer.from(body, 'base64'), header, secret); }
  catch (e) { out[name] = false; }
}
console.log(JSON.stringify(out));
"""
    )
    result = subprocess.run(
        ["node", "-e", script, json.dumps(payload)], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == {
        "fresh": True,
        "rotated_old": True,
        "tampered": False,
        "old": False,
        "wrong_secret": False,
    }


# --- our verifier ------------------------------------------------------------------------------------------

BODY = b'{"id":"evt_1","type":"order.created"}'
T = 1_700_000_000


def test_header_format() -> None:
    header = signature_header(["a", "b"], T, BODY)
    assert re.fullmatch(r"t=1700000000 v1=[0-9a-f]{64} v1=[0-9a-f]{64}", header)
    assert header.split(" ")[1] == f"v1={sign('a', T, BODY)}"  # new secret first
    assert header.split(" ")[2] == f"v1={sign('b', T, BODY)}"
    assert SIGNATURE_HEADER == "stateset-signature"


def test_standard_headers() -> None:
    assert standard_headers("evt_123", T) == {"webhook-id": "evt_123", "webhook-timestamp": "1700000000"}


def test_tolerance_too_old_and_future() -> None:
    header = signature_header(["s"], T, BODY)
    assert verify(header, BODY, "s", now=T + DEFAULT_TOLERANCE) == T  # the boundary is allowed, as in JS
    with pytest.raises(SignatureError, match="too old"):
        verify(header, BODY, "s", now=T + DEFAULT_TOLERANCE + 1)
    assert verify(header, BODY, "s", now=T - DEFAULT_TOLERANCE) == T
    with pytest.raises(SignatureError, match="future"):
        verify(header, BODY, "s", now=T - DEFAULT_TOLERANCE - 1)
    with pytest.raises(SignatureError, match="too old"):
        verify(header, BODY, "s", now=T + 11, tolerance=10)


def test_real_clock_is_the_default() -> None:
    now = int(time.time())
    assert verify(signature_header(["s"], now, BODY), BODY, "s") == now
    with pytest.raises(SignatureError, match="too old"):
        verify(signature_header(["s"], now - 3600, BODY), BODY, "s")


def test_tampering_is_rejected() -> None:
    header = signature_header(["s"], T, BODY)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(header, BODY.replace(b"created", b"deleted"), "s", now=T)
    # Moving the timestamp (to dodge the tolerance) invalidates the signature.
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(header.replace(f"t={T}", f"t={T + 100}"), BODY, "s", now=T + 100)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(header, BODY, "other", now=T)
    flipped = header[:-1] + ("0" if header[-1] != "0" else "1")
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(flipped, BODY, "s", now=T)
    with pytest.raises(SignatureError, match="no v1 signature matches"):
        verify(header.upper().replace("T=", "t=").replace("V1=", "v1="), BODY, "s", now=T)  # hex is lowercase


def test_rotation_accepts_either_secret() -> None:
    header = signature_header(["new", "old"], T, BODY)
    assert verify(header, BODY, "new", now=T) == T
    assert verify(header, BODY, "old", now=T) == T
    with pytest.raises(SignatureError):
        verify(header, BODY, "neither", now=T)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "missing"),
        ("v1=" + "0" * 64, "no t= element"),
        ("t=abc v1=" + "0" * 64, "not Unix seconds"),
        ("t= v1=" + "0" * 64, "not Unix seconds"),
        ("t=-5 v1=" + "0" * 64, "not Unix seconds"),
        ("t=١٧٠٠ v1=" + "0" * 64, "not Unix seconds"),  # non-ASCII digits int() would accept
        (f"t={T}", "no v1= signature"),
        (f"t={T},v1=" + "0" * 64, "not Unix seconds"),  # Stripe's comma format
        (f"t={T} v0=" + "0" * 64, "no v1= signature"),
    ],
)
def test_malformed_headers(header: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify(header, BODY, "s", now=T)


def test_parses_like_the_js() -> None:
    good = signature_header(["s"], T, BODY)
    t_part, v_part = good.split(" ")
    # Order does not matter, unknown elements and doubled spaces are ignored, the first t= wins.
    for header in (f"{v_part} {t_part}", f"{t_part}  {v_part}", f"{t_part} v2=abc {v_part}", f"{good} t=1"):
        assert verify(header, BODY, "s", now=T) == T
        assert js_verify(BODY, header, "s", now=T)
    # A wrong-length or non-ASCII candidate does not crash the comparison (the JS would throw).
    assert verify(f"{t_part} v1=short v1=é {v_part}", BODY, "s", now=T) == T


def test_bad_arguments() -> None:
    with pytest.raises(SignatureError, match="no webhook secret"):
        verify(signature_header(["s"], T, BODY), BODY, "", now=T)
    with pytest.raises(ValueError, match="at least one secret"):
        signature_header([], T, BODY)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="non-negative integer"):
            sign("s", bad, BODY)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        verify(signature_header(["s"], T, BODY), BODY, "s", now=T, tolerance=-1)
    assert issubclass(SignatureError, ValueError)


@given(
    secrets=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3),
    timestamp=st.integers(min_value=0, max_value=2**40),
    body=st.binary(max_size=500),
    skew=st.integers(min_value=-DEFAULT_TOLERANCE, max_value=DEFAULT_TOLERANCE),
)
def test_round_trip(secrets: list[str], timestamp: int, body: bytes, skew: int) -> None:
    header = signature_header(secrets, timestamp, body)
    for secret in secrets:
        assert verify(header, body, secret, now=timestamp + skew) == timestamp
    with pytest.raises(SignatureError):
        verify(header, body + b"x", secrets[0], now=timestamp)
