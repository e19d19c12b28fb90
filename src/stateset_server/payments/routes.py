"""Sandbox faucet and wallet balances: `POST /v1/sandbox/faucet`, `GET /v1/wallets/{address}`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.clock import now_us
from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, json_response, read_json, rendered
from stateset_server.core.money import MICRO, format_amount, parse_amount
from stateset_server.payments import ledger
from stateset_server.payments.addresses import InvalidAddress, normalize_wallet_address
from stateset_server.payments.service import fund_wallet
from stateset_server.storage import Tx
from stateset_server.workspaces.keys import Principal

__all__ = ["ROUTES"]

MAX_FAUCET = 1_000_000 * MICRO


class FaucetIn(msgspec.Struct, forbid_unknown_fields=True):
    wallet_address: Annotated[str, Meta(max_length=128)]
    amount: Decimal


class WalletOut(msgspec.Struct):
    address: str
    balance: str
    currency: str = "USDC"
    livemode: bool = False
    object: str = "wallet"


class FaucetOut(msgspec.Struct):
    address: str
    amount: str
    balance: str
    transaction_hash: str
    currency: str = "USDC"
    object: str = "faucet_transfer"


def _address(text: str, field: str) -> str:
    try:
        return normalize_wallet_address(text)
    except InvalidAddress as exc:
        raise ApiError.field(
            field, str(exc), expected="a stateset1… bech32 address or a 0x… EVM address", received=text
        ) from None


async def faucet(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    if principal.livemode:
        raise ApiError(
            "INSUFFICIENT_PERMISSIONS", "The sandbox faucet only works with test-mode keys.", {"mode": "live"}
        )
    body = await read_json(request, FaucetIn)
    address = _address(body.wallet_address, "wallet_address")
    amount = parse_amount(body.amount, "USDC", "amount")
    if not 0 < amount <= MAX_FAUCET:
        raise ApiError.field(
            "amount", "out of range", expected="above 0 and at most 1000000.00", received=str(body.amount)
        )

    async def write(tx: Tx) -> FaucetOut:
        now = now_us()
        digest = await fund_wallet(tx, principal, address, amount, now)
        balance = await ledger.balance(tx, principal, address)
        return FaucetOut(address, format_amount(amount, "USDC"), format_amount(balance, "USDC"), digest)

    idempotency.bind(_created)
    return rendered(_created, await request.app.state.db.write(write))


def _created(transfer: FaucetOut) -> tuple[int, FaucetOut]:
    return 201, transfer


async def retrieve_wallet(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    address = _address(request.path_params["address"], "address")

    async def read(tx: Tx) -> int:
        return await ledger.balance(tx, principal, address)

    balance = await request.app.state.db.read(read)
    return json_response(WalletOut(address, format_amount(balance, "USDC"), livemode=principal.livemode))


ROUTES = [
    ApiRoute(
        "POST",
        "/v1/sandbox/faucet",
        faucet,
        scope="payments:write",
        summary="Fund a test-mode wallet with sandbox USDC",
        tag="Payments",
        request_body=FaucetIn,
        response=FaucetOut,
        status=201,
        errors=("VALIDATION_ERROR", "INVALID_FIELD_FORMAT"),
    ),
    ApiRoute(
        "GET",
        "/v1/wallets/{address}",
        retrieve_wallet,
        scope="payments:read",
        summary="A wallet's USDC balance on this server's ledger",
        tag="Payments",
        response=WalletOut,
        errors=("INVALID_FIELD_FORMAT",),
    ),
]
